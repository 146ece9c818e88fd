/*
 * example-filter: a proxy-wasm (ABI 0.2.1) HTTP filter in freestanding C.
 *
 * It adds one response header, `resp-header-demo: added by our filter` unless
 * the plugin configuration names another one:
 *
 *     {"header": "x-name", "value": "v"}
 *
 * Both fields are optional. A configuration that is not such a JSON object is
 * rejected: proxy_on_configure logs a warning and returns 0, which tells the
 * host that the plugin failed to start, so Envoy refuses the filter instead of
 * silently serving requests with a header nobody asked for.
 *
 * There is no libc: the module must import nothing but the proxy-wasm host
 * functions from `env`, so the few things libc would give us (an allocator,
 * memcpy, memset) are written out below. No header is included either, so the
 * same source builds with emscripten's emcc and with any plain clang.
 */

typedef __UINT8_TYPE__ u8;
typedef __UINT32_TYPE__ u32;
typedef __SIZE_TYPE__ size_t;
typedef __UINTPTR_TYPE__ uintptr_t;

#define EXPORT(type, name) __attribute__((export_name(#name))) type name
#define IMPORT(type, name) __attribute__((import_module("env"), import_name(#name))) type name

/* ---- host functions (proxy-wasm ABI 0.2.1) ---------------------------- */

enum { LOG_WARN = 3 };
enum { STATUS_OK = 0 };
enum { ACTION_CONTINUE = 0 };
enum { BUFFER_PLUGIN_CONFIGURATION = 7 };
enum { MAP_HTTP_RESPONSE_HEADERS = 2 };

IMPORT(u32, proxy_log)(u32 level, const char *message, size_t size);
IMPORT(u32, proxy_get_buffer_bytes)(u32 buffer, size_t start, size_t max_size,
                                    u8 **return_data, size_t *return_size);
IMPORT(u32, proxy_add_header_map_value)(u32 map, const u8 *key, size_t key_size,
                                        const u8 *value, size_t value_size);

/* ---- libc stand-ins ---------------------------------------------------- */

/* Non-static on purpose: clang may emit calls to these for struct copies, and
 * -ffreestanding stops it from turning these very loops back into such calls. */
void *memcpy(void *dst, const void *src, size_t n) {
    u8 *d = dst;
    const u8 *s = src;
    while (n--) *d++ = *s++;
    return dst;
}

void *memset(void *dst, int c, size_t n) {
    u8 *d = dst;
    while (n--) *d++ = (u8)c;
    return dst;
}

static size_t cstrlen(const char *s) {
    size_t n = 0;
    while (s[n]) n++;
    return n;
}

/* ---- allocator --------------------------------------------------------- */

/*
 * A bump allocator with a best-fit free list. The host calls
 * proxy_on_memory_allocate for every buffer it hands us (the plugin
 * configuration), and we allocate one small record per context, so blocks are
 * few and short-lived: splitting and coalescing would cost more code than the
 * memory they could save.
 */
typedef struct block {
    u32 size;            /* payload bytes, a multiple of 8 */
    struct block *next;  /* free-list link, meaningful only while free */
} block;

#define HEADER 8u
#define PAGE 65536ull
#define MAX_ALLOC 0x40000000u

extern u8 __heap_base; /* first byte after data and stack, from the linker */
static uintptr_t heap_top;
static block *free_list;

static void *alloc(size_t n) {
    if (n > MAX_ALLOC) return 0;
    n = (n + 7u) & ~(size_t)7u;
    if (n == 0) n = 8;

    block **best = 0;
    for (block **link = &free_list; *link; link = &(*link)->next)
        if ((*link)->size >= n && (!best || (*link)->size < (*best)->size)) best = link;
    if (best) {
        block *b = *best;
        *best = b->next;
        return (u8 *)b + HEADER;
    }

    if (!heap_top) heap_top = ((uintptr_t)&__heap_base + 7u) & ~(uintptr_t)7u;
    /* 64-bit arithmetic: a full 4 GiB memory would wrap a 32-bit size. */
    unsigned long long end = (unsigned long long)heap_top + HEADER + n;
    unsigned long long have = (unsigned long long)__builtin_wasm_memory_size(0) * PAGE;
    if (end > have) {
        size_t pages = (size_t)((end - have + PAGE - 1) / PAGE);
        if (__builtin_wasm_memory_grow(0, pages) == (size_t)-1) return 0;
    }
    block *b = (block *)heap_top;
    b->size = (u32)n;
    heap_top = (uintptr_t)end;
    return (u8 *)b + HEADER;
}

