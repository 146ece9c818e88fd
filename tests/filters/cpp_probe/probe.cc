// cpp_probe: a proxy-wasm ABI 0.2.1 HTTP filter in C++ (libc++, a WASI reactor like the C++ SDK's
// output) that reports what the host did to each stream, so a test can see it from the outside.
//
// Built with zig's clang++: `python -m ziglang c++ --target=wasm32-wasi -mexec-model=reactor`.
// Written against the ABI (proxy-wasm/spec, abi-versions/v0.2.1), not against an SDK.
//
// The plugin configuration is a list of words:
//   crash         trap (`unreachable`) in proxy_on_request_headers
//   upper         uppercase every request body chunk in place (same length)
//   rewrite       buffer the whole response body and replace it with another text; the
//                 `content-length` of the upstream is removed unless `keep-length` is given too
//   call=NAME     proxy_http_call to cluster NAME from proxy_on_request_headers; the request waits
//                 for the answer, which is forwarded upstream as `x-probe-side-call`
//   reject        proxy_on_configure returns false
// Response headers added: x-probe-request-id, x-probe-forwarded-proto (as the filter saw the request),
// x-probe-saw-server, x-probe-saw-date (whether the upstream's response had them when the filter ran),
// x-probe-request-body (every proxy_on_request_body call as SIZE or SIZE+eos), x-probe-call.
// proxy_on_log logs, at info, one line with the request and response body calls of the stream.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#define EXPORT(name) extern "C" __attribute__((export_name(#name)))
#define IMPORT(name) extern "C" __attribute__((import_module("env"), import_name(#name)))

using u32 = uint32_t;

// ---- host functions ---------------------------------------------------------------------------

IMPORT(proxy_log) u32 proxy_log(u32 level, const char *data, size_t size);
IMPORT(proxy_get_buffer_bytes)
u32 proxy_get_buffer_bytes(u32 buffer, size_t start, size_t max_size, char **data, size_t *size);
IMPORT(proxy_set_buffer_bytes)
u32 proxy_set_buffer_bytes(u32 buffer, size_t start, size_t size, const char *data, size_t data_size);
IMPORT(proxy_get_header_map_value)
u32 proxy_get_header_map_value(u32 map, const char *key, size_t key_size, char **value, size_t *value_size);
IMPORT(proxy_add_header_map_value)
u32 proxy_add_header_map_value(u32 map, const char *key, size_t key_size, const char *value, size_t value_size);
IMPORT(proxy_remove_header_map_value) u32 proxy_remove_header_map_value(u32 map, const char *key, size_t key_size);
IMPORT(proxy_http_call)
u32 proxy_http_call(const char *upstream, size_t upstream_size, const char *headers, size_t headers_size,
                    const char *body, size_t body_size, const char *trailers, size_t trailers_size,
                    u32 timeout_ms, u32 *token);
IMPORT(proxy_set_effective_context) u32 proxy_set_effective_context(u32 context);
IMPORT(proxy_continue_stream) u32 proxy_continue_stream(u32 stream);

enum : u32 { LOG_INFO = 2, LOG_WARN = 3 };
enum : u32 { OK = 0 };
enum : u32 { CONTINUE = 0, PAUSE = 1 };
enum : u32 { REQUEST_BODY = 0, RESPONSE_BODY = 1, CALL_RESPONSE_BODY = 4, PLUGIN_CONFIGURATION = 7 };
enum : u32 { REQUEST_HEADERS = 0, RESPONSE_HEADERS = 2, CALL_RESPONSE_HEADERS = 6 };
enum : u32 { STREAM_REQUEST = 0 };

// ---- small wrappers -----------------------------------------------------------------------------

static void log(u32 level, std::string_view text) { proxy_log(level, text.data(), text.size()); }

// Host-returned memory comes from proxy_on_memory_allocate (malloc below), so it is ours to free.
static std::string take(char *data, size_t size) {
    std::string out(data ? data : "", data ? size : 0);
    free(data);
    return out;
}

static bool header(u32 map, std::string_view key, std::string *value) {
    char *data = nullptr;
    size_t size = 0;
    if (proxy_get_header_map_value(map, key.data(), key.size(), &data, &size) != OK) return false;
    *value = take(data, size);
    return true;
}

