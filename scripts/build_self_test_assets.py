"""Build the wasi_nn_ggml role's self-test assets, reproducibly.

    roles/wasi_nn_ggml/files/self_test/wasi_nn_probe.wasm   assembled from wasi_nn_probe.wat (wasmtime's
                                                            wat2wasm, PyPI wasmtime pinned in requirements/)
    roles/wasi_nn_ggml/files/self_test/self-test.gguf       a tiny llama-architecture model: random weights
                                                            from a fixed seed, a byte-level SentencePiece-style
                                                            vocabulary, 2 layers (written with PyPI gguf)

Both are committed as files of the role (the Galaxy artifact carries them); tests/unit/test_self_test_assets.py
rebuilds them and requires identical bytes.

    python scripts/build_self_test_assets.py [--out DIR] [--check]
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from pathlib import Path

import gguf
import numpy as np
import wasmtime

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "roles" / "wasi_nn_ggml" / "files" / "self_test"
PROBE_SOURCE = ASSETS / "wasi_nn_probe.wat"
PROBE = "wasi_nn_probe.wasm"
MODEL = "self-test.gguf"

# The model's shape: big enough to be a real llama graph (grouped heads, RoPE, SwiGLU), small enough to ship.
SEED = 0x5E1F7E57
CONTEXT = 128
EMBEDDING = 64
FEED_FORWARD = 128
HEADS = 4
HEADS_KV = 2
LAYERS = 2
SCALE = 0.08
SPECIALS = (
    ("<unk>", gguf.TokenType.UNKNOWN),
    ("<s>", gguf.TokenType.CONTROL),
    ("</s>", gguf.TokenType.CONTROL),
)
WORDS = ("the", "hello", "say", "to", "edge", "wasm", "self", "test", "model", "probe", "ok")


def probe_wasm(source: Path = PROBE_SOURCE) -> bytes:
    """The probe module's bytes, assembled from its WAT source."""
    return wasmtime.wat2wasm(source.read_text())


def vocabulary() -> tuple[list[str], list[float], list[int]]:
    """Tokens, scores and types: specials, the 256 byte tokens, then a few pieces (scored by rank)."""
    tokens = [name for name, _kind in SPECIALS] + [f"<0x{byte:02X}>" for byte in range(256)]
    kinds = [int(kind) for _name, kind in SPECIALS] + [int(gguf.TokenType.BYTE)] * 256
    pieces = ["\u2581", *(chr(c) for c in range(ord("a"), ord("z") + 1)), *(f"\u2581{w}" for w in WORDS)]
    tokens += pieces
    kinds += [int(gguf.TokenType.NORMAL)] * len(pieces)
    scores = [0.0] * (len(tokens) - len(pieces)) + [-float(rank) for rank in range(len(pieces))]
    return tokens, scores, kinds


class Weights:
    """Uniform weights in [-SCALE, SCALE) from PCG64's raw stream (stable across numpy versions, unlike its
    distribution methods), so the same seed gives the same bytes everywhere."""

    def __init__(self, seed: int) -> None:
        self._bits = np.random.PCG64(seed)

    def matrix(self, rows: int, cols: int) -> np.ndarray:
        raw = self._bits.random_raw(rows * cols) >> np.uint64(40)  # 24 random bits each
        unit = raw.astype(np.float64) / float(1 << 24)
        return ((unit * 2.0 - 1.0) * SCALE).astype(np.float32).reshape(rows, cols)


def tiny_llama(path: Path, name: str = "edgewasm self-test (random weights)", seed: int = SEED) -> None:
    """Write the self-test model, or another of its shape with other random weights (numpy shapes are
    (rows, cols): GGML's ne is the reverse)."""
    tokens, scores, kinds = vocabulary()
    vocab, head_dim = len(tokens), EMBEDDING // HEADS
    kv = head_dim * HEADS_KV
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name(name)
    writer.add_context_length(CONTEXT)
    writer.add_embedding_length(EMBEDDING)
    writer.add_block_count(LAYERS)
    writer.add_feed_forward_length(FEED_FORWARD)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(HEADS_KV)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(head_dim)
    writer.add_vocab_size(vocab)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(kinds)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    weights = Weights(seed)
    ones = np.ones(EMBEDDING, dtype=np.float32)
    writer.add_tensor("token_embd.weight", weights.matrix(vocab, EMBEDDING))
    for layer in range(LAYERS):
        block = f"blk.{layer}"
        writer.add_tensor(f"{block}.attn_norm.weight", ones)
        writer.add_tensor(f"{block}.attn_q.weight", weights.matrix(EMBEDDING, EMBEDDING))
        writer.add_tensor(f"{block}.attn_k.weight", weights.matrix(kv, EMBEDDING))
        writer.add_tensor(f"{block}.attn_v.weight", weights.matrix(kv, EMBEDDING))
        writer.add_tensor(f"{block}.attn_output.weight", weights.matrix(EMBEDDING, EMBEDDING))
        writer.add_tensor(f"{block}.ffn_norm.weight", ones)
        writer.add_tensor(f"{block}.ffn_gate.weight", weights.matrix(FEED_FORWARD, EMBEDDING))
        writer.add_tensor(f"{block}.ffn_down.weight", weights.matrix(EMBEDDING, FEED_FORWARD))
        writer.add_tensor(f"{block}.ffn_up.weight", weights.matrix(FEED_FORWARD, EMBEDDING))
    writer.add_tensor("output_norm.weight", ones)
    writer.add_tensor("output.weight", weights.matrix(vocab, EMBEDDING))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def build(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    (out / PROBE).write_bytes(probe_wasm())
    tiny_llama(out / MODEL)
    return [out / PROBE, out / MODEL]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=ASSETS)
    parser.add_argument("--check", action="store_true", help="rebuild elsewhere and compare with --out")
    args = parser.parse_args()
    if not args.check:
        for path in build(args.out):
            sys.stdout.write(f"{path} {path.stat().st_size} bytes\n")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        differ = [p.name for p in build(Path(tmp)) if not filecmp.cmp(p, args.out / p.name, shallow=False)]
    if differ:
        sys.stderr.write(f"not reproducible from source: {', '.join(differ)} in {args.out}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