static void release(void *p) {
    if (!p) return;
    block *b = (block *)((u8 *)p - HEADER);
    b->next = free_list;
    free_list = b;
}

/* ---- logging ----------------------------------------------------------- */

typedef struct {
    char buf[256];
    size_t len;
} message;

static void msg_add(message *m, const char *s, size_t n) {
    while (n-- && m->len < sizeof m->buf) m->buf[m->len++] = *s++;
}

static void msg_str(message *m, const char *s) { msg_add(m, s, cstrlen(s)); }

static void msg_uint(message *m, u32 v) {
    char digits[10];
    size_t n = 0;
    do digits[n++] = (char)('0' + v % 10); while (v /= 10);
    while (n) msg_add(m, &digits[--n], 1);
}

static void log_str(u32 level, const char *s) { proxy_log(level, s, cstrlen(s)); }

/* ---- configuration ----------------------------------------------------- */

static const char DEFAULT_NAME[] = "resp-header-demo";
static const char DEFAULT_VALUE[] = "added by our filter";

/* A configuration larger than this is a mistake, not a header. */
#define MAX_CONFIG 65536u
#define MAX_DEPTH 32

typedef struct {
    const u8 *start, *p, *end;
    const char *error; /* first problem found; parsing stops there */
} reader;

typedef struct {
    u8 *data; /* decoded bytes, or 0 when the field was absent */
    size_t len;
} field;

static int fail(reader *r, const char *why) {
    if (!r->error) r->error = why;
    return 0;
}

static void skip_ws(reader *r) {
    while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r')) r->p++;
}

