;; edgewasm WASI-NN probe: runs one short completion through the graph WasmEdge preloaded as "default"
;; (wasmedge --nn-preload default:GGML:AUTO:<model>), the way llama-api-server drives the GGML plugin:
;; load_by_name, init_execution_context, set_input 1 (metadata JSON), set_input 0 (the prompt), compute,
;; get_output 0. Prints "edgewasm-wasi-nn-probe: ok: <n> bytes, hex: <the output in hex>" and exits 0: what a
;; model generates is bytes, not text (a random-weight model's tokens are arbitrary bytes, and any model's few
;; tokens can end inside a multi-byte character), so it is printed in a form that is always valid UTF-8; the
;; verdict (plugins/module_utils/wasi_nn_probe.py) shows it as text where it is valid UTF-8.
;; A failed step is named with its WASI-NN errno on stderr, and the probe exits with that step's code:
;;   10 load_by_name  11 init_execution_context  12 set_input (metadata)  13 set_input (prompt)
;;   14 compute       15 get_output
;; A runtime without the plugin cannot even start it: the wasi_ephemeral_nn imports stay unresolved
;; (WasmEdge: "unknown import", code 0x302).
;; Assembled by scripts/build_self_test_assets.py; the role's tests rebuild it and require identical bytes.
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  ;; WasmEdge's wasi_ephemeral_nn ABI (every call returns a WASI-NN errno, 0 = success).
  (import "wasi_ephemeral_nn" "load_by_name" (func $load_by_name (param i32 i32 i32) (result i32)))
  (import "wasi_ephemeral_nn" "init_execution_context" (func $init_execution_context (param i32 i32) (result i32)))
  (import "wasi_ephemeral_nn" "set_input" (func $set_input (param i32 i32 i32) (result i32)))
  (import "wasi_ephemeral_nn" "compute" (func $compute (param i32) (result i32)))
  (import "wasi_ephemeral_nn" "get_output" (func $get_output (param i32 i32 i32 i32 i32) (result i32)))

  ;; Three pages: the output (up to 60 KiB at 0x1000) and its hex form (twice that, from 0x10000).
  (memory (export "memory") 3)

  ;; Scratch words: 0x40 iovec (ptr, len), 0x48 bytes written by fd_write, 0x20 graph handle,
  ;; 0x24 context handle, 0x28 output size, 0x60..0x6f decimal digits, 0x80 tensor, 0x98 its dimensions.
  ;; Tensor layout (20 bytes): dimensions ptr, dimensions count, type (u32), data ptr, data length.
  ;; Type 3 works on every WasmEdge: U8 in the numbering of WasmEdge PR #4069 (0.15.0 on, and the 0.14.1 plugin
  ;; builds from b5074 on, where 2 means F64 and is refused), I32 in the older one; both are accepted, and the
  ;; GGML backend reads the prompt and metadata tensors as bytes whatever their type. LlamaEdge sends 3 too.
  (data (i32.const 0x100) "default\00")
  (data (i32.const 0x110) "Say hello to the edgewasm self-test.\00")
  (data (i32.const 0x140) "{\"n-predict\":8}\00")
  (data (i32.const 0x160) "edgewasm-wasi-nn-probe: \00")
  (data (i32.const 0x180) " failed: wasi-nn errno \00")
  (data (i32.const 0x1a0) "ok: \00")
  (data (i32.const 0x1b0) " bytes, hex: \00")
  (data (i32.const 0x1c0) "\n\00")
  (data (i32.const 0x200) "load_by_name\00")
  (data (i32.const 0x220) "init_execution_context\00")
  (data (i32.const 0x240) "set_input (metadata)\00")
  (data (i32.const 0x260) "set_input (prompt)\00")
  (data (i32.const 0x280) "compute\00")
  (data (i32.const 0x290) "get_output\00")
  (data (i32.const 0x2a0) "0123456789abcdef")

  (global $output i32 (i32.const 0x1000))
  (global $output_max i32 (i32.const 0xf000))
  (global $hex i32 (i32.const 0x10000))

  (func $strlen (param $ptr i32) (result i32)
    (local $end i32)
    (local.set $end (local.get $ptr))
    (block $done
      (loop $next
        (br_if $done (i32.eqz (i32.load8_u (local.get $end))))
        (local.set $end (i32.add (local.get $end) (i32.const 1)))
        (br $next)))
    (i32.sub (local.get $end) (local.get $ptr)))

  (func $write (param $fd i32) (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0x40) (local.get $ptr))
    (i32.store (i32.const 0x44) (local.get $len))
    (drop (call $fd_write (local.get $fd) (i32.const 0x40) (i32.const 1) (i32.const 0x48))))

  (func $puts (param $fd i32) (param $ptr i32)
    (call $write (local.get $fd) (local.get $ptr) (call $strlen (local.get $ptr))))

  (func $put_u32 (param $fd i32) (param $n i32)
    (local $at i32)
    (local.set $at (i32.const 0x70))
    (loop $digit
      (local.set $at (i32.sub (local.get $at) (i32.const 1)))
      (i32.store8 (local.get $at) (i32.add (i32.const 48) (i32.rem_u (local.get $n) (i32.const 10))))
      (local.set $n (i32.div_u (local.get $n) (i32.const 10)))
      (br_if $digit (local.get $n)))
    (call $write (local.get $fd) (local.get $at) (i32.sub (i32.const 0x70) (local.get $at))))

