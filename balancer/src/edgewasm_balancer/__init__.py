"""edgewasm-balancer: a weighted, model-aware gateway for OpenAI-compatible LLM backends."""

__version__ = "0.1.0"
