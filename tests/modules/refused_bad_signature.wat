;; Refused by Envoy: ABI 0.1.0, whose proxy_on_request_headers is (context_id, headers) -> action, but
;; exported with the 0.2.x shape (context_id, headers, end_of_stream) -> action. Envoy's V8 checks every
;; callback's type against the ABI the module declares and refuses the VM ("Bad function signature").
(module
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 4096))
  (func (export "proxy_abi_version_0_1_0"))
  (func (export "proxy_on_memory_allocate") (param $size i32) (result i32)
    (local $ptr i32)
    (local.set $ptr (global.get $heap))
    (global.set $heap (i32.add (local.get $ptr) (i32.and (i32.add (local.get $size) (i32.const 7)) (i32.const -8))))
    (local.get $ptr))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    i32.const 0))
