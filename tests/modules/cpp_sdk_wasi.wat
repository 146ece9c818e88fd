;; Shaped like an emscripten/wasi-libc "command" build of the C++ SDK: ABI 0.2.1, malloc, and a
;; _start that runs constructors and then calls proc_exit(0) as a command's exit does. It uses
;; WASI for stdio (printf/fprintf), clocks, randomness and the environment.
;;
;; Memory: 16/20 out-pointers, 32/36 environ sizes, 40 u64 clock, 48.. random bytes,
;; 64 iovec, 72 nwritten, 256.. constants, 3968.. number formatting, 8192.. bump heap.
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock_time_get (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get" (func $random_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $environ_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (import "env" "proxy_log" (func $proxy_log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $add_hv (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_property" (func $get_property (param i32 i32 i32 i32) (result i32)))

  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 8192))
  (global $started (mut i32) (i32.const 0))

  (data (i32.const 256) "hello from stdout\n")  ;; 18
  (data (i32.const 288) "oops on stderr\n")     ;; 15
  (data (i32.const 320) "x-clock")              ;; 7
  (data (i32.const 336) "set")                  ;; 3
  (data (i32.const 352) "x-env-count")          ;; 11
  (data (i32.const 368) "x-random-errno")       ;; 14
  (data (i32.const 384) "plugin_name\00")       ;; 12
  (data (i32.const 400) "x-plugin-name")        ;; 13
  (data (i32.const 416) "x-started")            ;; 9
  (data (i32.const 432) "started in _start\n")  ;; 18

  (func (export "proxy_abi_version_0_2_1"))

  (func (export "malloc") (param $size i32) (result i32)
    (local $ptr i32)
    (local.set $ptr (global.get $heap))
    (global.set $heap (i32.and (i32.add (i32.add (local.get $ptr) (local.get $size)) (i32.const 7)) (i32.const -8)))
    (local.get $ptr))

  (func $write (param $fd i32) (param $p i32) (param $n i32)
    (i32.store (i32.const 64) (local.get $p))
    (i32.store (i32.const 68) (local.get $n))
    (drop (call $fd_write (local.get $fd) (i32.const 64) (i32.const 1) (i32.const 72))))

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

  ;; A command: constructors (stdio is allowed while starting), then exit(0).
  (func (export "_start")
    (global.set $started (i32.const 1))
    (call $write (i32.const 1) (i32.const 432) (i32.const 18))
    (call $proc_exit (i32.const 0)))

  (func (export "proxy_on_context_create") (param i32 i32))

  (func (export "proxy_on_request_headers") (param $ctx i32) (param $n i32) (param $eos i32) (result i32)
    (call $write (i32.const 1) (i32.const 256) (i32.const 18))
    (call $write (i32.const 2) (i32.const 288) (i32.const 15))
    (drop (call $clock_time_get (i32.const 0) (i64.const 1000) (i32.const 40)))
    (if (i64.ne (i64.load (i32.const 40)) (i64.const 0))
      (then (drop (call $add_hv (i32.const 0) (i32.const 320) (i32.const 7) (i32.const 336) (i32.const 3)))))
    (drop (call $environ_sizes_get (i32.const 32) (i32.const 36)))
    (drop (call $add_hv (i32.const 0) (i32.const 352) (i32.const 11) (i32.const 3968) (call $utoa (i32.load (i32.const 32)))))
    (drop (call $add_hv (i32.const 0) (i32.const 368) (i32.const 14) (i32.const 3968)
      (call $utoa (call $random_get (i32.const 48) (i32.const 8)))))
    (if (i32.eqz (call $get_property (i32.const 384) (i32.const 12) (i32.const 16) (i32.const 20)))
      (then (drop (call $add_hv (i32.const 0) (i32.const 400) (i32.const 13) (i32.load (i32.const 16)) (i32.load (i32.const 20))))))
    (drop (call $add_hv (i32.const 0) (i32.const 416) (i32.const 9) (i32.const 3968) (call $utoa (global.get $started))))
    (i32.const 0))
)
