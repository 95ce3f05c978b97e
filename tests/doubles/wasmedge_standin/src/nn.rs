//! `wasi_ephemeral_nn` as the WasmEdge WASI-NN plugin provides it to a guest: the functions a guest of the
//! GGML backend calls, WasmEdge's errno values and tensor-type checks, the preloaded models by alias, and
//! the plugin's messages (on stdout, through the logger). The ABI facts (which tensor type codes are
//! accepted, where llama.cpp's loader errors go) come from the release catalog, carried by the plugin file.

use std::collections::HashMap;
use std::path::PathBuf;

use serde_json::Value;
use wasmtime::{Caller, Extern, Linker};

use crate::engine::{log, State};
use crate::ggml::{self, Model, Options, Session};

// WasmEdge's WASI-NN errno values (plugins/wasi_nn/types.h).
pub const SUCCESS: i32 = 0;
pub const INVALID_ARGUMENT: i32 = 1;
pub const RUNTIME_ERROR: i32 = 5;
pub const TOO_LARGE: i32 = 7;
pub const NOT_FOUND: i32 = 8;
/// The GGML backend's end of a streamed generation (compute_single).
pub const END_OF_SEQUENCE: i32 = 100;
const MODULE: &str = "wasi_ephemeral_nn";
const TARGETS: [&str; 4] = ["CPU", "GPU", "TPU", "AUTO"];
/// Longest generation the stand-in runs, whatever the metadata asks.
const MAX_PREDICT: i32 = 4096;

/// The tensor types the plugin's version/build accepts and where llama.cpp's loader errors go.
pub struct Abi {
    pub accepted: Vec<u32>,
    pub loader_errors_to_stderr: bool,
}

impl Abi {
    /// From the JSON the stand-in plugin carries (release_catalog.wasi_nn_abi of its version and build).
    pub fn from_json(text: &str) -> Result<Abi, String> {
        let value: Value = serde_json::from_str(text).map_err(|err| err.to_string())?;
        let accepted = value["accepted"]
            .as_array()
            .ok_or("no \"accepted\" list")?
            .iter()
            .map(|code| {
                code.as_u64()
                    .map(|c| c as u32)
                    .ok_or("a tensor type code that is not a number")
            })
            .collect::<Result<Vec<u32>, _>>()?;
        let loader_errors_to_stderr = value["llama_log_to_stderr"]
            .as_bool()
            .ok_or("no \"llama_log_to_stderr\" flag")?;
        Ok(Abi {
            accepted,
            loader_errors_to_stderr,
        })
    }
}

struct Context {
    graph: usize,
    prompt: Option<Vec<u8>>,
    options: Options,
    output: Option<Vec<u8>>,
    /// A streamed generation (compute_single) and the bytes of its last token.
    stream: Option<Session>,
    last: Vec<u8>,
}

pub struct Nn {
    abi: Abi,
    preloads: HashMap<String, PathBuf>,
    by_name: HashMap<String, usize>,
    graphs: Vec<Model>,
    contexts: Vec<Context>,
    cpu_lacks: bool,
}

impl Nn {
    pub fn new(abi: Abi, preloads: HashMap<String, PathBuf>, cpu_lacks: bool) -> Nn {
        ggml::init(abi.loader_errors_to_stderr);
        Nn {
            abi,
            preloads,
            by_name: HashMap::new(),
            graphs: Vec::new(),
            contexts: Vec::new(),
            cpu_lacks,
        }
    }

    fn load_by_name(&mut self, name: &str) -> Result<u32, i32> {
        if let Some(graph) = self.by_name.get(name) {
            return Ok(*graph as u32);
        }
        let Some(path) = self.preloads.get(name) else {
            log(&format!(
                "[WASI-NN] GGML backend: load_by_name: model {name} not found"
            ));
            return Err(NOT_FOUND);
        };
        let Some(model) = Model::load(path) else {
            log("[WASI-NN] GGML backend: Error: unable to init model.");
            return Err(INVALID_ARGUMENT);
        };
        self.graphs.push(model);
        self.by_name.insert(name.to_string(), self.graphs.len() - 1);
        Ok((self.graphs.len() - 1) as u32)
    }

    fn init_execution_context(&mut self, graph: u32) -> Result<u32, i32> {
        if graph as usize >= self.graphs.len() {
            return Err(INVALID_ARGUMENT);
        }
        let options = Options {
            n_predict: 8,
            ..Options::default()
        };
        self.contexts.push(Context {
            graph: graph as usize,
            prompt: None,
            options,
            output: None,
            stream: None,
            last: Vec::new(),
        });
        Ok((self.contexts.len() - 1) as u32)
    }

