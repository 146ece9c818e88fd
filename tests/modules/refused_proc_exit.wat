;; Refused by Envoy: a WASI command whose _start ends with proc_exit(0), as a C or TinyGo (0.35 and
;; later) command does after main returns. Envoy runs _start with only a few WASI functions allowed
;; (proc_exit is not one of them), so the call traps and the VM is never started.
(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 4096))
  (global $started (mut i32) (i32.const 0))
  (func (export "_start")
    (global.set $started (i32.const 1))
    (call $proc_exit (i32.const 0)))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param $size i32) (result i32)
    (local $ptr i32)
    (local.set $ptr (global.get $heap))
    (global.set $heap (i32.add (local.get $ptr) (i32.and (i32.add (local.get $size) (i32.const 7)) (i32.const -8))))
    (local.get $ptr))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    i32.const 0))
