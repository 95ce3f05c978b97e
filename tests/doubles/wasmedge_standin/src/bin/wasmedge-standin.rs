//! STAND-IN `wasmedge` CLI (not WasmEdge).
//!
//! tests/doubles/wasmedge_tree.py installs it as <prefix>/libexec/edgewasm-standin/wasmedge-standin, which
//! the gcc-built <prefix>/bin/wasmedge (DT_NEEDED libwasmedge.so.0, as upstream's) execs. It imitates what
//! the collection relies on in upstream's CLI:
//!
//! - it loads <prefix>/lib/libwasmedge.so.0 (whose stand-in carries the WasmEdge version it stands for),
//!   then every plugin in WASMEDGE_PLUGIN_PATH (colon-separated) and <prefix>/plugin; a plugin dlopen
//!   cannot load is skipped silently, as upstream skips it, and its symptoms come later;
//! - `--version` prints the version and one line per loaded plugin;
//! - output streams as upstream's: option errors and every logger line (spdlog's pattern) go to STDOUT;
//!   llama.cpp's own loader errors reach stderr only from plugins built before its log callback;
//! - `--nn-preload` exists only with the plugin loaded ("unknown option: nn-preload", exit 1); an import
//!   nothing provides fails instantiation with "unknown import, Code: 0x302";
//! - a file `edgewasm-standin-cpu-lacks` beside the plugin stands for a CPU without the instructions the
//!   plugin was built for: the process dies of SIGILL at compute, as upstream's does;
//! - the CLI provides `wasi:logging` (WasmEdge's VM registers it; runwasi's shim does not).

use std::io::Write;
use std::path::{Path, PathBuf};

use edgewasm_wasmedge_standin::engine::{self, Library, Outcome, Run, Wasm};

const VERSION_SYMBOL: &str = "edgewasm_standin_version";

#[derive(Default)]
struct Options {
    version: bool,
    nn_preload: Vec<String>,
    dir: Vec<String>,
    env: Vec<String>,
}

fn parse(argv: &[String]) -> Result<(Options, Vec<String>), String> {
    let mut options = Options::default();
    let mut i = 0;
    while i < argv.len() && argv[i].starts_with('-') {
        let arg = argv[i].as_str();
        match arg {
            "-v" | "--version" => options.version = true,
            "--nn-preload" | "--dir" | "--env" => {
                let value = argv
                    .get(i + 1)
                    .ok_or_else(|| format!("missing value of option: {}", &arg[2..]))?;
                match arg {
                    "--nn-preload" => options.nn_preload.push(value.clone()),
                    "--dir" => options.dir.push(value.clone()),
                    _ => options.env.push(value.clone()),
                }
                i += 1;
            }
            "--" => {
                i += 1;
                break;
            }
            _ => return Err(format!("unknown option: {}", arg.trim_start_matches('-'))),
        }
        i += 1;
    }
    Ok((options, argv[i..].to_vec()))
}

/// <prefix>: this binary is <prefix>/libexec/edgewasm-standin/wasmedge-standin.
fn prefix() -> PathBuf {
    let exe = std::fs::read_link("/proc/self/exe").unwrap_or_else(|_| PathBuf::from("."));
    exe.ancestors().nth(3).map(Path::to_path_buf).unwrap_or_default()
}

fn run(options: &Options, rest: &[String], plugins: &[engine::Plugin]) -> wasmtime::Result<i32> {
    let plugin = engine::nn_plugin(plugins);
    if !options.nn_preload.is_empty() && plugin.is_none() {
        println!("unknown option: nn-preload");
        return Ok(1);
    }
    let Some(wasm) = rest.first() else {
        println!("wasmedge: a WASM file is required");
        return Ok(1);
    };
    let nn = plugin
        .map(|plugin| engine::nn_host(plugin, &options.nn_preload))
        .transpose()?;
    let name = Path::new(wasm)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let envs = options
        .env
        .iter()
        .filter_map(|item| item.split_once('='))
        .map(|(k, v)| (k.into(), v.into()));
    let preopens = options.dir.iter().map(|mapping| {
        let (guest, host) = mapping.split_once(':').unwrap_or((mapping.as_str(), ""));
        (
            (if host.is_empty() { guest } else { host }).to_string(),
            guest.to_string(),
        )
    });
    let outcome = engine::run(Run {
        wasm: Wasm::File(PathBuf::from(wasm)),
        args: std::iter::once(name).chain(rest[1..].iter().cloned()).collect(),
        envs: envs.collect(),
        preopens: preopens.collect(),
        nn,
        wasi_logging: true,
    })?;
    Ok(match outcome {
        Outcome::Exit(code) => code,
        Outcome::Failed(_) => 1,
    })
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let code = match parse(&argv) {
        Err(message) => {
            println!("{message}");
            1
        }
        Ok((options, rest)) => {
            let prefix = prefix();
            let lib = if prefix.join("lib64").is_dir() {
                prefix.join("lib64")
            } else {
                prefix.join("lib")
            };
            let core = lib.join("libwasmedge.so.0");
            let Some(core) = Library::open(&core, libc::RTLD_NOW | libc::RTLD_GLOBAL) else {
                eprintln!("wasmedge (stand-in): cannot load {}", core.display());
                std::process::exit(127);
            };
            let version = core.string(VERSION_SYMBOL).unwrap_or_else(|| "unknown".into());
            let mut dirs = engine::plugin_path_dirs();
            dirs.push(prefix.join("plugin"));
            let plugins = engine::load_plugins(&dirs);
            if options.version {
                println!("wasmedge version {version} ({})", engine::MARKER);
                if let Some(plugin) = engine::nn_plugin(&plugins) {
                    println!("{} (plugin \"wasi_nn\") version 0.10.1.0", plugin.path.display());
                }
                0
            } else {
                run(&options, &rest, &plugins).unwrap_or_else(|err| {
                    eprintln!("wasmedge (stand-in): {err:#}");
                    127
                })
            }
        }
    };
    let _ = std::io::stdout().flush();
    std::process::exit(code);
}
