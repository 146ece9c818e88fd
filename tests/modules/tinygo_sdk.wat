;; Shaped like a TinyGo build of proxy-wasm-go-sdk: ABI 0.2.0 marker, a WASI command whose _start
;; runs main() (SetVMContext) and returns normally without proc_exit, proxy_on_memory_allocate and
;; no malloc, GetHttpRequestHeaders -> proxy_get_header_map_pairs, ReplaceHttpRequestHeaders ->
;; proxy_set_header_map_pairs, AppendHttpRequestBody -> proxy_set_buffer_bytes(start = size),
;; SendHttpResponse -> proxy_send_local_response with no details, OnHttpStreamDone from proxy_on_log.
;;
;; Memory: 16/20 out-pointers, 32 u32 scratch, 64 iovec, 72 nwritten, 256.. constants,
;; 3968.. number formatting, 4096.. concat buffer, 8192.. heap.
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get" (func $random_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock_time_get (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (import "env" "proxy_log" (func $proxy_log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_buffer_bytes" (func $get_buffer_bytes (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_buffer_bytes" (func $set_buffer_bytes (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_pairs" (func $get_pairs (param i32 i32 i32) (result i32)))
  (import "env" "proxy_set_header_map_pairs" (func $set_pairs (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value" (func $get_hv (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $add_hv (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_send_local_response" (func $send_local_response (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_continue_stream" (func $continue_stream (param i32) (result i32)))
  (import "env" "proxy_set_shared_data" (func $set_shared (param i32 i32 i32 i32 i32) (result i32)))

  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 8192))
  (global $vm_context_set (mut i32) (i32.const 0))

  (data (i32.const 256) "config: ")                 ;; 8
  (data (i32.const 272) "go-pairs")                 ;; 8
  ;; serialized pairs {:method: GET, :path: /rewritten, x-go: 1}: 4 + 24 + (8+4) + (6+11) + (5+2) = 64
  (data (i32.const 288) "\03\00\00\00\07\00\00\00\03\00\00\00\05\00\00\00\0a\00\00\00\04\00\00\00\01\00\00\00:method\00GET\00:path\00/rewritten\00x-go\001\00")
  (data (i32.const 384) ":path")                    ;; 5
  (data (i32.const 400) "request headers status in body callback: ") ;; 41
  (data (i32.const 448) "go says no")               ;; 10
  (data (i32.const 464) " [go]")                    ;; 5
  (data (i32.const 480) "x-go-response")            ;; 13
  (data (i32.const 496) "1")                        ;; 1
  (data (i32.const 512) "OnHttpStreamDone")         ;; 16
  (data (i32.const 544) "main: SetVMContext\n")     ;; 19
  (data (i32.const 576) "no vm context")            ;; 13

  (func (export "proxy_abi_version_0_2_0"))

  (func (export "proxy_on_memory_allocate") (param $size i32) (result i32)
    (local $ptr i32)
    (local.set $ptr (global.get $heap))
    (global.set $heap (i32.and (i32.add (i32.add (local.get $ptr) (local.get $size)) (i32.const 7)) (i32.const -8)))
    (local.get $ptr))

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

  ;; TinyGo's _start: runtime init (args, random seed), main.main, then a plain return.
  (func (export "_start")
    (drop (call $args_sizes_get (i32.const 32) (i32.const 36)))
    (drop (call $random_get (i32.const 48) (i32.const 8)))
    (i32.store (i32.const 64) (i32.const 544))
    (i32.store (i32.const 68) (i32.const 19))
    (drop (call $fd_write (i32.const 1) (i32.const 64) (i32.const 1) (i32.const 72)))
    (global.set $vm_context_set (i32.const 1)))

  (func (export "proxy_on_context_create") (param i32 i32)
    ;; the Go SDK panics when main() did not call SetVMContext
    (if (i32.eqz (global.get $vm_context_set))
      (then
        (drop (call $proxy_log (i32.const 5) (i32.const 576) (i32.const 13)))
        unreachable)))

  (func (export "proxy_on_vm_start") (param $root i32) (param $size i32) (result i32) (i32.const 1))

  (func (export "proxy_on_configure") (param $root i32) (param $size i32) (result i32)
    (if (local.get $size)
      (then
        (drop (call $get_buffer_bytes (i32.const 7) (i32.const 0) (local.get $size) (i32.const 16) (i32.const 20)))
        (call $log2 (i32.const 2) (i32.const 256) (i32.const 8) (i32.load (i32.const 16)) (i32.load (i32.const 20)))))
    (i32.const 1))

  (func (export "proxy_on_request_headers") (param $ctx i32) (param $n i32) (param $eos i32) (result i32)
    (drop (call $get_pairs (i32.const 0) (i32.const 16) (i32.const 20)))
    (drop (call $set_shared (i32.const 272) (i32.const 8) (i32.load (i32.const 16)) (i32.load (i32.const 20)) (i32.const 0)))
    (drop (call $set_pairs (i32.const 0) (i32.const 288) (i32.const 64)))
    (i32.const 0))

  (func (export "proxy_on_request_body") (param $ctx i32) (param $size i32) (param $eos i32) (result i32)
    ;; request headers were released when on_request_headers returned Continue
    (call $log2 (i32.const 2) (i32.const 400) (i32.const 41) (i32.const 3968)
      (call $utoa (call $get_hv (i32.const 0) (i32.const 384) (i32.const 5) (i32.const 16) (i32.const 20))))
    ;; Go filters buffer until end_of_stream
    (if (i32.eqz (local.get $eos)) (then (return (i32.const 1))))
    (drop (call $get_buffer_bytes (i32.const 0) (i32.const 0) (local.get $size) (i32.const 16) (i32.const 20)))
    (if (i32.eq (i32.load8_u (i32.load (i32.const 16))) (i32.const 110)) ;; body starting with 'n'
      (then
        (drop (call $send_local_response (i32.const 401) (i32.const 0) (i32.const 0)
          (i32.const 448) (i32.const 10) (i32.const 0) (i32.const 0) (i32.const -1)))
        (return (i32.const 1))))
    (drop (call $set_buffer_bytes (i32.const 0) (local.get $size) (i32.const 0) (i32.const 464) (i32.const 5)))
    (i32.const 0))

  (func (export "proxy_on_response_headers") (param $ctx i32) (param $n i32) (param $eos i32) (result i32)
    (drop (call $add_hv (i32.const 2) (i32.const 480) (i32.const 13) (i32.const 496) (i32.const 1)))
    (i32.const 0))

  (func (export "proxy_on_log") (param $ctx i32)
    (drop (call $proxy_log (i32.const 2) (i32.const 512) (i32.const 16))))

  (func (export "proxy_on_done") (param $ctx i32) (result i32) (i32.const 1))
  (func (export "proxy_on_delete") (param $ctx i32))
)