;; Write len bytes at ptr as lowercase hex (two digits a byte).
  (func $put_hex (param $fd i32) (param $ptr i32) (param $len i32)
    (local $i i32)
    (local $byte i32)
    (local $at i32)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
        (local.set $byte (i32.load8_u (i32.add (local.get $ptr) (local.get $i))))
        (local.set $at (i32.add (global.get $hex) (i32.shl (local.get $i) (i32.const 1))))
        (i32.store8 (local.get $at)
          (i32.load8_u (i32.add (i32.const 0x2a0) (i32.shr_u (local.get $byte) (i32.const 4)))))
        (i32.store8 (i32.add (local.get $at) (i32.const 1))
          (i32.load8_u (i32.add (i32.const 0x2a0) (i32.and (local.get $byte) (i32.const 15)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (call $write (local.get $fd) (global.get $hex) (i32.shl (local.get $len) (i32.const 1))))

  ;; Report a failed step on stderr and exit with its code; returns only when errno is 0.
  (func $check (param $errno i32) (param $step i32) (param $code i32)
    (if (local.get $errno)
      (then
        (call $puts (i32.const 2) (i32.const 0x160))
        (call $puts (i32.const 2) (local.get $step))
        (call $puts (i32.const 2) (i32.const 0x180))
        (call $put_u32 (i32.const 2) (local.get $errno))
        (call $puts (i32.const 2) (i32.const 0x1c0))
        (call $proc_exit (local.get $code)))))

  ;; The u8 tensor [1] over a NUL-terminated string, at 0x80.
  (func $text_tensor (param $ptr i32) (result i32)
    (i32.store (i32.const 0x98) (i32.const 1))
    (i32.store (i32.const 0x80) (i32.const 0x98))
    (i32.store (i32.const 0x84) (i32.const 1))
    (i32.store (i32.const 0x88) (i32.const 3))
    (i32.store (i32.const 0x8c) (local.get $ptr))
    (i32.store (i32.const 0x90) (call $strlen (local.get $ptr)))
    (i32.const 0x80))

  (func (export "_start")
    (call $check
      (call $load_by_name (i32.const 0x100) (call $strlen (i32.const 0x100)) (i32.const 0x20))
      (i32.const 0x200) (i32.const 10))
    (call $check
      (call $init_execution_context (i32.load (i32.const 0x20)) (i32.const 0x24))
      (i32.const 0x220) (i32.const 11))
    (call $check
      (call $set_input (i32.load (i32.const 0x24)) (i32.const 1) (call $text_tensor (i32.const 0x140)))
      (i32.const 0x240) (i32.const 12))
    (call $check
      (call $set_input (i32.load (i32.const 0x24)) (i32.const 0) (call $text_tensor (i32.const 0x110)))
      (i32.const 0x260) (i32.const 13))
    (call $check (call $compute (i32.load (i32.const 0x24))) (i32.const 0x280) (i32.const 14))
    (call $check
      (call $get_output (i32.load (i32.const 0x24)) (i32.const 0) (global.get $output) (global.get $output_max)
        (i32.const 0x28))
      (i32.const 0x290) (i32.const 15))
    ;; A size past the buffer (a runtime that misreports it) is cut to the buffer: never read beyond it.
    (if (i32.gt_u (i32.load (i32.const 0x28)) (global.get $output_max))
      (then (i32.store (i32.const 0x28) (global.get $output_max))))
    ;; A random-weight model may well stop at once: compute succeeding is the proof, any length is fine.
    (call $puts (i32.const 1) (i32.const 0x160))
    (call $puts (i32.const 1) (i32.const 0x1a0))
    (call $put_u32 (i32.const 1) (i32.load (i32.const 0x28)))
    (call $puts (i32.const 1) (i32.const 0x1b0))
    (call $put_hex (i32.const 1) (global.get $output) (i32.load (i32.const 0x28)))
    (call $puts (i32.const 1) (i32.const 0x1c0)))
)
