//! What the stand-in `wasmedge` CLI and the stand-in runwasi shim share, as WasmEdge is shared by the real
//! ones: loading plugins, the WASI-NN plugin's ABI, and running a WASI preview 1 command with wasmtime.

use std::ffi::{c_char, c_void, CStr, CString};
use std::io::Write;
use std::path::{Path, PathBuf};

use wasmtime::{Caller, Config, Engine, Linker, Module, Store};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};

use crate::{nn, sockets};

pub const MARKER: &str = "edgewasm stand-in, not WasmEdge";
pub const NN_PLUGIN: &str = "libwasmedgePluginWasiNN.so";
const CPU_MARKER: &str = "edgewasm-standin-cpu-lacks";
const ABI_SYMBOL: &str = "edgewasm_standin_wasi_nn_abi";

pub struct State {
    wasi: WasiP1Ctx,
    pub(crate) nn: Option<nn::Nn>,
    pub(crate) sockets: sockets::Sockets,
}

/// A line of WasmEdge's logger: spdlog's default pattern, on stdout (as upstream has it).
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

/// A shared library loaded with dlopen (never closed: plugins stay loaded for the process's life).
pub struct Library(*mut c_void);

// Only read after loading (dlsym is thread-safe).
unsafe impl Send for Library {}
unsafe impl Sync for Library {}

impl Library {
    pub fn open(path: &Path, flags: i32) -> Option<Library> {
        let path = CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
        let handle = unsafe { libc::dlopen(path.as_ptr(), flags) };
        (!handle.is_null()).then_some(Library(handle))
    }

    fn has(&self, symbol: &str) -> bool {
        let name = CString::new(symbol).expect("a symbol name");
        !unsafe { libc::dlsym(self.0, name.as_ptr()) }.is_null()
    }

    /// The string a `const char *NAME = "..."` variable of the library points to.
    pub fn string(&self, symbol: &str) -> Option<String> {
        let name = CString::new(symbol).ok()?;
        let address = unsafe { libc::dlsym(self.0, name.as_ptr()) } as *const *const c_char;
        if address.is_null() || unsafe { *address }.is_null() {
            return None;
        }
        Some(unsafe { CStr::from_ptr(*address) }.to_string_lossy().into_owned())
    }
}

pub struct Plugin {
    pub path: PathBuf,
    library: Library,
}

/// The directories of WASMEDGE_PLUGIN_PATH (colon-separated, empty entries skipped).
pub fn plugin_path_dirs() -> Vec<PathBuf> {
    std::env::var("WASMEDGE_PLUGIN_PATH")
        .unwrap_or_default()
        .split(':')
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .collect()
}

/// dlopen each plugin in `dirs`: one that cannot be loaded in this process's view (unreadable, or a
/// library it needs missing) is skipped, as upstream skips it (a debug log only); its symptom comes later.
pub fn load_plugins(dirs: &[PathBuf]) -> Vec<Plugin> {
    let mut loaded = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut candidates: Vec<PathBuf> = entries
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.extension().is_some_and(|ext| ext == "so"))
            .collect();
        candidates.sort();
        for path in candidates {
            if let Some(library) = Library::open(&path, libc::RTLD_NOW | libc::RTLD_LOCAL) {
                if library.has("WasmEdge_Plugin_GetDescriptor") {
                    loaded.push(Plugin { path, library });
                }
            }
        }
    }
    loaded
}

/// The WASI-NN plugin among those loaded.
pub fn nn_plugin(plugins: &[Plugin]) -> Option<&Plugin> {
    plugins
        .iter()
        .find(|p| p.path.file_name().is_some_and(|n| n == NN_PLUGIN))
}

/// wasi_ephemeral_nn as the loaded plugin provides it, with `preloads` (alias:BACKEND:TARGET:path values).
pub fn nn_host(plugin: &Plugin, preloads: &[String]) -> wasmtime::Result<nn::Nn> {
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
    Ok(nn::Nn::new(abi, nn::preloads(preloads), cpu_lacks))
}

/// The module to run: a file, or the bytes of an OCI layer.
pub enum Wasm {
    File(PathBuf),
    Bytes(Vec<u8>),
}