static int hex_digit(u8 c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int read_hex4(reader *r, u32 *out) {
    if (r->end - r->p < 4) return fail(r, "truncated \\u escape");
    u32 v = 0;
    for (int i = 0; i < 4; i++) {
        int d = hex_digit(*r->p++);
        if (d < 0) return fail(r, "bad \\u escape");
        v = v << 4 | (u32)d;
    }
    *out = v;
    return 1;
}

static size_t put_utf8(u8 *out, u32 cp) {
    if (cp < 0x80) { out[0] = (u8)cp; return 1; }
    if (cp < 0x800) {
        out[0] = (u8)(0xC0 | cp >> 6);
        out[1] = (u8)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (u8)(0xE0 | cp >> 12);
        out[1] = (u8)(0x80 | (cp >> 6 & 0x3F));
        out[2] = (u8)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (u8)(0xF0 | cp >> 18);
    out[1] = (u8)(0x80 | (cp >> 12 & 0x3F));
    out[2] = (u8)(0x80 | (cp >> 6 & 0x3F));
    out[3] = (u8)(0x80 | (cp & 0x3F));
    return 4;
}

/*
 * Reads a JSON string at r->p. With out != 0 the decoded bytes go there; the
 * caller sizes it to the rest of the input, which no decoding can exceed
 * (every escape is at least as long as the UTF-8 it stands for).
 */
static int read_string(reader *r, u8 *out, size_t *out_len) {
    size_t n = 0;
    if (r->p >= r->end || *r->p != '"') return fail(r, "expected a string");
    r->p++;
    for (;;) {
        if (r->p >= r->end) return fail(r, "unterminated string");
        u8 c = *r->p++;
        if (c == '"') break;
        if (c < 0x20) return fail(r, "control character in string");
        if (c != '\\') {
            if (out) out[n] = c;
            n++;
            continue;
        }
        if (r->p >= r->end) return fail(r, "unterminated string");
        u8 e = *r->p++;
        u8 decoded[4];
        size_t len = 1;
        switch (e) {
        case '"': case '\\': case '/': decoded[0] = e; break;
        case 'b': decoded[0] = '\b'; break;
        case 'f': decoded[0] = '\f'; break;
        case 'n': decoded[0] = '\n'; break;
        case 'r': decoded[0] = '\r'; break;
        case 't': decoded[0] = '\t'; break;
        case 'u': {
            u32 cp;
            if (!read_hex4(r, &cp)) return 0;
            if (cp >= 0xDC00 && cp <= 0xDFFF) return fail(r, "lone low surrogate");
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                u32 lo;
                if (r->end - r->p < 2 || r->p[0] != '\\' || r->p[1] != 'u')
                    return fail(r, "lone high surrogate");
                r->p += 2;
                if (!read_hex4(r, &lo)) return 0;
                if (lo < 0xDC00 || lo > 0xDFFF) return fail(r, "lone high surrogate");
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            len = put_utf8(decoded, cp);
            break;
        }
        default:
            return fail(r, "bad escape in string");
        }
        if (out) memcpy(out + n, decoded, len);
        n += len;
    }
    if (out_len) *out_len = n;
    return 1;
}

static int is_digit(u8 c) { return c >= '0' && c <= '9'; }

static int skip_digits(reader *r) {
    if (r->p >= r->end || !is_digit(*r->p)) return fail(r, "bad number");
    while (r->p < r->end && is_digit(*r->p)) r->p++;
    return 1;
}

static int skip_number(reader *r) {
    if (r->p < r->end && *r->p == '-') r->p++;
    if (r->p < r->end && *r->p == '0') r->p++;
    else if (!skip_digits(r)) return 0;
    if (r->p < r->end && *r->p == '.') {
        r->p++;
        if (!skip_digits(r)) return 0;
    }
    if (r->p < r->end && (*r->p == 'e' || *r->p == 'E')) {
        r->p++;
        if (r->p < r->end && (*r->p == '+' || *r->p == '-')) r->p++;
        if (!skip_digits(r)) return 0;
    }
    return 1;
}

static int skip_literal(reader *r, const char *word) {
    size_t n = cstrlen(word);
    if ((size_t)(r->end - r->p) < n) return fail(r, "unexpected token");
    for (size_t i = 0; i < n; i++)
        if (r->p[i] != (u8)word[i]) return fail(r, "unexpected token");
    r->p += n;
    return 1;
}

/* Validates and skips any JSON value: unknown fields may hold anything. */
static int skip_value(reader *r, int depth) {
    if (depth > MAX_DEPTH) return fail(r, "nested too deeply");
    skip_ws(r);
    if (r->p >= r->end) return fail(r, "expected a value");
    u8 c = *r->p;
    if (c == '"') return read_string(r, 0, 0);
    if (c == 't') return skip_literal(r, "true");
    if (c == 'f') return skip_literal(r, "false");
    if (c == 'n') return skip_literal(r, "null");
    if (c == '-' || is_digit(c)) return skip_number(r);
    if (c != '{' && c != '[') return fail(r, "unexpected token");
    u8 close = c == '{' ? '}' : ']';
    r->p++;
    skip_ws(r);
    if (r->p < r->end && *r->p == close) { r->p++; return 1; }
    for (;;) {
        if (close == '}') {
            skip_ws(r);
            if (!read_string(r, 0, 0)) return 0;
            skip_ws(r);
            if (r->p >= r->end || *r->p != ':') return fail(r, "expected ':'");
            r->p++;
        }
        if (!skip_value(r, depth + 1)) return 0;
        skip_ws(r);
        if (r->p < r->end && *r->p == ',') { r->p++; continue; }
        if (r->p < r->end && *r->p == close) { r->p++; return 1; }
        return fail(r, close == '}' ? "expected ',' or '}'" : "expected ',' or ']'");
    }
}

static int key_is(const u8 *key, size_t len, const char *word) {
    size_t n = cstrlen(word);
    if (len != n) return 0;
    for (size_t i = 0; i < n; i++)
        if (key[i] != (u8)word[i]) return 0;
    return 1;
}

/* RFC 9110 token characters: what a header name may be made of. */
static int is_tchar(u8 c) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c)) return 1;
    for (const char *s = "!#$%&'*+-.^_`|~"; *s; s++)
        if (c == (u8)*s) return 1;
    return 0;
}

/* Decodes one string field into fresh memory, freeing what it held before. */
static int read_field(reader *r, field *f) {
    if (r->p >= r->end || *r->p != '"') return fail(r, "\"header\" and \"value\" must be strings");
    u8 *out = alloc((size_t)(r->end - r->p));
    if (!out) return fail(r, "out of memory");
    size_t len = 0;
    if (!read_string(r, out, &len)) {
        release(out);
        return 0;
    }
    release(f->data); /* a repeated key: the last one wins, as in most JSON readers */
    f->data = out;
    f->len = len;
    return 1;
}