static void add_header(u32 map, std::string_view key, std::string_view value) {
    proxy_add_header_map_value(map, key.data(), key.size(), value.data(), value.size());
}

static std::string buffer(u32 type, size_t size) {
    char *data = nullptr;
    size_t got = 0;
    if (size == 0 || proxy_get_buffer_bytes(type, 0, size, &data, &got) != OK) return "";
    return take(data, got);
}

// A header map as the ABI serializes it: count, then (key size, value size) pairs, then each key
// and value followed by a NUL.
static std::string serialize(const std::vector<std::pair<std::string, std::string>> &pairs) {
    std::string out;
    auto put32 = [&out](u32 v) {
        for (int i = 0; i < 4; i++) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
    };
    put32(static_cast<u32>(pairs.size()));
    for (const auto &[k, v] : pairs) {
        put32(static_cast<u32>(k.size()));
        put32(static_cast<u32>(v.size()));
    }
    for (const auto &[k, v] : pairs) {
        out += k;
        out.push_back('\0');
        out += v;
        out.push_back('\0');
    }
    return out;
}

// ---- state --------------------------------------------------------------------------------------

struct Config {
    bool crash = false, upper = false, rewrite = false, keep_length = false, reject = false;
    std::string call_cluster;  // empty: no side call
};

struct Body {
    std::vector<std::pair<size_t, bool>> calls;  // (body_size, end_of_stream) of each callback
    std::string describe() const {
        std::string out;
        for (const auto &[size, eos] : calls) {
            if (!out.empty()) out += ',';
            out += std::to_string(size);
            if (eos) out += "+eos";
        }
        return out.empty() ? "none" : out;
    }
};

struct Stream {
    u32 root = 0;
    std::string request_id = "absent", forwarded_proto = "absent", call = "none";
    bool saw_server = false, saw_date = false;
    Body request, response;
};

// Global constructors run from _initialize, as in the C++ SDK: these maps exist before any callback.
static std::unordered_map<u32, Config> configs;  // root context -> its plugin's configuration
static std::unordered_map<u32, Stream> streams;
static std::unordered_map<u32, u32> pending_calls;  // http call token -> stream context

static const Config &config_of(const Stream &s) { return configs[s.root]; }

static Config parse(std::string_view text) {
    Config c;
    while (!text.empty()) {
        size_t space = text.find(' ');
        std::string_view word = text.substr(0, space);
        text = space == std::string_view::npos ? std::string_view() : text.substr(space + 1);
        if (word == "crash") c.crash = true;
        else if (word == "upper") c.upper = true;
        else if (word == "rewrite") c.rewrite = true;
        else if (word == "keep-length") c.keep_length = true;
        else if (word == "reject") c.reject = true;
        else if (word.substr(0, 5) == "call=") c.call_cluster = std::string(word.substr(5));
    }
    return c;
}

// ---- callbacks ----------------------------------------------------------------------------------

EXPORT(proxy_abi_version_0_2_1) void proxy_abi_version_0_2_1() {}

EXPORT(proxy_on_memory_allocate) void *proxy_on_memory_allocate(size_t size) { return malloc(size); }

EXPORT(proxy_on_vm_start) u32 proxy_on_vm_start(u32, size_t) { return 1; }

EXPORT(proxy_on_context_create) void proxy_on_context_create(u32 context, u32 parent) {
    if (parent == 0) {
        configs[context] = Config{};
    } else {
        streams[context].root = parent;
    }
}

EXPORT(proxy_on_configure) u32 proxy_on_configure(u32 root, size_t size) {
    Config c = parse(buffer(PLUGIN_CONFIGURATION, size));
    if (c.reject) {
        log(LOG_WARN, "cpp_probe: configuration rejected");
        return 0;
    }
    configs[root] = c;
    return 1;
}

EXPORT(proxy_on_request_headers) u32 proxy_on_request_headers(u32 context, size_t, u32) {
    Stream &s = streams[context];
    const Config &c = config_of(s);
    if (c.crash) __builtin_trap();
    header(REQUEST_HEADERS, "x-request-id", &s.request_id);
    header(REQUEST_HEADERS, "x-forwarded-proto", &s.forwarded_proto);
    if (c.call_cluster.empty()) return CONTINUE;
    std::string headers = serialize({{":method", "GET"}, {":path", "/side-call"}, {":authority", "side"}});
    u32 token = 0;
    u32 status = proxy_http_call(c.call_cluster.data(), c.call_cluster.size(), headers.data(), headers.size(),
                                 nullptr, 0, nullptr, 0, 5000, &token);
    if (status != OK) {
        s.call = "refused " + std::to_string(status);
        return CONTINUE;
    }
    pending_calls[token] = context;
    return PAUSE;
}