/// One WASI command run.
pub struct Run {
    pub wasm: Wasm,
    pub args: Vec<String>,
    pub envs: Vec<(String, String)>,
    /// (host path, guest path)
    pub preopens: Vec<(String, String)>,
    pub nn: Option<nn::Nn>,
    /// Provide `wasi:logging` (the WasmEdge VM of the CLI does; runwasi's shim does not).
    pub wasi_logging: bool,
}

/// How a run ended: the command's exit code, or the stage WasmEdge reports it failed at (logged already).
pub enum Outcome {
    Exit(i32),
    Failed(&'static str),
}

fn wasi_logging(linker: &mut Linker<State>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "wasi:logging/logging",
        "log",
        |mut caller: Caller<'_, State>, _level: i32, _ctx: i32, _ctx_len: i32, msg: i32, msg_len: i32| {
            if let Some(wasmtime::Extern::Memory(memory)) = caller.get_export("memory") {
                let start = msg as u32 as usize;
                let end = start.checked_add(msg_len as u32 as usize);
                if let Some(text) = end.and_then(|end| memory.data(&caller).get(start..end)) {
                    let mut err = std::io::stderr().lock();
                    let _ = err.write_all(text);
                    let _ = err.write_all(b"\n");
                }
            }
        },
    )?;
    Ok(())
}

fn wasi(run: &Run) -> wasmtime::Result<WasiP1Ctx> {
    let mut builder = WasiCtxBuilder::new();
    builder.args(&run.args).inherit_stdout().inherit_stderr();
    for (key, value) in &run.envs {
        builder.env(key, value);
    }
    for (host, guest) in &run.preopens {
        builder.preopened_dir(host, guest, FsPerms::ReadWrite)?;
    }
    Ok(builder.build_p1())
}

/// Compile, link and run `_start`, failing as WasmEdge fails (its log lines on stdout).
pub fn run(run: Run) -> wasmtime::Result<Outcome> {
    let engine = Engine::new(Config::new().cranelift_opt_level(wasmtime::OptLevel::Speed))?;
    let module = match &run.wasm {
        Wasm::File(path) => Module::from_file(&engine, path),
        Wasm::Bytes(bytes) => Module::from_binary(&engine, bytes),
    };
    let module = match module {
        Ok(module) => module,
        Err(err) => {
            log(&format!("loading failed: {err:#}"));
            return Ok(Outcome::Failed("loading failed"));
        }
    };
    let wasi = wasi(&run)?;
    let with_nn = run.nn.is_some();
    let mut store = Store::new(
        &engine,
        State {
            wasi,
            nn: run.nn,
            sockets: sockets::Sockets::default(),
        },
    );
    let mut linker: Linker<State> = Linker::new(&engine);
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |state: &mut State| &mut state.wasi)?;
    // WasmEdge's WASI has its socket extension, in the CLI and in the shim.
    sockets::define(&mut linker, &mut store)?;
    if run.wasi_logging {
        wasi_logging(&mut linker)?;
    }
    if with_nn {
        nn::define(&mut linker)?;
    }
    for import in module.imports() {
        if linker.get_by_import(&mut store, &import).is_none() {
            log("instantiation failed: unknown import, Code: 0x302");
            log(&format!(
                "    When linking module: \"{}\" , function name: \"{}\"",
                import.module(),
                import.name()
            ));
            return Ok(Outcome::Failed("unknown import"));
        }
    }
    let instance = match linker.instantiate(&mut store, &module) {
        Ok(instance) => instance,
        Err(err) => {
            log(&format!("instantiation failed: {err:#}"));
            return Ok(Outcome::Failed("instantiation failed"));
        }
    };
    let Ok(start) = instance.get_typed_func::<(), ()>(&mut store, "_start") else {
        log("execution failed: function not found, Code: 0x605");
        return Ok(Outcome::Failed("function not found"));
    };
    match start.call(&mut store, ()) {
        Ok(()) => Ok(Outcome::Exit(0)),
        Err(err) => match err.downcast_ref::<I32Exit>() {
            Some(exit) => Ok(Outcome::Exit(exit.0)),
            None => {
                log(&format!("execution failed: {err:#}"));
                Ok(Outcome::Failed("execution failed"))
            }
        },
    }
}
