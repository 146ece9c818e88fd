;; A probe for proxy_get_property: the plugin configuration is the raw property path (NUL
;; separated). The probe reads it in on_configure (root context), on_request_headers,
;; on_response_headers and on_log and stores the status and the raw value in shared data under
;; "<phase>:status" / "<phase>:value", so tests can compare exact bytes.
;;
;; Memory: 16/20 out-pointers, 32 status scratch, 256.. constants, 8192.. heap.
(module
  (import "env" "proxy_get_property" (func $get_property (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_property" (func $set_property (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_buffer_bytes" (func $get_buffer_bytes (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_shared_data" (func $set_shared (param i32 i32 i32 i32 i32) (result i32)))

  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 8192))
  (global $path_ptr (mut i32) (i32.const 0))
  (global $path_len (mut i32) (i32.const 0))

  (data (i32.const 256) "configure:status")   ;; 16
  (data (i32.const 288) "configure:value")    ;; 15
  (data (i32.const 320) "request:status")     ;; 14
  (data (i32.const 352) "request:value")      ;; 13
  (data (i32.const 384) "response:status")    ;; 15
  (data (i32.const 416) "response:value")     ;; 14
  (data (i32.const 448) "log:status")         ;; 10
  (data (i32.const 480) "log:value")          ;; 9
  (data (i32.const 512) "my_state")           ;; 8
  (data (i32.const 528) "set by filter")      ;; 13
  (data (i32.const 544) "set:status")         ;; 10

  (func (export "proxy_abi_version_0_2_1"))

  (func (export "malloc") (param $size i32) (result i32)
    (local $ptr i32)
    (local.set $ptr (global.get $heap))
    (global.set $heap (i32.and (i32.add (i32.add (local.get $ptr) (local.get $size)) (i32.const 7)) (i32.const -8)))
    (local.get $ptr))

  ;; status as one byte, value as-is (an empty value when the call failed)
  (func $probe (param $status_key i32) (param $status_len i32) (param $value_key i32) (param $value_len i32)
    (i32.store (i32.const 16) (i32.const 0))
    (i32.store (i32.const 20) (i32.const 0))
    (i32.store8 (i32.const 32)
      (call $get_property (global.get $path_ptr) (global.get $path_len) (i32.const 16) (i32.const 20)))
    (drop (call $set_shared (local.get $status_key) (local.get $status_len) (i32.const 32) (i32.const 1) (i32.const 0)))
    (drop (call $set_shared (local.get $value_key) (local.get $value_len)
      (i32.load (i32.const 16)) (i32.load (i32.const 20)) (i32.const 0))))

  (func (export "proxy_on_context_create") (param i32 i32))

  (func (export "proxy_on_configure") (param $root i32) (param $size i32) (result i32)
    (drop (call $get_buffer_bytes (i32.const 7) (i32.const 0) (local.get $size) (i32.const 16) (i32.const 20)))
    (global.set $path_ptr (i32.load (i32.const 16)))
    (global.set $path_len (i32.load (i32.const 20)))
    (call $probe (i32.const 256) (i32.const 16) (i32.const 288) (i32.const 15))
    (i32.const 1))

  (func (export "proxy_on_request_headers") (param $ctx i32) (param $n i32) (param $eos i32) (result i32)
    (i32.store8 (i32.const 32)
      (call $set_property (i32.const 512) (i32.const 8) (i32.const 528) (i32.const 13)))
    (drop (call $set_shared (i32.const 544) (i32.const 10) (i32.const 32) (i32.const 1) (i32.const 0)))
    (call $probe (i32.const 320) (i32.const 14) (i32.const 352) (i32.const 13))
    (i32.const 0))

  (func (export "proxy_on_response_headers") (param $ctx i32) (param $n i32) (param $eos i32) (result i32)
    (call $probe (i32.const 384) (i32.const 15) (i32.const 416) (i32.const 14))
    (i32.const 0))

  (func (export "proxy_on_log") (param $ctx i32)
    (call $probe (i32.const 448) (i32.const 10) (i32.const 480) (i32.const 9)))
)
