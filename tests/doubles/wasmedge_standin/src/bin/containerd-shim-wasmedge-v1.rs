//! STAND-IN runwasi WasmEdge shim, `containerd-shim-wasmedge-v1` (not runwasi's build): runwasi's own shim
//! library (crate containerd-shim-wasm, which runs each container with youki's libcontainer) with the stand-in
//! engine in place of WasmEdge. As runwasi v0.6.0's WasmEdge shim does (../shared/reference/upstream-facts.md):
//!
//! - Linux containers (the pod's pause container) run as runc would run them; a container whose entrypoint
//!   is a `.wasm` file (or an image with wasm layers) runs it inside the container, so the plugin, the
//!   libraries it needs and the model must be visible in the container's filesystem;
//! - the container's `WASMEDGE_*` variables become the shim's own: plugins are loaded from
//!   WASMEDGE_PLUGIN_PATH and the model preloaded from WASMEDGE_WASINN_PRELOAD (one `alias:GGML:TARGET:path`);
//! - the module gets WASI (the container's args and env, `/` preopened) and `wasi_ephemeral_nn`, but not
//!   `wasi:logging`: a stock llama-api-server.wasm fails to instantiate here, as upstream's does;
//! - WasmEdge is linked into upstream's shim, so the plugin's DT_NEEDED libwasmedge.so.0 is already in the
//!   process: this binary's SONAME is libwasmedge.so.0 (build.rs), which satisfies it the same way;
//! - a failure is logged on the container's stdout (WasmEdge's logger) and the start function's error
//!   ("unknown import", ...) is what the shim reports; the container exits 137.

use anyhow::{anyhow, bail, Result};
use containerd_shim_wasm::sandbox::context::RuntimeContext;
use containerd_shim_wasm::sandbox::Sandbox;
use containerd_shim_wasm::shim::{Cli, Config, Shim};
use edgewasm_wasmedge_standin::engine::{self, Outcome, Run, Wasm};

#[derive(Clone)]
struct WasmEdgeShim;

#[derive(Clone, Default)]
struct WasmEdgeSandbox;

impl Shim for WasmEdgeShim {
    type Sandbox = WasmEdgeSandbox;

    fn name() -> &'static str {
        "wasmedge"
    }
}

/// The container's `KEY=value` environment as pairs (a malformed entry is dropped).
fn pairs(envs: &[String]) -> Vec<(String, String)> {
    envs.iter()
        .filter_map(|item| item.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl Sandbox for WasmEdgeSandbox {
    async fn run_wasi(&self, ctx: &impl RuntimeContext) -> Result<i32> {
        let envs = pairs(ctx.envs());
        for (key, value) in envs.iter().filter(|(key, _)| key.starts_with("WASMEDGE_")) {
            std::env::set_var(key, value);
        }
        let plugins = engine::load_plugins(&engine::plugin_path_dirs());
        let preloads: Vec<String> = std::env::var("WASMEDGE_WASINN_PRELOAD").into_iter().collect();
        let nn = match engine::nn_plugin(&plugins) {
            Some(plugin) => Some(engine::nn_host(plugin, &preloads).map_err(|err| anyhow!("{err:#}"))?),
            None => None,
        };
        let wasm = Wasm::Bytes(ctx.entrypoint().source.as_bytes()?.into_owned());
        let run = Run {
            wasm,
            args: ctx.args().to_vec(),
            envs,
            preopens: vec![("/".into(), "/".into())],
            nn,
            wasi_logging: false,
        };
        // The engine is synchronous (and wasmtime-wasi starts its own runtime): a thread of its own.
        let outcome = std::thread::spawn(move || engine::run(run))
            .join()
            .map_err(|_| anyhow!("the engine panicked"))?
            .map_err(|err| anyhow!("{err:#}"))?;
        match outcome {
            Outcome::Exit(code) => Ok(code),
            Outcome::Failed(stage) => bail!("{stage}"),
        }
    }
}

fn main() {
    WasmEdgeShim::run(Config {
        default_log_level: "info".to_string(),
        ..Default::default()
    });
}
