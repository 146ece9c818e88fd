;; Shaped like a TinyGo (0.34 and earlier) build of the TinyGo proxy-wasm SDK (tetratelabs/proxy-wasm-go-sdk),
;; `tinygo build -scheduler=none -target=wasi`: a WASI command whose _start runs the runtime's
;; initialisation and main() (which calls proxywasm.SetVMContext) and then returns without proc_exit;
;; the ABI 0.2.0 marker; TinyGo's own allocator exported as malloc/free/calloc/realloc next to the SDK's
;; proxy_on_memory_allocate; every callback the SDK defines exported, whether the plugin uses it or not.
;;
;; It records the order in which the host calls it: every callback appends its name to a trace, sent back
;; as the response header `x-call-order` (the trace so far, so a second request shows how the first one
;; ended), and `x-alloc` says which allocator the host used to hand the module the plugin configuration.
;;
;; Memory: 16/20 out-pointers, 32.. scratch, 256.. names (one every 32 bytes), 3968.. number formatting,
;; 16384.. the trace, 32768.. heap.
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get" (func $random_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock_time_get (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
  ;; imported by TinyGo's runtime but only called when main returns on 0.35 and later
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (import "env" "proxy_log" (func $proxy_log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_buffer_bytes" (func $get_buffer_bytes (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $add_hv (param i32 i32 i32 i32 i32) (result i32)))

  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 32768))
  (global $vm_context_set (mut i32) (i32.const 0))
  (global $alloc_kind (mut i32) (i32.const 0)) ;; 0 none, 1 malloc, 2 proxy_on_memory_allocate

  (data (i32.const 256) "_start")
  (data (i32.const 288) "main")
  (data (i32.const 320) "root_context_create")
  (data (i32.const 352) "stream_context_create")
  (data (i32.const 384) "vm_start")
  (data (i32.const 416) "configure")
  (data (i32.const 448) "request_headers")
  (data (i32.const 480) "request_body")
  (data (i32.const 512) "response_headers")
  (data (i32.const 544) "response_body")
  (data (i32.const 576) "log")
  (data (i32.const 608) "done")
  (data (i32.const 640) "delete")
  (data (i32.const 672) "x-call-order")
  (data (i32.const 704) "x-alloc")
  (data (i32.const 736) "malloc")
  (data (i32.const 768) "proxy_on_memory_allocate")
  (data (i32.const 800) "none")
  (data (i32.const 832) "SetVMContext was not called")
  (data (i32.const 864) "tinygo main: SetVMContext\n")
  ;; ---- the call trace: each callback appends its name and a space at 16384.. ($trace_len bytes) ----
  (global $trace_len (mut i32) (i32.const 0))
  (func $note (param $ptr i32) (param $len i32)
    (if (i32.le_u (i32.add (global.get $trace_len) (i32.add (local.get $len) (i32.const 1))) (i32.const 4096))
      (then
        (memory.copy (i32.add (i32.const 16384) (global.get $trace_len)) (local.get $ptr) (local.get $len))
        (global.set $trace_len (i32.add (global.get $trace_len) (local.get $len)))
        (i32.store8 (i32.add (i32.const 16384) (global.get $trace_len)) (i32.const 32))
        (global.set $trace_len (i32.add (global.get $trace_len) (i32.const 1))))))
  ;; a decimal number, appended like a name
  (func $note_num (param $v i32)
    (local $len i32) (local $tmp i32) (local $i i32)
    (local.set $tmp (local.get $v))
    (local.set $len (i32.const 1))
    (block $done
      (loop $count
        (br_if $done (i32.lt_u (local.get $tmp) (i32.const 10)))
        (local.set $tmp (i32.div_u (local.get $tmp) (i32.const 10)))
        (local.set $len (i32.add (local.get $len) (i32.const 1)))
        (br $count)))
    (local.set $i (local.get $len))
    (local.set $tmp (local.get $v))
    (loop $write
      (local.set $i (i32.sub (local.get $i) (i32.const 1)))
      (i32.store8 (i32.add (i32.const 3968) (local.get $i))
        (i32.add (i32.const 48) (i32.rem_u (local.get $tmp) (i32.const 10))))
      (local.set $tmp (i32.div_u (local.get $tmp) (i32.const 10)))
      (br_if $write (i32.gt_u (local.get $i) (i32.const 0))))
    (call $note (i32.const 3968) (local.get $len)))

  (func $bump (param $size i32) (result i32)
    (local $ptr i32)
    (local.set $ptr (global.get $heap))
    (global.set $heap (i32.and (i32.add (i32.add (local.get $ptr) (local.get $size)) (i32.const 7)) (i32.const -8)))
    (local.get $ptr))

  ;; TinyGo's allocator, exported for C interop on the wasi target
  (func (export "malloc") (param $size i32) (result i32)
    (global.set $alloc_kind (i32.const 1))
    (call $bump (local.get $size)))
  (func (export "free") (param i32))
  (func (export "calloc") (param $n i32) (param $size i32) (result i32)
    (call $bump (i32.mul (local.get $n) (local.get $size))))
  (func (export "realloc") (param $ptr i32) (param $size i32) (result i32)
    (local $new i32)
    (local.set $new (call $bump (local.get $size)))
    (if (local.get $ptr) (then (memory.copy (local.get $new) (local.get $ptr) (local.get $size))))
    (local.get $new))

  (func (export "proxy_abi_version_0_2_0"))

  (func (export "proxy_on_memory_allocate") (param $size i32) (result i32)
    (global.set $alloc_kind (i32.const 2))
    (call $bump (local.get $size)))

  ;; The runtime's start-up (args, random seed for maps, the clock), then main.main, then a plain return.
  (func (export "_start")
    (call $note (i32.const 256) (i32.const 6))
    (drop (call $args_sizes_get (i32.const 32) (i32.const 36)))
    (drop (call $random_get (i32.const 48) (i32.const 8)))
    (drop (call $clock_time_get (i32.const 1) (i64.const 1000) (i32.const 40)))
    (call $note (i32.const 288) (i32.const 4))
    (i32.store (i32.const 64) (i32.const 864))
    (i32.store (i32.const 68) (i32.const 26))
    (drop (call $fd_write (i32.const 1) (i32.const 64) (i32.const 1) (i32.const 72)))
    (global.set $vm_context_set (i32.const 1)))

  (func (export "proxy_on_context_create") (param $ctx i32) (param $parent i32)
    ;; the SDK panics when main() did not set a VM context
    (if (i32.eqz (global.get $vm_context_set))
      (then
        (drop (call $proxy_log (i32.const 5) (i32.const 832) (i32.const 27)))
        unreachable))
    (if (local.get $parent)
      (then (call $note (i32.const 352) (i32.const 21)))
      (else (call $note (i32.const 320) (i32.const 19)))))

  (func (export "proxy_on_vm_start") (param $root i32) (param $size i32) (result i32)
    (call $note (i32.const 384) (i32.const 8))
    (i32.const 1))

  (func (export "proxy_on_configure") (param $root i32) (param $size i32) (result i32)
    (call $note (i32.const 416) (i32.const 9))
    ;; GetPluginConfiguration: the host copies the configuration into memory it allocates in the module
    (if (local.get $size)
      (then (drop (call $get_buffer_bytes (i32.const 7) (i32.const 0) (local.get $size) (i32.const 16) (i32.const 20)))))
    (i32.const 1))

  (func (export "proxy_on_request_headers") (param $ctx i32) (param $n i32) (param $eos i32) (result i32)
    (call $note (i32.const 448) (i32.const 15))
    (i32.const 0))
  (func (export "proxy_on_request_body") (param $ctx i32) (param $size i32) (param $eos i32) (result i32)
    (call $note (i32.const 480) (i32.const 12))
    (i32.const 0))
  (func (export "proxy_on_request_trailers") (param $ctx i32) (param $n i32) (result i32) (i32.const 0))

  (func (export "proxy_on_response_headers") (param $ctx i32) (param $n i32) (param $eos i32) (result i32)
    (call $note (i32.const 512) (i32.const 16))
    (drop (call $add_hv (i32.const 2) (i32.const 672) (i32.const 12) (i32.const 16384) (i32.sub (global.get $trace_len) (i32.const 1))))
    (if (i32.eq (global.get $alloc_kind) (i32.const 1))
      (then (drop (call $add_hv (i32.const 2) (i32.const 704) (i32.const 7) (i32.const 736) (i32.const 6)))))
    (if (i32.eq (global.get $alloc_kind) (i32.const 2))
      (then (drop (call $add_hv (i32.const 2) (i32.const 704) (i32.const 7) (i32.const 768) (i32.const 24)))))
    (if (i32.eqz (global.get $alloc_kind))
      (then (drop (call $add_hv (i32.const 2) (i32.const 704) (i32.const 7) (i32.const 800) (i32.const 4)))))
    (i32.const 0))
  (func (export "proxy_on_response_body") (param $ctx i32) (param $size i32) (param $eos i32) (result i32)
    (call $note (i32.const 544) (i32.const 13))
    (i32.const 0))
  (func (export "proxy_on_response_trailers") (param $ctx i32) (param $n i32) (result i32) (i32.const 0))

  (func (export "proxy_on_log") (param $ctx i32)
    (call $note (i32.const 576) (i32.const 3)))
  (func (export "proxy_on_done") (param $ctx i32) (result i32)
    (call $note (i32.const 608) (i32.const 4))
    (i32.const 1))
  (func (export "proxy_on_delete") (param $ctx i32)
    (call $note (i32.const 640) (i32.const 6)))

  (func (export "proxy_on_tick") (param $root i32))
  (func (export "proxy_on_queue_ready") (param $root i32) (param $queue i32))
  (func (export "proxy_on_http_call_response") (param i32 i32 i32 i32 i32))
  (func (export "proxy_on_new_connection") (param $ctx i32) (result i32) (i32.const 0))
  (func (export "proxy_on_downstream_data") (param i32 i32 i32) (result i32) (i32.const 0))
  (func (export "proxy_on_downstream_connection_close") (param i32 i32))
  (func (export "proxy_on_upstream_data") (param i32 i32 i32) (result i32) (i32.const 0))
  (func (export "proxy_on_upstream_connection_close") (param i32 i32))
)