    fn set_input(&mut self, ctx: u32, index: u32, kind: u32, data: Vec<u8>) -> i32 {
        if !self.abi.accepted.contains(&kind) {
            log(&format!("[WASI-NN] Unknown tensor type {kind}."));
            return INVALID_ARGUMENT;
        }
        let Some(context) = self.contexts.get_mut(ctx as usize) else {
            return INVALID_ARGUMENT;
        };
        match index {
            0 => {
                context.prompt = Some(data);
                context.stream = None;
                SUCCESS
            }
            1 => match metadata(&data, &context.options) {
                Some(options) => {
                    context.options = options;
                    SUCCESS
                }
                None => {
                    log("[WASI-NN] GGML backend: Error: Unable to parse the metadata json.");
                    INVALID_ARGUMENT
                }
            },
            _ => INVALID_ARGUMENT,
        }
    }

    fn compute(&mut self, ctx: u32) -> i32 {
        let Some(context) = self.contexts.get_mut(ctx as usize) else {
            return INVALID_ARGUMENT;
        };
        let Some(prompt) = context.prompt.as_ref() else {
            log("[WASI-NN] GGML backend: Error: no prompt set.");
            return INVALID_ARGUMENT;
        };
        if self.cpu_lacks {
            crate::engine::die_of_sigill();
        }
        match self.graphs[context.graph].complete(prompt, &context.options) {
            Ok(output) => {
                context.output = Some(output);
                SUCCESS
            }
            Err(err) => {
                log(&format!("[WASI-NN] GGML backend: Error: {err}"));
                RUNTIME_ERROR
            }
        }
    }

    /// One more token of a streamed generation (started by the first call after set_input).
    fn compute_single(&mut self, ctx: u32) -> i32 {
        let Some(context) = self.contexts.get_mut(ctx as usize) else {
            return INVALID_ARGUMENT;
        };
        if context.stream.is_none() {
            let Some(prompt) = context.prompt.as_ref() else {
                log("[WASI-NN] GGML backend: Error: no prompt set.");
                return INVALID_ARGUMENT;
            };
            if self.cpu_lacks {
                crate::engine::die_of_sigill();
            }
            match Session::start(&self.graphs[context.graph], prompt, &context.options) {
                Ok(session) => context.stream = Some(session),
                Err(err) => {
                    log(&format!("[WASI-NN] GGML backend: Error: {err}"));
                    return RUNTIME_ERROR;
                }
            }
        }
        let session = context.stream.as_mut().expect("started above");
        match session.next() {
            Ok(Some(piece)) => {
                context.last = piece;
                SUCCESS
            }
            Ok(None) => END_OF_SEQUENCE,
            Err(err) => {
                log(&format!("[WASI-NN] GGML backend: Error: {err}"));
                RUNTIME_ERROR
            }
        }
    }

    fn fini_single(&mut self, ctx: u32) -> i32 {
        match self.contexts.get_mut(ctx as usize) {
            Some(context) => {
                context.stream = None;
                context.last.clear();
                SUCCESS
            }
            None => INVALID_ARGUMENT,
        }
    }

    fn output_single(&self, ctx: u32, index: u32) -> Result<&[u8], i32> {
        match self.contexts.get(ctx as usize) {
            Some(context) if index == 0 && context.stream.is_some() => Ok(&context.last),
            _ => Err(INVALID_ARGUMENT),
        }
    }

    fn output(&self, ctx: u32, index: u32) -> Result<&[u8], i32> {
        match self.contexts.get(ctx as usize) {
            Some(Context {
                output: Some(output), ..
            }) if index == 0 => Ok(output),
            _ => Err(INVALID_ARGUMENT),
        }
    }
}

/// The options in the metadata tensor (JSON such as {"n-predict": 8}); None when it is not a JSON object
/// or a known key has the wrong type.
fn metadata(data: &[u8], current: &Options) -> Option<Options> {
    let value: Value = serde_json::from_slice(data).ok()?;
    let object = value.as_object()?;
    let mut options = current.clone();
    for (key, value) in object {
        match key.as_str() {
            "n-predict" => options.n_predict = (value.as_i64()?.clamp(-1, MAX_PREDICT as i64)) as i32,
            "ctx-size" => options.ctx_size = u32::try_from(value.as_u64()?).ok()?.clamp(16, 1 << 16),
            "threads" => options.threads = (value.as_i64()?.clamp(1, 64)) as i32,
            "seed" => options.seed = value.as_u64()? as u32,
            "temp" => options.temp = value.as_f64()? as f32,
            _ => {}
        }
    }
    Some(options)
}

/// `alias:BACKEND:TARGET:path` values of --nn-preload (WasmEdge accepts only the GGML backend here).
pub fn preloads(values: &[String]) -> HashMap<String, PathBuf> {
    let mut models = HashMap::new();
    for value in values {
        let parts: Vec<&str> = value.splitn(4, ':').collect();
        if parts.len() != 4 || parts[1] != "GGML" || !TARGETS.contains(&parts[2].to_uppercase().as_str()) {
            log("[WASI-NN] Preload Model's Backend or Device is Not Support.");
            continue;
        }
        models.insert(parts[0].to_string(), PathBuf::from(parts[3]));
    }
    models
}

