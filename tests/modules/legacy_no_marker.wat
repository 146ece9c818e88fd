;; A pre-marker module: proxy_on_* callbacks but no proxy_abi_version_* export. The host runs it
;; with the ABI 0.1.0 dialect (two-parameter header callbacks) and warns that Envoy refuses it.
(module
  (import "env" "proxy_add_header_map_value" (func $add_hv (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 8192))
  (data (i32.const 256) "x-legacy")  ;; 8
  (data (i32.const 272) "yes")       ;; 3
  (func (export "malloc") (param $size i32) (result i32)
    (local $ptr i32)
    (local.set $ptr (global.get $heap))
    (global.set $heap (i32.add (local.get $ptr) (local.get $size)))
    (local.get $ptr))
  (func (export "proxy_on_request_headers") (param $ctx i32) (param $n i32) (result i32)
    (drop (call $add_hv (i32.const 0) (i32.const 256) (i32.const 8) (i32.const 272) (i32.const 3)))
    (i32.const 0))
)
