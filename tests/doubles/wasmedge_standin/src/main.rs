//! STAND-IN `wasmedge` CLI (not WasmEdge): runs WASI preview 1 modules with wasmtime, and provides
//! `wasi_ephemeral_nn` with the WASI-NN GGML plugin's ABI and messages, whose backend is real llama.cpp.
//!
//! tests/doubles/wasmedge_tree.py installs it as <prefix>/libexec/edgewasm-standin/wasmedge-standin, which
//! the gcc-built <prefix>/bin/wasmedge (DT_NEEDED libwasmedge.so.0, as upstream's) execs. It imitates what
//! the collection relies on in upstream's CLI (../shared/reference/upstream-facts.md):
//!
//! - it loads <prefix>/lib/libwasmedge.so.0 (whose stand-in carries the WasmEdge version it stands for),
//!   then every plugin in WASMEDGE_PLUGIN_PATH (colon-separated) and <prefix>/plugin with dlopen: a
//!   plugin that cannot be loaded in this process's view (unreadable, or a library it needs missing) is
//!   skipped silently, as upstream skips it, and its symptoms come later;
//! - `--version` prints the version and one line per loaded plugin;
//! - output streams as upstream's: option errors and every logger line (spdlog's pattern) go to STDOUT;
//!   llama.cpp's own loader errors reach stderr only from plugins built before its log callback;
//! - `--nn-preload` exists only with the plugin loaded ("unknown option: nn-preload", exit 1); an import
//!   nothing provides fails instantiation with "unknown import, Code: 0x302";
//! - the tensor-type codes accepted and the stderr routing follow the plugin's version and llama.cpp build,
//!   from the release catalog, carried by the stand-in plugin (symbol edgewasm_standin_wasi_nn_abi);
//! - the preloaded GGUF is loaded and run by llama.cpp: a random-weight model generates arbitrary bytes;
//! - a file `edgewasm-standin-cpu-lacks` beside the plugin stands for a CPU without the instructions the
//!   plugin was built for: the process dies of SIGILL at compute, as upstream's does;
//! - the CLI also provides `wasi:logging` (WasmEdge's VM registers it; runwasi's shim does not).

mod ggml;
mod nn;

use std::ffi::{c_char, c_void, CStr, CString};
use std::io::Write;
use std::path::{Path, PathBuf};

use wasmtime::{Caller, Config, Engine, Linker, Module, Store};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};

const MARKER: &str = "edgewasm stand-in, not WasmEdge";
const NN_PLUGIN: &str = "libwasmedgePluginWasiNN.so";
const CPU_MARKER: &str = "edgewasm-standin-cpu-lacks";
const VERSION_SYMBOL: &str = "edgewasm_standin_version";
const ABI_SYMBOL: &str = "edgewasm_standin_wasi_nn_abi";

pub struct State {
    wasi: WasiP1Ctx,
    nn: Option<nn::Nn>,
}

/// A line of WasmEdge's logger: spdlog's default pattern, on stdout (as upstream's CLI has it).
pub fn log(message: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "[{}] [error] {message}", timestamp());
    let _ = out.flush();
}

fn timestamp() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() as libc::time_t;
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    unsafe { libc::localtime_r(&secs, &mut tm) };
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:03}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        now.subsec_millis()
    )
}

/// The kernel's answer to an instruction the CPU lacks: death by SIGILL, without a core file.
pub fn die_of_sigill() -> ! {
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    unsafe {
        let none = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::setrlimit(libc::RLIMIT_CORE, &none);
        libc::signal(libc::SIGILL, libc::SIG_DFL);
        libc::raise(libc::SIGILL);
    }
    std::process::abort()
}

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

struct Library(*mut c_void);

impl Library {
    fn open(path: &Path, flags: i32) -> Option<Library> {
        let path = CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
        let handle = unsafe { libc::dlopen(path.as_ptr(), flags) };
        (!handle.is_null()).then_some(Library(handle))
    }

    fn has(&self, symbol: &str) -> bool {
        let name = CString::new(symbol).expect("a symbol name");
        !unsafe { libc::dlsym(self.0, name.as_ptr()) }.is_null()
    }

    /// The string a `const char *NAME = "..."` variable of the library points to.
    fn string(&self, symbol: &str) -> Option<String> {
        let name = CString::new(symbol).ok()?;
        let address = unsafe { libc::dlsym(self.0, name.as_ptr()) } as *const *const c_char;
        if address.is_null() || unsafe { *address }.is_null() {
            return None;
        }
        Some(unsafe { CStr::from_ptr(*address) }.to_string_lossy().into_owned())
    }
}

/// <prefix>: this binary is <prefix>/libexec/edgewasm-standin/wasmedge-standin.
fn prefix() -> PathBuf {
    let exe = std::fs::read_link("/proc/self/exe").unwrap_or_else(|_| PathBuf::from("."));
    exe.ancestors().nth(3).map(Path::to_path_buf).unwrap_or_default()
}

struct Plugin {
    path: PathBuf,
    library: Library,
}

/// dlopen each plugin found, after libwasmedge.so.0 (which the real process has loaded already).
fn load_plugins(prefix: &Path) -> Vec<Plugin> {
    let mut dirs: Vec<PathBuf> = std::env::var("WASMEDGE_PLUGIN_PATH")
        .unwrap_or_default()
        .split(':')
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .collect();
    dirs.push(prefix.join("plugin"));
    let mut loaded = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut candidates: Vec<PathBuf> = entries
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.extension().is_some_and(|ext| ext == "so"))
            .collect();
        candidates.sort();
        for path in candidates {
            // Upstream skips a plugin it cannot load (a debug log only): the symptom comes later.
            if let Some(library) = Library::open(&path, libc::RTLD_NOW | libc::RTLD_LOCAL) {
                if library.has("WasmEdge_Plugin_GetDescriptor") {
                    loaded.push(Plugin { path, library });
                }
            }
        }
    }
    loaded
}