fn memory_slice(caller: &mut Caller<'_, State>, ptr: i32, len: u32) -> Option<Vec<u8>> {
    let Some(Extern::Memory(memory)) = caller.get_export("memory") else {
        return None;
    };
    let start = ptr as u32 as usize;
    let end = start.checked_add(len as usize)?;
    memory.data(&caller).get(start..end).map(<[u8]>::to_vec)
}

fn write_bytes(caller: &mut Caller<'_, State>, ptr: i32, bytes: &[u8]) -> bool {
    let Some(Extern::Memory(memory)) = caller.get_export("memory") else {
        return false;
    };
    memory.write(caller, ptr as u32 as usize, bytes).is_ok()
}

fn u32_at(bytes: &[u8], word: usize) -> u32 {
    u32::from_le_bytes(bytes[word * 4..word * 4 + 4].try_into().expect("four bytes"))
}

fn nn<'a>(caller: &'a mut Caller<'_, State>) -> &'a mut Nn {
    caller
        .data_mut()
        .nn
        .as_mut()
        .expect("wasi_ephemeral_nn is only linked with the plugin loaded")
}

fn store_u32(caller: &mut Caller<'_, State>, ptr: i32, result: Result<u32, i32>) -> i32 {
    match result {
        Ok(value) if write_bytes(caller, ptr, &value.to_le_bytes()) => SUCCESS,
        Ok(_) => INVALID_ARGUMENT,
        Err(errno) => errno,
    }
}

/// Define the functions a GGML guest imports (wasmedge-wasi-nn's and the probe's).
pub fn define(linker: &mut Linker<State>) -> wasmtime::Result<()> {
    linker.func_wrap(
        MODULE,
        "load_by_name",
        |mut caller: Caller<'_, State>, name: i32, len: i32, out: i32| {
            let Some(name) = memory_slice(&mut caller, name, len as u32) else {
                return INVALID_ARGUMENT;
            };
            let result = nn(&mut caller).load_by_name(&String::from_utf8_lossy(&name));
            store_u32(&mut caller, out, result)
        },
    )?;
    linker.func_wrap(
        MODULE,
        "init_execution_context",
        |mut caller: Caller<'_, State>, graph: i32, out: i32| {
            let result = nn(&mut caller).init_execution_context(graph as u32);
            store_u32(&mut caller, out, result)
        },
    )?;
    linker.func_wrap(
        MODULE,
        "set_input",
        |mut caller: Caller<'_, State>, ctx: i32, index: i32, tensor: i32| {
            // The tensor: dimensions ptr, dimensions count, type, data ptr, data length (5 x u32).
            let Some(header) = memory_slice(&mut caller, tensor, 20) else {
                log("[WASI-NN] Failed when accessing the Tensor memory.");
                return INVALID_ARGUMENT;
            };
            let Some(data) = memory_slice(&mut caller, u32_at(&header, 3) as i32, u32_at(&header, 4)) else {
                log("[WASI-NN] Failed when accessing the Tensor memory.");
                return INVALID_ARGUMENT;
            };
            nn(&mut caller).set_input(ctx as u32, index as u32, u32_at(&header, 2), data)
        },
    )?;
    linker.func_wrap(MODULE, "compute", |mut caller: Caller<'_, State>, ctx: i32| {
        nn(&mut caller).compute(ctx as u32)
    })?;
    for (name, single) in [("get_output", false), ("get_output_single", true)] {
        linker.func_wrap(
            MODULE,
            name,
            move |mut caller: Caller<'_, State>, ctx: i32, index: i32, buf: i32, size: i32, written: i32| {
                let nn = nn(&mut caller);
                let output = if single {
                    nn.output_single(ctx as u32, index as u32)
                } else {
                    nn.output(ctx as u32, index as u32)
                };
                let output = match output {
                    Ok(output) => output.to_vec(),
                    Err(errno) => return errno,
                };
                if output.len() > size as u32 as usize {
                    return TOO_LARGE;
                }
                if !write_bytes(&mut caller, buf, &output) {
                    return INVALID_ARGUMENT;
                }
                store_u32(&mut caller, written, Ok(output.len() as u32))
            },
        )?;
    }
    linker.func_wrap(
        MODULE,
        "compute_single",
        |mut caller: Caller<'_, State>, ctx: i32| nn(&mut caller).compute_single(ctx as u32),
    )?;
    linker.func_wrap(
        MODULE,
        "fini_single",
        |mut caller: Caller<'_, State>, ctx: i32| nn(&mut caller).fini_single(ctx as u32),
    )?;
    // LlamaEdge passes its options as the config; the stand-in reads them from the metadata tensor only.
    linker.func_wrap(
        MODULE,
        "load_by_name_with_config",
        |mut caller: Caller<'_, State>, name: i32, len: i32, _config: i32, _config_len: i32, out: i32| {
            let Some(name) = memory_slice(&mut caller, name, len as u32) else {
                return INVALID_ARGUMENT;
            };
            let result = nn(&mut caller).load_by_name(&String::from_utf8_lossy(&name));
            store_u32(&mut caller, out, result)
        },
    )?;
    Ok(())
}
