//! STAND-IN WasmEdge for edgewasm.llamaedge's tests (not WasmEdge, never a default): what the `wasmedge` CLI
//! (src/bin/wasmedge-standin.rs) and runwasi's WasmEdge shim (src/bin/containerd-shim-wasmedge-v1.rs) share.
//! wasmtime runs WASI preview 1 commands; `wasi_ephemeral_nn` has the WASI-NN GGML plugin's ABI and messages
//! (the version-specific facts from the release catalog, carried by the stand-in plugin file), and its GGML
//! backend is real llama.cpp (crate llama-cpp-sys-2): a GGUF model is really loaded and generates tokens.
//! Upstream facts it imitates: ../shared/reference/upstream-facts.md.

pub mod engine;
mod ggml;
mod nn;
mod sockets;
