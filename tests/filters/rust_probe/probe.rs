//! rust_probe: a proxy-wasm ABI 0.2.1 HTTP filter in Rust, written against the ABI itself
//! (proxy-wasm/spec, abi-versions/v0.2.1): no crates, `#![no_std]`, host functions imported from
//! `env`. Built with `rustc --target wasm32-unknown-unknown --crate-type cdylib`.
//!
//! It reports what the host tells a filter about itself:
//!   - each request logs one line at every level, trace to critical, so the host's filtering of
//!     filter logs shows, and proxy_get_log_level is returned as `x-rust-log-level`;
//!   - the context ids the host gave (`x-rust-context`: `STREAM/ROOT`);
//!   - properties: `x-rust-cluster` (`xds.cluster_name`), `x-rust-route` (`xds.route_name`),
//!     `x-rust-plugin` (`plugin_name`), each `absent` when the host has none, and `x-rust-node-id`, the
//!     first field of `xds.node` (the bootstrap's Node message, serialized: field 1 is its id);
//!   - with `tick` in the configuration, a 20 ms timer: every proxy_on_tick logs `rust_probe tick N`,
//!     and `x-rust-ticks` says how many ticks came before the request;
//!   - with `reject` in the configuration, proxy_on_configure returns false.

#![no_std]

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    core::arch::wasm32::unreachable()
}

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_log(level: u32, data: *const u8, size: usize) -> u32;
    fn proxy_get_log_level(level: *mut u32) -> u32;
    fn proxy_get_buffer_bytes(buffer: u32, start: usize, max: usize, data: *mut *mut u8, size: *mut usize) -> u32;
    fn proxy_add_header_map_value(map: u32, key: *const u8, key_size: usize, value: *const u8, value_size: usize) -> u32;
    fn proxy_get_property(path: *const u8, path_size: usize, data: *mut *mut u8, size: *mut usize) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
}

const OK: u32 = 0;
const PLUGIN_CONFIGURATION: u32 = 7;
const RESPONSE_HEADERS: u32 = 2;

// ---- memory: a bump arena; the host's copies (configuration, properties) are small and few ----

const ARENA_SIZE: usize = 1 << 20;
static mut ARENA: [u8; ARENA_SIZE] = [0; ARENA_SIZE];
static mut ARENA_TOP: usize = 0;

#[no_mangle]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    unsafe {
        let start = (ARENA_TOP + 7) & !7;
        if size > ARENA_SIZE - start {
            // Recycle: nothing the host handed us earlier is kept past the callback that read it.
            ARENA_TOP = 0;
            if size > ARENA_SIZE {
                return core::ptr::null_mut();
            }
            ARENA_TOP = size;
            return core::ptr::addr_of_mut!(ARENA) as *mut u8;
        }
        ARENA_TOP = start + size;
        (core::ptr::addr_of_mut!(ARENA) as *mut u8).add(start)
    }
}

// ---- text without an allocator ----

struct Text {
    buf: [u8; 256],
    len: usize,
}

