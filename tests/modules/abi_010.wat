;; Shaped like a module built against the ABI 0.1.0 C++ SDK: proxy_abi_version_0_1_0, malloc,
;; two-parameter proxy_on_request_headers/proxy_on_response_headers (no end_of_stream),
;; proxy_get_configuration instead of a configuration buffer, proxy_continue_request instead of
;; proxy_continue_stream, and a missing header read as an empty value with Ok.
;;
;; Memory: 16/20 out-pointers, 256.. constants, 3968.. number formatting, 4096.. concat, 8192.. heap.
(module
  (import "env" "proxy_log" (func $proxy_log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_configuration" (func $get_configuration (param i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value" (func $get_hv (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $add_hv (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_continue_request" (func $continue_request (result i32)))

  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 8192))

  (data (i32.const 256) "configuration: ")        ;; 15
  (data (i32.const 272) "x-missing")              ;; 9
  (data (i32.const 288) "missing header status ") ;; 22
  (data (i32.const 320) "missing header size ")   ;; 20
  (data (i32.const 352) "x-abi")                  ;; 5
  (data (i32.const 360) "0.1.0")                  ;; 5
  (data (i32.const 368) "x-pause-continue")       ;; 16
  (data (i32.const 384) "x-abi-response")         ;; 14

  (func (export "proxy_abi_version_0_1_0"))

  (func (export "malloc") (param $size i32) (result i32)
    (local $ptr i32)
    (local.set $ptr (global.get $heap))
    (global.set $heap (i32.and (i32.add (i32.add (local.get $ptr) (local.get $size)) (i32.const 7)) (i32.const -8)))
    (local.get $ptr))

  (func $log2 (param $level i32) (param $p1 i32) (param $n1 i32) (param $p2 i32) (param $n2 i32)
    (memory.copy (i32.const 4096) (local.get $p1) (local.get $n1))
    (memory.copy (i32.add (i32.const 4096) (local.get $n1)) (local.get $p2) (local.get $n2))
    (drop (call $proxy_log (local.get $level) (i32.const 4096) (i32.add (local.get $n1) (local.get $n2)))))

  ;; single digit is enough for statuses and sizes used here
  (func $digit (param $v i32) (result i32)
    (i32.store8 (i32.const 3968) (i32.add (i32.const 48) (local.get $v)))
    (i32.const 1))

  (func (export "proxy_on_context_create") (param i32 i32))

  (func (export "proxy_on_configure") (param $root i32) (param $size i32) (result i32)
    (drop (call $get_configuration (i32.const 16) (i32.const 20)))
    (call $log2 (i32.const 2) (i32.const 256) (i32.const 15) (i32.load (i32.const 16)) (i32.load (i32.const 20)))
    (i32.const 1))

  (func (export "proxy_on_request_headers") (param $ctx i32) (param $n i32) (result i32)
    (i32.store (i32.const 20) (i32.const 9))
    (call $log2 (i32.const 2) (i32.const 288) (i32.const 22) (i32.const 3968)
      (call $digit (call $get_hv (i32.const 0) (i32.const 272) (i32.const 9) (i32.const 16) (i32.const 20))))
    (call $log2 (i32.const 2) (i32.const 320) (i32.const 20) (i32.const 3968) (call $digit (i32.load (i32.const 20))))
    (drop (call $add_hv (i32.const 0) (i32.const 352) (i32.const 5) (i32.const 360) (i32.const 5)))
    ;; resume from inside the callback that pauses, the ABI 0.1.0 way
    (drop (call $get_hv (i32.const 0) (i32.const 368) (i32.const 16) (i32.const 16) (i32.const 20)))
    (if (i32.load (i32.const 20))
      (then
        (drop (call $continue_request))
        (return (i32.const 1))))
    (i32.const 0))

  (func (export "proxy_on_response_headers") (param $ctx i32) (param $n i32) (result i32)
    (drop (call $add_hv (i32.const 2) (i32.const 384) (i32.const 14) (i32.const 360) (i32.const 5)))
    (i32.const 0))
)
