;; Shaped like a wasm32-wasip1 cdylib built with the proxy-wasm Rust crate: ABI 0.2.1 marker,
;; proxy_on_memory_allocate (no malloc), _initialize from proxy_wasm::main!, the WASI imports Rust's
;; std pulls in, configuration read with max_size = usize::MAX, property paths joined by NUL with no
;; trailing NUL, set_http_request_header -> proxy_replace_header_map_value.
;; It also calls env.proxy_new_shiny_call, which no host provides.
;;
;; Memory: 16/20 out-pointers, 24 cas, 28 queue token, 32 u32 scratch, 40 u64, 64 iovec,
;; 72 nwritten, 256.. constants, 3968.. number formatting, 4096.. concat buffer, 8192.. heap.
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get" (func $random_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $environ_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $environ_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock_time_get (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (import "env" "proxy_log" (func $proxy_log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_log_level" (func $get_log_level (param i32) (result i32)))
  (import "env" "proxy_get_buffer_bytes" (func $get_buffer_bytes (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_tick_period_milliseconds" (func $set_tick (param i32) (result i32)))
  (import "env" "proxy_get_shared_data" (func $get_shared (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_shared_data" (func $set_shared (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_register_shared_queue" (func $register_queue (param i32 i32 i32) (result i32)))
  (import "env" "proxy_resolve_shared_queue" (func $resolve_queue (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_enqueue_shared_queue" (func $enqueue (param i32 i32 i32) (result i32)))
  (import "env" "proxy_dequeue_shared_queue" (func $dequeue (param i32 i32 i32) (result i32)))
  (import "env" "proxy_define_metric" (func $define_metric (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_increment_metric" (func $increment_metric (param i32 i64) (result i32)))
  (import "env" "proxy_get_property" (func $get_property (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value" (func $get_hv (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_replace_header_map_value" (func $replace_hv (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_effective_context" (func $set_effective_context (param i32) (result i32)))
  (import "env" "proxy_continue_stream" (func $continue_stream (param i32) (result i32)))
  (import "env" "proxy_new_shiny_call" (func $new_shiny_call (param i32 i32) (result i32)))

  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 8192))
  (global $queue (mut i32) (i32.const 0))
  (global $metric (mut i32) (i32.const 0))
  (global $waiting (mut i32) (i32.const 0))

  (data (i32.const 256) "config: ")                ;; 8
  (data (i32.const 272) "log level ")              ;; 10
  (data (i32.const 288) "events")                  ;; 6
  (data (i32.const 304) "counter")                 ;; 7
  (data (i32.const 320) "0")                       ;; 1
  (data (i32.const 328) "1")                       ;; 1
  (data (i32.const 336) "requests_total")          ;; 14
  (data (i32.const 352) "cas update status ")      ;; 18
  (data (i32.const 384) "stale cas status ")       ;; 17
  (data (i32.const 416) "request seen")            ;; 12
  (data (i32.const 432) "source\00address")        ;; 14: joined with NUL, no trailing NUL
  (data (i32.const 448) "x-source")                ;; 8
  (data (i32.const 464) "unknown import status ")  ;; 22
  (data (i32.const 496) "x-wait")                  ;; 6
  (data (i32.const 512) "queue item: ")            ;; 12
  (data (i32.const 528) "tick")                    ;; 4
  (data (i32.const 544) "resumed request of context ") ;; 27
  (data (i32.const 576) "resolved queue ")         ;; 15
  (data (i32.const 592) "println from rust\n")     ;; 18
  (data (i32.const 624) "x-counter")               ;; 9

  (func (export "proxy_abi_version_0_2_1"))

  (func (export "proxy_on_memory_allocate") (param $size i32) (result i32)
    (local $ptr i32)
    (local.set $ptr (global.get $heap))
    (global.set $heap (i32.and (i32.add (i32.add (local.get $ptr) (local.get $size)) (i32.const 7)) (i32.const -8)))
    (local.get $ptr))

  (func (export "_initialize"))

  (func $log2 (param $level i32) (param $p1 i32) (param $n1 i32) (param $p2 i32) (param $n2 i32)
    (memory.copy (i32.const 4096) (local.get $p1) (local.get $n1))
    (memory.copy (i32.add (i32.const 4096) (local.get $n1)) (local.get $p2) (local.get $n2))
    (drop (call $proxy_log (local.get $level) (i32.const 4096) (i32.add (local.get $n1) (local.get $n2)))))

  (func $utoa (param $v i32) (result i32)
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
    (local.get $len))

  (func $log_number (param $level i32) (param $p i32) (param $n i32) (param $v i32)
    (local $len i32)
    (local.set $len (call $utoa (local.get $v)))
    (call $log2 (local.get $level) (local.get $p) (local.get $n) (i32.const 3968) (local.get $len)))

  (func (export "proxy_on_context_create") (param i32 i32))

  (func (export "proxy_on_vm_start") (param $root i32) (param $size i32) (result i32)
    (i32.const 1))

  (func (export "proxy_on_configure") (param $root i32) (param $size i32) (result i32)
    ;; get_plugin_configuration(): start 0, max_size usize::MAX
    (i32.store (i32.const 16) (i32.const 0))
    (i32.store (i32.const 20) (i32.const 0))
    (drop (call $get_buffer_bytes (i32.const 7) (i32.const 0) (i32.const -1) (i32.const 16) (i32.const 20)))
    (call $log2 (i32.const 2) (i32.const 256) (i32.const 8) (i32.load (i32.const 16)) (i32.load (i32.const 20)))
    (drop (call $get_log_level (i32.const 32)))
    (call $log_number (i32.const 1) (i32.const 272) (i32.const 10) (i32.load (i32.const 32)))
    (drop (call $set_tick (i32.const 250)))
    (drop (call $register_queue (i32.const 288) (i32.const 6) (i32.const 28)))
    (global.set $queue (i32.load (i32.const 28)))
    (drop (call $resolve_queue (i32.const 0) (i32.const 0) (i32.const 288) (i32.const 6) (i32.const 32)))
    (call $log_number (i32.const 1) (i32.const 576) (i32.const 15) (i32.load (i32.const 32)))
    (drop (call $set_shared (i32.const 304) (i32.const 7) (i32.const 320) (i32.const 1) (i32.const 0)))
    (drop (call $define_metric (i32.const 0) (i32.const 336) (i32.const 14) (i32.const 32)))
    (global.set $metric (i32.load (i32.const 32)))
    (i32.const 1))

  (func (export "proxy_on_request_headers") (param $ctx i32) (param $n i32) (param $eos i32) (result i32)
    (local $cas i32)
    ;; read-modify-write the shared counter with CAS, then retry with the stale CAS
    (drop (call $get_shared (i32.const 304) (i32.const 7) (i32.const 16) (i32.const 20) (i32.const 24)))
    (local.set $cas (i32.load (i32.const 24)))
    (drop (call $replace_hv (i32.const 0) (i32.const 624) (i32.const 9) (i32.load (i32.const 16)) (i32.load (i32.const 20))))
    (call $log_number (i32.const 2) (i32.const 352) (i32.const 18)
      (call $set_shared (i32.const 304) (i32.const 7) (i32.const 328) (i32.const 1) (local.get $cas)))
    (call $log_number (i32.const 2) (i32.const 384) (i32.const 17)
      (call $set_shared (i32.const 304) (i32.const 7) (i32.const 328) (i32.const 1) (local.get $cas)))
    (drop (call $enqueue (global.get $queue) (i32.const 416) (i32.const 12)))
    (drop (call $increment_metric (global.get $metric) (i64.const 1)))
    (if (i32.eqz (call $get_property (i32.const 432) (i32.const 14) (i32.const 16) (i32.const 20)))
      (then (drop (call $replace_hv (i32.const 0) (i32.const 448) (i32.const 8) (i32.load (i32.const 16)) (i32.load (i32.const 20))))))
    (call $log_number (i32.const 3) (i32.const 464) (i32.const 22) (call $new_shiny_call (i32.const 1) (i32.const 2)))
    (if (i32.eqz (call $get_hv (i32.const 0) (i32.const 496) (i32.const 6) (i32.const 16) (i32.const 20)))
      (then
        (global.set $waiting (local.get $ctx))
        (return (i32.const 1))))
    (i32.const 0))

  (func (export "proxy_on_queue_ready") (param $root i32) (param $token i32)
    (if (i32.eqz (call $dequeue (local.get $token) (i32.const 16) (i32.const 20)))
      (then (call $log2 (i32.const 2) (i32.const 512) (i32.const 12) (i32.load (i32.const 16)) (i32.load (i32.const 20))))))

  ;; resume a request paused in on_request_headers, the way a root context does after a timer
  (func (export "proxy_on_tick") (param $root i32)
    (drop (call $proxy_log (i32.const 1) (i32.const 528) (i32.const 4)))
    (if (global.get $waiting)
      (then
        (drop (call $set_effective_context (global.get $waiting)))
        (drop (call $continue_stream (i32.const 0)))
        (call $log_number (i32.const 2) (i32.const 544) (i32.const 27) (global.get $waiting))
        (global.set $waiting (i32.const 0)))))

  (func (export "proxy_on_response_headers") (param $ctx i32) (param $n i32) (param $eos i32) (result i32)
    ;; println!: one fd_write per line
    (i32.store (i32.const 64) (i32.const 592))
    (i32.store (i32.const 68) (i32.const 18))
    (drop (call $fd_write (i32.const 1) (i32.const 64) (i32.const 1) (i32.const 72)))
    (i32.const 0))

  (func (export "proxy_on_done") (param $ctx i32) (result i32) (i32.const 1))
  (func (export "proxy_on_delete") (param $ctx i32))
)