fn wasi_logging(linker: &mut Linker<State>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "wasi:logging/logging",
        "log",
        |mut caller: Caller<'_, State>, _level: i32, _ctx: i32, _ctx_len: i32, msg: i32, msg_len: i32| {
            if let Some(wasmtime::Extern::Memory(memory)) = caller.get_export("memory") {
                let start = msg as u32 as usize;
                if let Some(text) = start
                    .checked_add(msg_len as u32 as usize)
                    .and_then(|end| memory.data(&caller).get(start..end))
                {
                    let mut err = std::io::stderr().lock();
                    let _ = err.write_all(text);
                    let _ = err.write_all(b"\n");
                }
            }
        },
    )?;
    Ok(())
}

fn wasi(options: &Options, rest: &[String]) -> wasmtime::Result<WasiP1Ctx> {
    let mut builder = WasiCtxBuilder::new();
    let name = Path::new(&rest[0])
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut args = vec![name];
    args.extend(rest[1..].iter().cloned());
    builder.args(&args).inherit_stdout().inherit_stderr();
    for item in &options.env {
        if let Some((key, value)) = item.split_once('=') {
            builder.env(key, value);
        }
    }
    for mapping in &options.dir {
        let (guest, host) = mapping.split_once(':').unwrap_or((mapping.as_str(), ""));
        let host = if host.is_empty() { guest } else { host };
        builder.preopened_dir(host, guest, FsPerms::ReadWrite)?;
    }
    Ok(builder.build_p1())
}

fn run(options: &Options, rest: &[String], plugins: &[Plugin]) -> wasmtime::Result<i32> {
    let plugin = plugins
        .iter()
        .find(|p| p.path.file_name().is_some_and(|n| n == NN_PLUGIN));
    if !options.nn_preload.is_empty() && plugin.is_none() {
        println!("unknown option: nn-preload");
        return Ok(1);
    }
    if rest.is_empty() {
        println!("wasmedge: a WASM file is required");
        return Ok(1);
    }
    let nn = match plugin {
        None => None,
        Some(plugin) => {
            let text = plugin.library.string(ABI_SYMBOL).ok_or_else(|| {
                wasmtime::format_err!(
                    "{}: no {ABI_SYMBOL}: rebuild it with tests/doubles/wasmedge_tree.py",
                    plugin.path.display()
                )
            })?;
            let abi = nn::Abi::from_json(&text)
                .map_err(|err| wasmtime::format_err!("{}: {ABI_SYMBOL}: {err}", plugin.path.display()))?;
            let cpu_lacks = plugin
                .path
                .parent()
                .is_some_and(|dir| dir.join(CPU_MARKER).exists());
            Some(nn::Nn::new(abi, nn::preloads(&options.nn_preload), cpu_lacks))
        }
    };
    let engine = Engine::new(Config::new().cranelift_opt_level(wasmtime::OptLevel::Speed))?;
    let with_nn = nn.is_some();
    let mut store = Store::new(
        &engine,
        State {
            wasi: wasi(options, rest)?,
            nn,
        },
    );
    let mut linker: Linker<State> = Linker::new(&engine);
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |state: &mut State| &mut state.wasi)?;
    wasi_logging(&mut linker)?;
    if with_nn {
        nn::define(&mut linker)?;
    }
    let module = match Module::from_file(&engine, &rest[0]) {
        Ok(module) => module,
        Err(err) => {
            log(&format!("loading failed: {err:#}"));
            return Ok(1);
        }
    };
    for import in module.imports() {
        if linker.get_by_import(&mut store, &import).is_none() {
            log("instantiation failed: unknown import, Code: 0x302");
            log(&format!(
                "    When linking module: \"{}\" , function name: \"{}\"",
                import.module(),
                import.name()
            ));
            return Ok(1);
        }
    }
    let instance = match linker.instantiate(&mut store, &module) {
        Ok(instance) => instance,
        Err(err) => {
            log(&format!("instantiation failed: {err:#}"));
            return Ok(1);
        }
    };
    let Ok(start) = instance.get_typed_func::<(), ()>(&mut store, "_start") else {
        log("execution failed: no _start function");
        return Ok(1);
    };
    match start.call(&mut store, ()) {
        Ok(()) => Ok(0),
        Err(err) => match err.downcast_ref::<I32Exit>() {
            Some(exit) => Ok(exit.0),
            None => {
                log(&format!("execution failed: {err:#}"));
                Ok(1)
            }
        },
    }
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
            let Some(core) = Library::open(&lib.join("libwasmedge.so.0"), libc::RTLD_NOW | libc::RTLD_GLOBAL)
            else {
                eprintln!(
                    "wasmedge (stand-in): cannot load {}",
                    lib.join("libwasmedge.so.0").display()
                );
                std::process::exit(127);
            };
            let version = core.string(VERSION_SYMBOL).unwrap_or_else(|| "unknown".into());
            let plugins = load_plugins(&prefix);
            if options.version {
                println!("wasmedge version {version} ({MARKER})");
                for plugin in plugins
                    .iter()
                    .filter(|p| p.path.file_name().is_some_and(|n| n == NN_PLUGIN))
                {
                    println!("{} (plugin \"wasi_nn\") version 0.10.1.0", plugin.path.display());
                }
                0
            } else {
                match run(&options, &rest, &plugins) {
                    Ok(code) => code,
                    Err(err) => {
                        eprintln!("wasmedge (stand-in): {err:#}");
                        127
                    }
                }
            }
        }
    };
    let _ = std::io::stdout().flush();
    std::process::exit(code);
}
