;; Shaped like a Go 1.24 build of the Go proxy-wasm SDK (proxy-wasm/proxy-wasm-go-sdk),
;; `GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared`: a WASI reactor. Its only entry point is
;; _initialize, which starts the Go runtime and runs the package initialisers (where the plugin calls
;; proxywasm.SetHttpContext); main() is never run and not exported. Every callback is a //go:wasmexport
;; function, which traps when called before _initialize (the runtime is not up). The ABI 0.2.0 marker,
;; proxy_on_memory_allocate and no malloc; the WASI imports of the runtime and of package syscall.
;;
;; _initialize calls the WASI functions the Go runtime calls while starting (random seed, clocks, args,
;; environment, a zero-length poll_oneoff sleep, which must succeed, fd_fdstat_get on stdout, the search
;; for preopened directories from fd 3), each noted in the trace with the errno the host returned. The
;; trace of callbacks, as in tinygo_wasi_command.wat, is sent back as the response header `x-call-order`,
;; and `x-alloc` names the allocator the host used.
;;
;; Memory: 16/20 out-pointers, 32.. scratch, 128.. a poll_oneoff subscription, 256.. names (one every
;; 32 bytes), 3968.. number formatting, 16384.. the trace, 32768.. heap.
(module
  (import "wasi_snapshot_preview1" "sched_yield" (func $sched_yield (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock_time_get (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $environ_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $environ_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get" (func $random_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_close" (func $fd_close (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_fdstat_get" (func $fd_fdstat_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_fdstat_set_flags" (func $fd_fdstat_set_flags (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_filestat_get" (func $fd_filestat_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_get" (func $fd_prestat_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_dir_name" (func $fd_prestat_dir_name (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_seek" (func $fd_seek (param i32 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open" (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "env" "proxy_log" (func $proxy_log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_buffer_bytes" (func $get_buffer_bytes (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $add_hv (param i32 i32 i32 i32 i32) (result i32)))

  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 32768))
  (global $runtime_up (mut i32) (i32.const 0))
  (global $http_context_set (mut i32) (i32.const 0))
  (global $alloc_kind (mut i32) (i32.const 0)) ;; 0 none, 2 proxy_on_memory_allocate

  (data (i32.const 256) "_initialize")
  (data (i32.const 288) "init")
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
  (data (i32.const 768) "proxy_on_memory_allocate")
  (data (i32.const 800) "none")
  (data (i32.const 832) "random_get")
  (data (i32.const 864) "clock_time_get")
  (data (i32.const 896) "args_sizes_get")
  (data (i32.const 928) "environ_sizes_get")
  (data (i32.const 960) "poll_oneoff")
  (data (i32.const 992) "fd_fdstat_get")
  (data (i32.const 1024) "fd_prestat_get")
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

  ;; what a //go:wasmexport wrapper does first: no Go code runs before the runtime is up
  (func $go_entry
    (if (i32.eqz (global.get $runtime_up)) (then unreachable)))

  (func $bump (param $size i32) (result i32)
    (local $ptr i32)
    (local.set $ptr (global.get $heap))
    (global.set $heap (i32.and (i32.add (i32.add (local.get $ptr) (local.get $size)) (i32.const 7)) (i32.const -8)))
    (local.get $ptr))

  ;; runtime.throw when a WASI call the runtime cannot do without fails
  (func $must (param $errno i32)
    (if (local.get $errno) (then unreachable)))

  (func (export "_initialize")
    (local $errno i32)
    (call $note (i32.const 256) (i32.const 11))
    (local.set $errno (call $random_get (i32.const 32) (i32.const 16)))
    (call $note (i32.const 832) (i32.const 10)) (call $note_num (local.get $errno)) (call $must (local.get $errno))
    (local.set $errno (call $clock_time_get (i32.const 1) (i64.const 1) (i32.const 48)))
    (call $note (i32.const 864) (i32.const 14)) (call $note_num (local.get $errno)) (call $must (local.get $errno))
    (local.set $errno (call $args_sizes_get (i32.const 56) (i32.const 60)))
    (call $note (i32.const 896) (i32.const 14)) (call $note_num (local.get $errno)) (call $must (local.get $errno))
    (local.set $errno (call $environ_sizes_get (i32.const 56) (i32.const 60)))
    (call $note (i32.const 928) (i32.const 17)) (call $note_num (local.get $errno)) (call $must (local.get $errno))
    ;; a clock subscription (eventtype 0 at offset 8, monotonic clock at 16, timeout 0 at 24)
    (memory.fill (i32.const 128) (i32.const 0) (i32.const 48))
    (i32.store (i32.const 16) (i32.const 1))
    (local.set $errno (call $poll_oneoff (i32.const 128) (i32.const 192) (i32.const 1) (i32.const 20)))
    (call $note (i32.const 960) (i32.const 11)) (call $note_num (local.get $errno)) (call $must (local.get $errno))
    (global.set $runtime_up (i32.const 1))
    ;; package initialisers: os (stdout's flags, the preopened directories), then the plugin's init()
    (local.set $errno (call $fd_fdstat_get (i32.const 1) (i32.const 64)))
    (call $note (i32.const 992) (i32.const 13)) (call $note_num (local.get $errno))
    (local.set $errno (call $fd_prestat_get (i32.const 3) (i32.const 96)))
    (call $note (i32.const 1024) (i32.const 14)) (call $note_num (local.get $errno))
    (call $note (i32.const 288) (i32.const 4))
    (global.set $http_context_set (i32.const 1)))

  (func (export "proxy_abi_version_0_2_0") (call $go_entry))

  (func (export "proxy_on_memory_allocate") (param $size i32) (result i32)
    (call $go_entry)
    (global.set $alloc_kind (i32.const 2))
    (call $bump (local.get $size)))

  (func (export "proxy_on_context_create") (param $ctx i32) (param $parent i32)
    (call $go_entry)
    ;; the SDK panics without a context factory from init()
    (if (i32.eqz (global.get $http_context_set)) (then unreachable))
    (if (local.get $parent)
      (then (call $note (i32.const 352) (i32.const 21)))
      (else (call $note (i32.const 320) (i32.const 19)))))

  (func (export "proxy_on_vm_start") (param $root i32) (param $size i32) (result i32)
    (call $go_entry)
    (call $note (i32.const 384) (i32.const 8))
    (i32.const 1))

  (func (export "proxy_on_configure") (param $root i32) (param $size i32) (result i32)
    (call $go_entry)
    (call $note (i32.const 416) (i32.const 9))
    (if (local.get $size)
      (then (drop (call $get_buffer_bytes (i32.const 7) (i32.const 0) (local.get $size) (i32.const 16) (i32.const 20)))))
    (i32.const 1))

  (func (export "proxy_on_request_headers") (param $ctx i32) (param $n i32) (param $eos i32) (result i32)
    (call $go_entry)
    (call $note (i32.const 448) (i32.const 15))
    (i32.const 0))
  (func (export "proxy_on_request_body") (param $ctx i32) (param $size i32) (param $eos i32) (result i32)
    (call $go_entry)
    (call $note (i32.const 480) (i32.const 12))
    (i32.const 0))
  (func (export "proxy_on_request_trailers") (param $ctx i32) (param $n i32) (result i32) (call $go_entry) (i32.const 0))

  (func (export "proxy_on_response_headers") (param $ctx i32) (param $n i32) (param $eos i32) (result i32)
    (call $go_entry)
    (call $note (i32.const 512) (i32.const 16))
    (drop (call $add_hv (i32.const 2) (i32.const 672) (i32.const 12) (i32.const 16384) (i32.sub (global.get $trace_len) (i32.const 1))))
    (if (i32.eq (global.get $alloc_kind) (i32.const 2))
      (then (drop (call $add_hv (i32.const 2) (i32.const 704) (i32.const 7) (i32.const 768) (i32.const 24))))
      (else (drop (call $add_hv (i32.const 2) (i32.const 704) (i32.const 7) (i32.const 800) (i32.const 4)))))
    (i32.const 0))
  (func (export "proxy_on_response_body") (param $ctx i32) (param $size i32) (param $eos i32) (result i32)
    (call $go_entry)
    (call $note (i32.const 544) (i32.const 13))
    (i32.const 0))
  (func (export "proxy_on_response_trailers") (param $ctx i32) (param $n i32) (result i32) (call $go_entry) (i32.const 0))

  (func (export "proxy_on_log") (param $ctx i32)
    (call $go_entry)
    (call $note (i32.const 576) (i32.const 3)))
  (func (export "proxy_on_done") (param $ctx i32) (result i32)
    (call $go_entry)
    (call $note (i32.const 608) (i32.const 4))
    (i32.const 1))
  (func (export "proxy_on_delete") (param $ctx i32)
    (call $go_entry)
    (call $note (i32.const 640) (i32.const 6)))

  (func (export "proxy_on_tick") (param $root i32) (call $go_entry))
  (func (export "proxy_on_queue_ready") (param $root i32) (param $queue i32) (call $go_entry))
  (func (export "proxy_on_http_call_response") (param i32 i32 i32 i32 i32) (call $go_entry))
  (func (export "proxy_on_new_connection") (param $ctx i32) (result i32) (call $go_entry) (i32.const 0))
  (func (export "proxy_on_downstream_data") (param i32 i32 i32) (result i32) (call $go_entry) (i32.const 0))
  (func (export "proxy_on_downstream_connection_close") (param i32 i32) (call $go_entry))
  (func (export "proxy_on_upstream_data") (param i32 i32 i32) (result i32) (call $go_entry) (i32.const 0))
  (func (export "proxy_on_upstream_connection_close") (param i32 i32) (call $go_entry))
)
