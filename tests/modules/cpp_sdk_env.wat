;; Shaped like an emscripten build of the proxy-wasm C++ SDK: ABI 0.2.1 marker, malloc/free,
;; _initialize (static constructors), only `env` imports, emscripten_notify_memory_growth.
;; Every callback logs its name at trace level so tests can assert the exact call order.
;;
;; Memory: 16/20 out-pointer pair, 24 cas, 32 u32 scratch, 256.. string constants,
;; 3968.. number formatting, 4096.. log concat buffer, 8192.. bump heap.
(module
  (import "env" "proxy_log" (func $proxy_log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_buffer_bytes" (func $get_buffer_bytes (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_buffer_status" (func $get_buffer_status (param i32 i32 i32) (result i32)))
  (import "env" "proxy_set_buffer_bytes" (func $set_buffer_bytes (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value" (func $get_hv (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_pairs" (func $get_pairs (param i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $add_hv (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_replace_header_map_value" (func $replace_hv (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_remove_header_map_value" (func $remove_hv (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_size" (func $get_map_size (param i32 i32) (result i32)))
  (import "env" "proxy_get_property" (func $get_property (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_send_local_response" (func $send_local_response (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_shared_data" (func $set_shared (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "emscripten_notify_memory_growth" (func $notify_growth (param i32)))

  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 8192))
  (global $initialized (mut i32) (i32.const 0))
  (global $root_id (mut i32) (i32.const 0))

  (data (i32.const 256) "on_context_create")        ;; 17
  (data (i32.const 288) "on_vm_start")              ;; 11
  (data (i32.const 320) "on_configure")             ;; 12
  (data (i32.const 352) "on_request_headers")       ;; 18
  (data (i32.const 384) "on_request_body")          ;; 15
  (data (i32.const 416) "on_response_headers")      ;; 19
  (data (i32.const 448) "on_response_body")         ;; 16
  (data (i32.const 480) "on_log")                   ;; 6
  (data (i32.const 512) "on_done")                  ;; 7
  (data (i32.const 544) "on_delete")                ;; 9
  (data (i32.const 576) "vm config: ")              ;; 11
  (data (i32.const 608) "plugin config: ")          ;; 15
  (data (i32.const 640) ":path")                    ;; 5
  (data (i32.const 672) "path: ")                   ;; 6
  (data (i32.const 704) "x-trap")                   ;; 6
  (data (i32.const 736) "x-loop")                   ;; 6
  (data (i32.const 768) "x-deny")                   ;; 6
  (data (i32.const 800) "x-pause")                  ;; 7
  (data (i32.const 832) "x-cpp-added")              ;; 11
  (data (i32.const 864) "1")                        ;; 1
  (data (i32.const 896) "x-replace-me")             ;; 12
  (data (i32.const 928) "replaced")                 ;; 8
  (data (i32.const 960) "x-remove-me")              ;; 11
  (data (i32.const 992) "request\00path\00")        ;; 13: the C++ SDK NUL-terminates every part
  (data (i32.const 1024) "property request.path: ") ;; 23
  (data (i32.const 1056) "req-size")                ;; 8
  (data (i32.const 1088) "req-pairs")               ;; 9
  (data (i32.const 1120) "denied_by_cpp")           ;; 13
  (data (i32.const 1152) "access denied")           ;; 13
  ;; serialized pairs {x-deny-reason: policy}: 4 + 8 + 14 + 7 = 33 bytes
  (data (i32.const 1184) "\01\00\00\00\0d\00\00\00\06\00\00\00x-deny-reason\00policy\00")
  (data (i32.const 1248) "request body: ")         ;; 14
  (data (i32.const 1280) "<<")                      ;; 2
  (data (i32.const 1288) ">>")                      ;; 2
  (data (i32.const 1296) "resp-header-demo")        ;; 16
  (data (i32.const 1328) "added by cpp")            ;; 12
  (data (i32.const 1344) "server")                  ;; 6
  (data (i32.const 1360) "rewritten by cpp")        ;; 16
  (data (i32.const 1392) "log path: ")              ;; 10
  (data (i32.const 1408) ":status")                 ;; 7
  (data (i32.const 1424) "log status: ")            ;; 12
  (data (i32.const 1440) " root")                   ;; 5
  (data (i32.const 1448) " stream")                 ;; 7
  (data (i32.const 1456) "initialized=")            ;; 12
  (data (i32.const 1472) "status ")                 ;; 7

  (func (export "proxy_abi_version_0_2_1"))

  ;; emscripten's dlmalloc stand-in: bump allocation, growing memory (and telling the host) on demand.
  (func $malloc (export "malloc") (param $size i32) (result i32)
    (local $ptr i32) (local $end i32)
    (local.set $ptr (global.get $heap))
    (local.set $end (i32.and (i32.add (i32.add (local.get $ptr) (local.get $size)) (i32.const 7)) (i32.const -8)))
    (if (i32.gt_u (local.get $end) (i32.mul (memory.size) (i32.const 65536)))
      (then
        (if (i32.lt_s (memory.grow (i32.add (i32.shr_u (i32.sub (local.get $end) (i32.mul (memory.size) (i32.const 65536))) (i32.const 16)) (i32.const 1))) (i32.const 0))
          (then (return (i32.const 0))))
        (call $notify_growth (i32.const 0))))
    (global.set $heap (local.get $end))
    (local.get $ptr))
  (func (export "free") (param i32))

  (func (export "_initialize")
    (global.set $initialized (i32.const 1)))

  (func $trace (param $p i32) (param $n i32)
    (drop (call $proxy_log (i32.const 0) (local.get $p) (local.get $n))))

  (func $log2 (param $level i32) (param $p1 i32) (param $n1 i32) (param $p2 i32) (param $n2 i32)
    (memory.copy (i32.const 4096) (local.get $p1) (local.get $n1))
    (memory.copy (i32.add (i32.const 4096) (local.get $n1)) (local.get $p2) (local.get $n2))
    (drop (call $proxy_log (local.get $level) (i32.const 4096) (i32.add (local.get $n1) (local.get $n2)))))

  ;; decimal digits of $v at 3968, returns the length
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

  (func $has_request_header (param $p i32) (param $n i32) (result i32)
    (i32.eqz (call $get_hv (i32.const 0) (local.get $p) (local.get $n) (i32.const 16) (i32.const 20))))

  (func (export "proxy_on_context_create") (param $id i32) (param $parent i32)
    (if (i32.eqz (local.get $parent))
      (then
        (global.set $root_id (local.get $id))
        (call $log2 (i32.const 0) (i32.const 256) (i32.const 17) (i32.const 1440) (i32.const 5))
        (call $log2 (i32.const 1) (i32.const 1456) (i32.const 12) (i32.const 3968) (call $utoa (global.get $initialized))))
      (else
        (call $log2 (i32.const 0) (i32.const 256) (i32.const 17) (i32.const 1448) (i32.const 7)))))

  (func (export "proxy_on_vm_start") (param $root i32) (param $size i32) (result i32)
    (call $trace (i32.const 288) (i32.const 11))
    (if (i32.eqz (call $get_buffer_bytes (i32.const 6) (i32.const 0) (local.get $size) (i32.const 16) (i32.const 20)))
      (then
        (if (local.get $size)
          (then (call $log2 (i32.const 2) (i32.const 576) (i32.const 11) (i32.load (i32.const 16)) (i32.load (i32.const 20)))))))
    (i32.const 1))

  (func (export "proxy_on_configure") (param $root i32) (param $size i32) (result i32)
    (call $trace (i32.const 320) (i32.const 12))
    (if (i32.eqz (local.get $size)) (then (return (i32.const 1))))
    (drop (call $get_buffer_bytes (i32.const 7) (i32.const 0) (local.get $size) (i32.const 16) (i32.const 20)))
    (call $log2 (i32.const 2) (i32.const 608) (i32.const 15) (i32.load (i32.const 16)) (i32.load (i32.const 20)))
    ;; a configuration starting with '!' is rejected, as a filter rejects invalid JSON
    (i32.ne (i32.load8_u (i32.load (i32.const 16))) (i32.const 33)))

  (func (export "proxy_on_request_headers") (param $ctx i32) (param $n i32) (param $eos i32) (result i32)
    (call $trace (i32.const 352) (i32.const 18))
    (if (i32.eqz (call $get_hv (i32.const 0) (i32.const 640) (i32.const 5) (i32.const 16) (i32.const 20)))
      (then (call $log2 (i32.const 2) (i32.const 672) (i32.const 6) (i32.load (i32.const 16)) (i32.load (i32.const 20)))))
    (if (call $has_request_header (i32.const 704) (i32.const 6)) (then unreachable))
    (if (call $has_request_header (i32.const 736) (i32.const 6)) (then (loop $forever (br $forever))))
    (if (call $has_request_header (i32.const 768) (i32.const 6))
      (then
        (drop (call $send_local_response (i32.const 403) (i32.const 1120) (i32.const 13)
          (i32.const 1152) (i32.const 13) (i32.const 1184) (i32.const 33) (i32.const -1)))
        (return (i32.const 1))))
    (if (call $has_request_header (i32.const 800) (i32.const 7)) (then (return (i32.const 1))))
    (drop (call $add_hv (i32.const 0) (i32.const 832) (i32.const 11) (i32.const 864) (i32.const 1)))
    (drop (call $replace_hv (i32.const 0) (i32.const 896) (i32.const 12) (i32.const 928) (i32.const 8)))
    (drop (call $remove_hv (i32.const 0) (i32.const 960) (i32.const 11)))
    (if (i32.eqz (call $get_property (i32.const 992) (i32.const 13) (i32.const 16) (i32.const 20)))
      (then (call $log2 (i32.const 2) (i32.const 1024) (i32.const 23) (i32.load (i32.const 16)) (i32.load (i32.const 20)))))
    (drop (call $get_map_size (i32.const 0) (i32.const 32)))
    (drop (call $set_shared (i32.const 1056) (i32.const 8) (i32.const 32) (i32.const 4) (i32.const 0)))
    (drop (call $get_pairs (i32.const 0) (i32.const 16) (i32.const 20)))
    (drop (call $set_shared (i32.const 1088) (i32.const 9) (i32.load (i32.const 16)) (i32.load (i32.const 20)) (i32.const 0)))
    (i32.const 0))

  (func (export "proxy_on_request_body") (param $ctx i32) (param $size i32) (param $eos i32) (result i32)
    (call $trace (i32.const 384) (i32.const 15))
    (drop (call $get_buffer_bytes (i32.const 0) (i32.const 0) (local.get $size) (i32.const 16) (i32.const 20)))
    (call $log2 (i32.const 2) (i32.const 1248) (i32.const 14) (i32.load (i32.const 16)) (i32.load (i32.const 20)))
    (if (local.get $eos)
      (then
        ;; prepend (start 0, length 0), then append (start past the end)
        (drop (call $set_buffer_bytes (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 1280) (i32.const 2)))
        (drop (call $get_buffer_status (i32.const 0) (i32.const 32) (i32.const 36)))
        (drop (call $set_buffer_bytes (i32.const 0) (i32.load (i32.const 32)) (i32.const 0) (i32.const 1288) (i32.const 2)))))
    (i32.const 0))

  (func (export "proxy_on_response_headers") (param $ctx i32) (param $n i32) (param $eos i32) (result i32)
    (call $trace (i32.const 416) (i32.const 19))
    (drop (call $add_hv (i32.const 2) (i32.const 1296) (i32.const 16) (i32.const 1328) (i32.const 12)))
    (drop (call $remove_hv (i32.const 2) (i32.const 1344) (i32.const 6)))
    (i32.const 0))

  (func (export "proxy_on_response_body") (param $ctx i32) (param $size i32) (param $eos i32) (result i32)
    (call $trace (i32.const 448) (i32.const 16))
    (if (local.get $eos)
      (then
        (drop (call $set_buffer_bytes (i32.const 1) (i32.const 0) (local.get $size) (i32.const 1360) (i32.const 16)))))
    (i32.const 0))

  (func (export "proxy_on_log") (param $ctx i32)
    (call $trace (i32.const 480) (i32.const 6))
    (if (i32.eqz (call $get_hv (i32.const 0) (i32.const 640) (i32.const 5) (i32.const 16) (i32.const 20)))
      (then (call $log2 (i32.const 2) (i32.const 1392) (i32.const 10) (i32.load (i32.const 16)) (i32.load (i32.const 20)))))
    (if (i32.eqz (call $get_hv (i32.const 2) (i32.const 1408) (i32.const 7) (i32.const 16) (i32.const 20)))
      (then (call $log2 (i32.const 2) (i32.const 1424) (i32.const 12) (i32.load (i32.const 16)) (i32.load (i32.const 20))))))

  (func (export "proxy_on_done") (param $ctx i32) (result i32)
    (call $trace (i32.const 512) (i32.const 7))
    (i32.const 1))

  (func (export "proxy_on_delete") (param $ctx i32)
    (call $trace (i32.const 544) (i32.const 9)))
)