impl Text {
    fn new() -> Text {
        Text { buf: [0; 256], len: 0 }
    }
    fn add(&mut self, bytes: &[u8]) -> &mut Text {
        for &b in bytes {
            if self.len < self.buf.len() {
                self.buf[self.len] = b;
                self.len += 1;
            }
        }
        self
    }
    fn num(&mut self, mut v: u32) -> &mut Text {
        let mut digits = [0u8; 10];
        let mut n = 0;
        loop {
            digits[n] = b'0' + (v % 10) as u8;
            n += 1;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        while n > 0 {
            n -= 1;
            self.add(&digits[n..n + 1]);
        }
        self
    }
    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

fn log(level: u32, text: &[u8]) {
    unsafe {
        proxy_log(level, text.as_ptr(), text.len());
    }
}

fn add_response_header(key: &[u8], value: &[u8]) {
    unsafe {
        proxy_add_header_map_value(RESPONSE_HEADERS, key.as_ptr(), key.len(), value.as_ptr(), value.len());
    }
}

/// A property by its path segments (the ABI joins them with NUL), as a slice of the arena.
fn property(path: &[u8]) -> Option<&'static [u8]> {
    let mut data: *mut u8 = core::ptr::null_mut();
    let mut size: usize = 0;
    let status = unsafe { proxy_get_property(path.as_ptr(), path.len(), &mut data, &mut size) };
    if status != OK || data.is_null() {
        return None;
    }
    Some(unsafe { core::slice::from_raw_parts(data, size) })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

// ---- state: one plugin per VM in these tests ----

static mut ROOT_CONTEXT: u32 = 0;
static mut TICKS: u32 = 0;

// ---- callbacks ----

#[no_mangle]
pub extern "C" fn proxy_abi_version_0_2_1() {}

#[no_mangle]
pub extern "C" fn proxy_on_vm_start(_root: u32, _size: usize) -> u32 {
    1
}

#[no_mangle]
pub extern "C" fn proxy_on_context_create(context: u32, parent: u32) {
    if parent == 0 {
        unsafe { ROOT_CONTEXT = context };
    }
}

#[no_mangle]
pub extern "C" fn proxy_on_configure(_root: u32, size: usize) -> u32 {
    let mut data: *mut u8 = core::ptr::null_mut();
    let mut got: usize = 0;
    let config: &[u8] = if size > 0
        && unsafe { proxy_get_buffer_bytes(PLUGIN_CONFIGURATION, 0, size, &mut data, &mut got) } == OK
        && !data.is_null()
    {
        unsafe { core::slice::from_raw_parts(data, got) }
    } else {
        &[]
    };
    if contains(config, b"reject") {
        log(3, b"rust_probe: configuration rejected");
        return 0;
    }
    if contains(config, b"tick") {
        unsafe { proxy_set_tick_period_milliseconds(20) };
    }
    1
}

#[no_mangle]
pub extern "C" fn proxy_on_tick(_root: u32) {
    let n = unsafe {
        TICKS += 1;
        TICKS
    };
    log(2, Text::new().add(b"rust_probe tick ").num(n).bytes());
}

const LEVELS: [&[u8]; 6] = [b"trace", b"debug", b"info", b"warn", b"error", b"critical"];

#[no_mangle]
pub extern "C" fn proxy_on_request_headers(context: u32, _headers: usize, _eos: u32) -> u32 {
    for (level, name) in LEVELS.iter().enumerate() {
        log(level as u32, Text::new().add(b"rust_probe ").add(name).add(b" line of stream ").num(context).bytes());
    }
    0
}

#[no_mangle]
pub extern "C" fn proxy_on_response_headers(context: u32, _headers: usize, _eos: u32) -> u32 {
    let mut level: u32 = 99;
    unsafe { proxy_get_log_level(&mut level) };
    add_response_header(b"x-rust-log-level", Text::new().num(level).bytes());
    let root = unsafe { ROOT_CONTEXT };
    add_response_header(b"x-rust-context", Text::new().num(context).add(b"/").num(root).bytes());
    add_response_header(b"x-rust-ticks", Text::new().num(unsafe { TICKS }).bytes());
    let properties: [(&[u8], &[u8]); 3] = [
        (b"x-rust-cluster", b"xds\0cluster_name"),
        (b"x-rust-route", b"xds\0route_name"),
        (b"x-rust-plugin", b"plugin_name"),
    ];
    for (name, path) in properties.iter() {
        let value = property(path).unwrap_or(b"absent");
        add_response_header(name, value);
    }
    let node_id = property(b"xds\0node").and_then(first_string_field).unwrap_or(b"absent");
    add_response_header(b"x-rust-node-id", node_id);
    0
}

/// Field 1 of a serialized protobuf message when it comes first and is length-delimited (tag 0x0a)
/// with a one-byte length, which is all an id needs here.
fn first_string_field(message: &[u8]) -> Option<&[u8]> {
    if message.len() < 2 || message[0] != 0x0a || message[1] >= 0x80 {
        return None;
    }
    message.get(2..2 + message[1] as usize)
}