static int parse_config(reader *r, field *name, field *value, u32 *unknown_keys) {
    skip_ws(r);
    if (r->p >= r->end || *r->p != '{') return fail(r, "expected a JSON object");
    r->p++;
    skip_ws(r);
    if (r->p < r->end && *r->p == '}') {
        r->p++;
    } else {
        for (;;) {
            skip_ws(r);
            const u8 *key = r->p + 1;
            if (!read_string(r, 0, 0)) return 0;
            size_t key_len = (size_t)(r->p - 1 - key); /* raw bytes: our keys need no escapes */
            skip_ws(r);
            if (r->p >= r->end || *r->p != ':') return fail(r, "expected ':'");
            r->p++;
            skip_ws(r);
            if (key_is(key, key_len, "header")) {
                if (!read_field(r, name)) return 0;
            } else if (key_is(key, key_len, "value")) {
                if (!read_field(r, value)) return 0;
            } else {
                if (!skip_value(r, 1)) return 0;
                (*unknown_keys)++;
            }
            skip_ws(r);
            if (r->p < r->end && *r->p == ',') { r->p++; continue; }
            if (r->p < r->end && *r->p == '}') { r->p++; break; }
            return fail(r, "expected ',' or '}'");
        }
    }
    skip_ws(r);
    if (r->p != r->end) return fail(r, "trailing data after the object");

    if (name->data) {
        if (name->len == 0) return fail(r, "\"header\" is empty");
        for (size_t i = 0; i < name->len; i++) {
            if (!is_tchar(name->data[i])) return fail(r, "\"header\" is not a valid header name");
            /* Envoy stores header names lowercased (HTTP/2 demands it); match it. */
            if (name->data[i] >= 'A' && name->data[i] <= 'Z') name->data[i] += 'a' - 'A';
        }
    }
    if (value->data) {
        for (size_t i = 0; i < value->len; i++) {
            u8 c = value->data[i];
            if ((c < 0x20 && c != '\t') || c == 0x7F)
                return fail(r, "\"value\" holds a control character");
        }
    }
    return 1;
}

/* ---- contexts ---------------------------------------------------------- */

/*
 * One VM may run several plugins (root contexts), each with its own
 * configuration, and every HTTP stream gets a context whose parent is one of
 * them. Streams are many and short-lived, so they sit in a small hash table.
 */
typedef struct root {
    u32 id;
    const u8 *name, *value;
    size_t name_len, value_len;
    u8 *owned[2]; /* configured strings to free; 0 while using the defaults */
    struct root *next;
} root;

typedef struct stream {
    u32 id, root_id;
    struct stream *next;
} stream;

#define BUCKETS 64u

static root *roots;
static stream *streams[BUCKETS];

static root *find_root(u32 id) {
    for (root *r = roots; r; r = r->next)
        if (r->id == id) return r;
    return 0;
}

static void set_defaults(root *r) {
    release(r->owned[0]);
    release(r->owned[1]);
    r->owned[0] = r->owned[1] = 0;
    r->name = (const u8 *)DEFAULT_NAME;
    r->name_len = sizeof DEFAULT_NAME - 1;
    r->value = (const u8 *)DEFAULT_VALUE;
    r->value_len = sizeof DEFAULT_VALUE - 1;
}

static root *add_root(u32 id) {
    root *r = find_root(id);
    if (r) return r;
    r = alloc(sizeof *r);
    if (!r) return 0;
    memset(r, 0, sizeof *r);
    r->id = id;
    set_defaults(r);
    r->next = roots;
    roots = r;
    return r;
}

static stream **find_stream(u32 id) {
    stream **link = &streams[id % BUCKETS];
    while (*link && (*link)->id != id) link = &(*link)->next;
    return link;
}

/* ---- callbacks --------------------------------------------------------- */

EXPORT(void, proxy_abi_version_0_2_1)(void) {}

EXPORT(void *, proxy_on_memory_allocate)(size_t size) { return alloc(size); }

EXPORT(void, proxy_on_context_create)(u32 context_id, u32 parent_context_id) {
    if (parent_context_id == 0) {
        if (!add_root(context_id)) log_str(LOG_WARN, "example-filter: out of memory creating plugin context");
        return;
    }
    stream **link = find_stream(context_id);
    if (*link) {
        (*link)->root_id = parent_context_id;
        return;
    }
    stream *s = alloc(sizeof *s);
    if (!s) {
        /* The stream still works, with the default header. */
        log_str(LOG_WARN, "example-filter: out of memory creating stream context");
        return;
    }
    s->id = context_id;
    s->root_id = parent_context_id;
    s->next = 0;
    *link = s;
}