EXPORT(proxy_on_http_call_response)
void proxy_on_http_call_response(u32, u32 token, size_t headers, size_t body_size, size_t) {
    auto it = pending_calls.find(token);
    if (it == pending_calls.end()) return;
    u32 context = it->second;
    pending_calls.erase(it);
    Stream &s = streams[context];
    std::string status = "none";
    if (headers > 0) header(CALL_RESPONSE_HEADERS, ":status", &status);
    s.call = "status " + status + " body " + buffer(CALL_RESPONSE_BODY, body_size);
    // Back on the stream that waits, to add a header to its request and let it go.
    proxy_set_effective_context(context);
    add_header(REQUEST_HEADERS, "x-probe-side-call", s.call);
    proxy_continue_stream(STREAM_REQUEST);
}

EXPORT(proxy_on_request_body) u32 proxy_on_request_body(u32 context, size_t size, u32 end_of_stream) {
    Stream &s = streams[context];
    s.request.calls.emplace_back(size, end_of_stream != 0);
    if (config_of(s).upper && size > 0) {
        std::string chunk = buffer(REQUEST_BODY, size);
        for (char &ch : chunk)
            if (ch >= 'a' && ch <= 'z') ch = static_cast<char>(ch - 'a' + 'A');
        proxy_set_buffer_bytes(REQUEST_BODY, 0, size, chunk.data(), chunk.size());
    }
    return CONTINUE;
}

EXPORT(proxy_on_response_headers) u32 proxy_on_response_headers(u32 context, size_t, u32) {
    Stream &s = streams[context];
    std::string ignored;
    s.saw_server = header(RESPONSE_HEADERS, "server", &ignored);
    s.saw_date = header(RESPONSE_HEADERS, "date", &ignored);
    add_header(RESPONSE_HEADERS, "x-probe-request-id", s.request_id);
    add_header(RESPONSE_HEADERS, "x-probe-forwarded-proto", s.forwarded_proto);
    add_header(RESPONSE_HEADERS, "x-probe-saw-server", s.saw_server ? "yes" : "no");
    add_header(RESPONSE_HEADERS, "x-probe-saw-date", s.saw_date ? "yes" : "no");
    add_header(RESPONSE_HEADERS, "x-probe-request-body", s.request.describe());
    add_header(RESPONSE_HEADERS, "x-probe-call", s.call);
    const Config &c = config_of(s);
    if (c.rewrite && !c.keep_length) proxy_remove_header_map_value(RESPONSE_HEADERS, "content-length", 14);
    return CONTINUE;
}

EXPORT(proxy_on_response_body) u32 proxy_on_response_body(u32 context, size_t size, u32 end_of_stream) {
    Stream &s = streams[context];
    s.response.calls.emplace_back(size, end_of_stream != 0);
    if (!config_of(s).rewrite) return CONTINUE;
    // Pausing in a body callback makes Envoy buffer: the next call sees everything so far.
    if (!end_of_stream) return PAUSE;
    std::string original = buffer(RESPONSE_BODY, size);
    std::string replaced = "rewritten by cpp_probe: the upstream sent " + std::to_string(original.size()) + " bytes\n";
    proxy_set_buffer_bytes(RESPONSE_BODY, 0, size, replaced.data(), replaced.size());
    return CONTINUE;
}

EXPORT(proxy_on_done) u32 proxy_on_done(u32) { return 1; }

EXPORT(proxy_on_log) void proxy_on_log(u32 context) {
    auto it = streams.find(context);
    if (it == streams.end()) return;
    log(LOG_INFO, "cpp_probe stream " + std::to_string(context) + ": request body calls " +
                      it->second.request.describe() + "; response body calls " + it->second.response.describe());
}

EXPORT(proxy_on_delete) void proxy_on_delete(u32 context) {
    streams.erase(context);
    configs.erase(context);
}
