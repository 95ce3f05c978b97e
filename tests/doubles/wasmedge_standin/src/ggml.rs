//! The GGML backend: real llama.cpp (vendored in the llama-cpp-sys-2 crate) loading the preloaded GGUF and
//! generating tokens, as the WASI-NN GGML plugin does. A random-weight model gives arbitrary bytes.

use std::ffi::{c_char, c_void, CStr, CString};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

use llama_cpp_sys_2 as sys;

/// Whether llama.cpp's own loader errors reach stderr: only plugins built on llama.cpp before its log
/// callback (b3651) print them there (gguf.cpp used fprintf); later ones route them through the callback,
/// which the plugin drops unless its logging is on.
static LOADER_ERRORS_TO_STDERR: AtomicBool = AtomicBool::new(false);
static INIT: Once = Once::new();

unsafe extern "C" fn on_log(_level: sys::ggml_log_level, text: *const c_char, _user: *mut c_void) {
    if text.is_null() || !LOADER_ERRORS_TO_STDERR.load(Ordering::Relaxed) {
        return;
    }
    let line = CStr::from_ptr(text).to_bytes();
    if line.starts_with(b"gguf_") {
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(line);
        let _ = err.flush();
    }
}

/// Start llama.cpp once: its backend, and its logger routed as the plugin's build routes it.
pub fn init(loader_errors_to_stderr: bool) {
    LOADER_ERRORS_TO_STDERR.store(loader_errors_to_stderr, Ordering::Relaxed);
    INIT.call_once(|| unsafe {
        sys::llama_log_set(Some(on_log), std::ptr::null_mut());
        sys::llama_backend_init();
    });
}

/// A loaded model (the plugin's graph).
pub struct Model {
    model: *mut sys::llama_model,
}

// The model is only used from the one thread that runs the wasm.
unsafe impl Send for Model {}

impl Model {
    /// Load a GGUF file; None when llama.cpp refuses it (its own messages went to the logger).
    pub fn load(path: &Path) -> Option<Model> {
        let path = CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
        let model = unsafe {
            let mut params = sys::llama_model_default_params();
            params.n_gpu_layers = 0;
            sys::llama_model_load_from_file(path.as_ptr(), params)
        };
        (!model.is_null()).then_some(Model { model })
    }

    /// Generate up to n_predict tokens after the prompt; the pieces' raw bytes (not always UTF-8).
    pub fn complete(&self, prompt: &[u8], options: &Options) -> Result<Vec<u8>, String> {
        let mut session = Session::start(self, prompt, options)?;
        let mut out = Vec::new();
        while let Some(piece) = session.next()? {
            out.extend_from_slice(&piece);
        }
        Ok(out)
    }
}

impl Drop for Model {
    fn drop(&mut self) {
        unsafe { sys::llama_model_free(self.model) }
    }
}

/// What the plugin reads from the metadata tensor (input 1); upstream's defaults otherwise.
#[derive(Clone, Debug)]
pub struct Options {
    pub n_predict: i32,
    pub ctx_size: u32,
    pub threads: i32,
    pub seed: u32,
    pub temp: f32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            n_predict: -1,
            ctx_size: 4096,
            threads: 2,
            seed: 42,
            temp: 0.8,
        }
    }
}

/// One generation: the prompt decoded, then one token at a time (the plugin's compute_single). The model
/// must outlive it (the plugin never unloads a graph while a context uses it).
pub struct Session {
    model: *mut sys::llama_model,
    ctx: *mut sys::llama_context,
    sampler: *mut sys::llama_sampler,
    /// Tokens still allowed (n_predict, and the room left in the context).
    left: usize,
    /// The last token sampled, decoded before the next one is sampled.
    last: Option<sys::llama_token>,
}

// Used from the one thread that runs the wasm.
unsafe impl Send for Session {}