EXPORT(u32, proxy_on_vm_start)(u32 root_context_id, size_t vm_configuration_size) {
    (void)root_context_id;
    (void)vm_configuration_size;
    return 1;
}

EXPORT(u32, proxy_on_configure)(u32 root_context_id, size_t configuration_size) {
    root *rt = add_root(root_context_id);
    if (!rt) {
        log_str(LOG_WARN, "example-filter: out of memory reading the plugin configuration");
        return 0;
    }
    if (configuration_size == 0) {
        set_defaults(rt);
        return 1;
    }

    message m = {.len = 0};
    msg_str(&m, "example-filter: rejecting plugin configuration: ");
    if (configuration_size > MAX_CONFIG) {
        msg_str(&m, "larger than 65536 bytes");
        proxy_log(LOG_WARN, m.buf, m.len);
        return 0;
    }

    u8 *data = 0;
    size_t size = 0;
    if (proxy_get_buffer_bytes(BUFFER_PLUGIN_CONFIGURATION, 0, configuration_size, &data, &size) != STATUS_OK) {
        msg_str(&m, "the host did not hand it over");
        proxy_log(LOG_WARN, m.buf, m.len);
        return 0;
    }

    reader r = {.start = data, .p = data, .end = data + size, .error = 0};
    field name = {0, 0}, value = {0, 0};
    u32 unknown_keys = 0;
    int ok = parse_config(&r, &name, &value, &unknown_keys);
    if (!ok) {
        msg_str(&m, r.error);
        msg_str(&m, " at byte ");
        msg_uint(&m, (u32)(r.p - r.start));
        msg_str(&m, "; expected {\"header\": \"x-name\", \"value\": \"v\"}");
        proxy_log(LOG_WARN, m.buf, m.len);
        release(name.data);
        release(value.data);
    } else {
        if (unknown_keys) {
            /* Accept them so a newer configuration still loads, but a typo must not go unnoticed. */
            m.len = 0;
            msg_str(&m, "example-filter: ignoring ");
            msg_uint(&m, unknown_keys);
            msg_str(&m, " unknown key(s) in the plugin configuration; known: \"header\", \"value\"");
            proxy_log(LOG_WARN, m.buf, m.len);
        }
        set_defaults(rt);
        if (name.data) {
            rt->owned[0] = name.data;
            rt->name = name.data;
            rt->name_len = name.len;
        }
        if (value.data) {
            rt->owned[1] = value.data;
            rt->value = value.data;
            rt->value_len = value.len;
        }
    }
    release(data);
    return (u32)ok;
}

EXPORT(u32, proxy_on_request_headers)(u32 context_id, size_t num_headers, u32 end_of_stream) {
    (void)context_id;
    (void)num_headers;
    (void)end_of_stream;
    return ACTION_CONTINUE;
}

EXPORT(u32, proxy_on_response_headers)(u32 context_id, size_t num_headers, u32 end_of_stream) {
    (void)num_headers;
    (void)end_of_stream;
    stream *s = *find_stream(context_id);
    root *rt = s ? find_root(s->root_id) : 0;
    const u8 *name = rt ? rt->name : (const u8 *)DEFAULT_NAME;
    size_t name_len = rt ? rt->name_len : sizeof DEFAULT_NAME - 1;
    const u8 *value = rt ? rt->value : (const u8 *)DEFAULT_VALUE;
    size_t value_len = rt ? rt->value_len : sizeof DEFAULT_VALUE - 1;
    if (proxy_add_header_map_value(MAP_HTTP_RESPONSE_HEADERS, name, name_len, value, value_len) != STATUS_OK)
        log_str(LOG_WARN, "example-filter: the host refused to add the response header");
    return ACTION_CONTINUE;
}

EXPORT(u32, proxy_on_done)(u32 context_id) {
    (void)context_id;
    return 1; /* nothing pending: the host may finalize the context now */
}

EXPORT(void, proxy_on_log)(u32 context_id) { (void)context_id; }

EXPORT(void, proxy_on_delete)(u32 context_id) {
    stream **link = find_stream(context_id);
    if (*link) {
        stream *s = *link;
        *link = s->next;
        release(s);
        return;
    }
    for (root **rl = &roots; *rl; rl = &(*rl)->next) {
        if ((*rl)->id == context_id) {
            root *rt = *rl;
            *rl = rt->next;
            set_defaults(rt);
            release(rt);
            return;
        }
    }
}