impl Session {
    pub fn start(model: &Model, prompt: &[u8], options: &Options) -> Result<Session, String> {
        let session = unsafe {
            let mut params = sys::llama_context_default_params();
            params.n_ctx = options.ctx_size;
            params.n_batch = options.ctx_size.min(512);
            params.n_threads = options.threads;
            params.n_threads_batch = options.threads;
            let ctx = sys::llama_init_from_model(model.model, params);
            if ctx.is_null() {
                return Err("unable to create the llama context".into());
            }
            let sampler = sys::llama_sampler_chain_init(sys::llama_sampler_chain_default_params());
            sys::llama_sampler_chain_add(sampler, sys::llama_sampler_init_temp(options.temp));
            sys::llama_sampler_chain_add(sampler, sys::llama_sampler_init_dist(options.seed));
            Session {
                model: model.model,
                ctx,
                sampler,
                left: 0,
                last: None,
            }
        };
        let mut session = session;
        let mut tokens = session.tokenize(prompt)?;
        let n_ctx = unsafe { sys::llama_n_ctx(session.ctx) } as usize;
        if tokens.len() >= n_ctx {
            return Err(format!(
                "the prompt is {} tokens, over the context size {n_ctx}",
                tokens.len()
            ));
        }
        let room = n_ctx - tokens.len();
        session.left = if options.n_predict < 0 {
            room
        } else {
            (options.n_predict as usize).min(room)
        };
        session.decode(&mut tokens)?;
        Ok(session)
    }

    /// The next token's bytes; None at the end of the sequence or of the allowance.
    pub fn next(&mut self) -> Result<Option<Vec<u8>>, String> {
        if let Some(mut token) = self.last.take() {
            self.decode(std::slice::from_mut(&mut token))?;
        }
        if self.left == 0 {
            return Ok(None);
        }
        let vocab = unsafe { sys::llama_model_get_vocab(self.model) };
        let token = unsafe { sys::llama_sampler_sample(self.sampler, self.ctx, -1) };
        if unsafe { sys::llama_vocab_is_eog(vocab, token) } {
            self.left = 0;
            return Ok(None);
        }
        self.left -= 1;
        self.last = Some(token);
        Ok(Some(piece(vocab, token)))
    }

    fn tokenize(&self, prompt: &[u8]) -> Result<Vec<sys::llama_token>, String> {
        let vocab = unsafe { sys::llama_model_get_vocab(self.model) };
        let len = i32::try_from(prompt.len()).map_err(|_| "prompt too long".to_string())?;
        let mut tokens = vec![0; prompt.len() + 8];
        let text = prompt.as_ptr().cast::<c_char>();
        let tokenize = |tokens: &mut Vec<sys::llama_token>| unsafe {
            sys::llama_tokenize(
                vocab,
                text,
                len,
                tokens.as_mut_ptr(),
                tokens.len() as i32,
                true,
                true,
            )
        };
        let mut n = tokenize(&mut tokens);
        if n < 0 {
            tokens.resize((-n) as usize, 0);
            n = tokenize(&mut tokens);
        }
        if n < 0 {
            return Err("unable to tokenize the prompt".into());
        }
        tokens.truncate(n as usize);
        Ok(tokens)
    }

    fn decode(&self, tokens: &mut [sys::llama_token]) -> Result<(), String> {
        let rc = unsafe {
            let batch = sys::llama_batch_get_one(tokens.as_mut_ptr(), tokens.len() as i32);
            sys::llama_decode(self.ctx, batch)
        };
        if rc != 0 {
            return Err(format!("llama_decode failed: {rc}"));
        }
        Ok(())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        unsafe {
            sys::llama_sampler_free(self.sampler);
            sys::llama_free(self.ctx);
        }
    }
}

/// The bytes a token stands for: a byte token <0xNN> is that one raw byte.
fn piece(vocab: *const sys::llama_vocab, token: sys::llama_token) -> Vec<u8> {
    let mut buf = vec![0u8; 64];
    loop {
        let n = unsafe {
            sys::llama_token_to_piece(vocab, token, buf.as_mut_ptr().cast(), buf.len() as i32, 0, false)
        };
        if n >= 0 {
            buf.truncate(n as usize);
            return buf;
        }
        buf.resize((-n) as usize, 0);
    }
}
