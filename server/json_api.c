/*
 * json_api.c - JSON request bodies -> Inference__GenerateRequest (see
 * json_api.h). Parsing uses cJSON; every known field is looked up once and
 * type-checked here, then handed to srv_prepare for the value rules.
 */
#include "server/json_api.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

static const char *json_type_name(const cJSON *v) {
    if (cJSON_IsNull(v)) return "null";
    if (cJSON_IsBool(v)) return "boolean";
    if (cJSON_IsNumber(v)) return "number";
    if (cJSON_IsString(v)) return "string";
    if (cJSON_IsArray(v)) return "array";
    if (cJSON_IsObject(v)) return "object";
    return "invalid";
}

/* A field that is present and not null (null means "unset", as the OpenAI
 * SDKs send it). */
static const cJSON *field(const cJSON *obj, const char *name) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    return v && !cJSON_IsNull(v) ? v : NULL;
}

static void line_col(const char *text, size_t off, int *line, int *col) {
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < off && text[i]; i++) {
        if (text[i] == '\n') {
            (*line)++;
            *col = 1;
        } else {
            (*col)++;
        }
    }
}

/* ---------------------------------------------------------------------
 * What cJSON accepts but a request must not carry: a NUL escape (cJSON
 * decodes "\u0000" into a NUL byte, so the string would be cut there), a
 * number out of a double's range (cJSON makes 1e400 an infinity), and a
 * key given twice in one object (cJSON keeps both; lookups find the first).
 * The text was parsed by cJSON already, so the scanner below may assume
 * valid JSON; nesting is bounded by cJSON's limit.
 * ------------------------------------------------------------------- */

typedef struct {
    const char *p;
    char path[256]; /* "messages[0].content", "" at the top */
    char *err;
    size_t errlen;
} json_scan;

static const char *path_name(const json_scan *s) { return s->path[0] ? s->path : "request body"; }

/* cJSON's white space: every byte up to and including ' ' (so a control
 * byte between values, which cJSON accepts, is skipped here too). */
static void scan_ws(json_scan *s) {
    while (*s->p && (unsigned char)*s->p <= ' ') s->p++;
}

/* Past a string at s->p; *raw_len: its length as sent. 1 when it holds an
 * escaped NUL. */
static int scan_string(json_scan *s, size_t *raw_len) {
    const char *start = ++s->p;
    int nul = 0;
    while (*s->p && *s->p != '"') {
        if (*s->p == '\\') {
            if (s->p[1] == 'u' && strncmp(s->p + 2, "0000", 4) == 0) nul = 1;
            s->p += s->p[1] == 'u' ? 6 : 2;
        } else {
            s->p++;
        }
    }
    *raw_len = (size_t)(s->p - start);
    if (*s->p) s->p++;
    return nul;
}

static int scan_value(json_scan *s);

/* Scan the value at s->p under path + suffix. */
static int scan_member(json_scan *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int scan_member(json_scan *s, const char *fmt, ...) {
    size_t at = strlen(s->path);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->path + at, sizeof s->path - at, fmt, ap);
    va_end(ap);
    int rv = scan_value(s);
    s->path[at] = 0;
    return rv;
}

static int scan_object(json_scan *s) {
    s->p++;
    for (scan_ws(s); *s->p && *s->p != '}'; scan_ws(s)) {
        if (*s->p == ',') {
            s->p++;
            scan_ws(s);
        }
        const char *key = s->p + 1;
        size_t n;
        if (scan_string(s, &n))
            return fail(s->err, s->errlen, "%s: object keys may not contain NUL (\\u0000)",
                        path_name(s));
        scan_ws(s);
        s->p++; /* ':' */
        if (scan_member(s, "%s%.*s", s->path[0] ? "." : "", (int)n, key)) return -1;
    }
    s->p++;
    return 0;
}

static int scan_array(json_scan *s) {
    s->p++;
    int i = 0;
    for (scan_ws(s); *s->p && *s->p != ']'; scan_ws(s)) {
        if (*s->p == ',') s->p++;
        if (scan_member(s, "[%d]", i++)) return -1;
    }
    s->p++;
    return 0;
}

static int scan_value(json_scan *s) {
    scan_ws(s);
    size_t n;
    switch (*s->p) {
    case '{': return scan_object(s);
    case '[': return scan_array(s);
    case '"':
        if (scan_string(s, &n))
            return fail(s->err, s->errlen, "%s: strings may not contain NUL (\\u0000)",
                        path_name(s));
        return 0;
    case 't':
    case 'f':
    case 'n':
        while (*s->p >= 'a' && *s->p <= 'z') s->p++;
        return 0;
    default: {
        char *end;
        double v = strtod(s->p, &end);
        if (end == s->p) /* cannot follow cJSON's parse; never loop on it */
            return fail(s->err, s->errlen, "%s: unexpected '%c' in the JSON text", path_name(s),
                        *s->p ? *s->p : '?');
        if (!isfinite(v))
            return fail(s->err, s->errlen, "%s: %.*s is out of range for a number", path_name(s),
                        (int)(end - s->p), s->p);
        s->p = end;
        return 0;
    }
    }
}

static int by_name(const void *a, const void *b) {
    return strcmp((*(const cJSON *const *)a)->string, (*(const cJSON *const *)b)->string);
}

/* A key given twice in any object of the tree under v (at path). */
static int check_duplicates(const cJSON *v, char *path, size_t cap, char *err, size_t errlen) {
    int n = cJSON_GetArraySize(v);
    if (cJSON_IsObject(v) && n > 1) {
        const cJSON **kids = malloc((size_t)n * sizeof *kids);
        if (!kids) return fail(err, errlen, "out of memory");
        int i = 0;
        const cJSON *e;
        cJSON_ArrayForEach(e, v) kids[i++] = e;
        qsort(kids, (size_t)n, sizeof *kids, by_name);
        const char *dup = NULL;
        for (i = 1; i < n && !dup; i++)
            if (strcmp(kids[i - 1]->string, kids[i]->string) == 0) dup = kids[i]->string;
        free(kids);
        if (dup && path[0]) return fail(err, errlen, "%s: duplicate key \"%s\"", path, dup);
        if (dup) return fail(err, errlen, "duplicate key \"%s\" in the request object", dup);
    }
    if (!cJSON_IsObject(v) && !cJSON_IsArray(v)) return 0;
    size_t at = strlen(path);
    int i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, v) {
        if (cJSON_IsObject(v)) snprintf(path + at, cap - at, "%s%s", at ? "." : "", e->string);
        else snprintf(path + at, cap - at, "[%d]", i++);
        int rv = check_duplicates(e, path, cap, err, errlen);
        path[at] = 0;
        if (rv) return -1;
    }
    return 0;
}

/* The checks above on a parsed body. */
static int check_body(const char *text, const cJSON *root, char *err, size_t errlen) {
    json_scan s = {.p = text, .err = err, .errlen = errlen};
    if (scan_value(&s)) return -1;
    char path[256] = "";
    return check_duplicates(root, path, sizeof path, err, errlen);
}

static int parse_json(const char *body, size_t len, cJSON **out, char *err, size_t errlen) {
    if (len == 0) return fail(err, errlen, "request body is empty (expected a JSON object)");
    if (memchr(body, 0, len))
        return fail(err, errlen, "invalid JSON: the body contains a NUL byte");
    char *text = malloc(len + 1);
    if (!text) return fail(err, errlen, "out of memory");
    memcpy(text, body, len);
    text[len] = 0;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithOpts(text, &end, 1);
    if (!root) {
        size_t off = end && end >= text && end <= text + len ? (size_t)(end - text) : 0;
        int line, col;
        line_col(text, off, &line, &col);
        if (off >= len) {
            fail(err, errlen,
                 "invalid JSON at line %d, column %d (byte %zu): unexpected end of input", line,
                 col, off);
        } else {
            unsigned char c = (unsigned char)text[off];
            if (c >= 0x20 && c < 0x7f)
                fail(err, errlen, "invalid JSON at line %d, column %d (byte %zu): unexpected '%c'",
                     line, col, off, c);
            else
                fail(err, errlen,
                     "invalid JSON at line %d, column %d (byte %zu): unexpected byte 0x%02x", line,
                     col, off, c);
        }
        free(text);
        return -1;
    }
    int bad = check_body(text, root, err, errlen);
    free(text);
    if (bad) {
        cJSON_Delete(root);
        return -1;
    }
    if (!cJSON_IsObject(root)) {
        fail(err, errlen, "request body must be a JSON object, got %s", json_type_name(root));
        cJSON_Delete(root);
        return -1;
    }
    *out = root;
    return 0;
}

static int get_number(const cJSON *obj, const char *name, int *has, float *out, char *err,
                      size_t errlen) {
    const cJSON *v = field(obj, name);
    if (!v) return 0;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
        return fail(err, errlen, "%s must be a number, got %s", name, json_type_name(v));
    *has = 1;
    *out = (float)v->valuedouble;
    return 0;
}

static int check_int(const cJSON *v, const char *name, double lo, double hi, char *err,
                     size_t errlen) {
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || floor(v->valuedouble) != v->valuedouble)
        return fail(err, errlen, "%s must be an integer, got %s", name,
                    cJSON_IsNumber(v) ? "a fraction" : json_type_name(v));
    if (v->valuedouble < lo || v->valuedouble > hi)
        return fail(err, errlen, "%s is out of range, got %.17g", name, v->valuedouble);
    return 0;
}

static int get_int(const cJSON *obj, const char *name, int *has, int32_t *out, char *err,
                   size_t errlen) {
    const cJSON *v = field(obj, name);
    if (!v) return 0;
    if (check_int(v, name, -2147483648.0, 2147483647.0, err, errlen)) return -1;
    *has = 1;
    *out = (int32_t)v->valuedouble;
    return 0;
}

/* One of two spellings of the same field; giving both is ambiguous. */
static int get_int_alias(const cJSON *obj, const char *a, const char *b, int *has, int32_t *out,
                         char *err, size_t errlen) {
    if (b && field(obj, a) && field(obj, b))
        return fail(err, errlen, "%s and %s are the same setting; give one", a, b);
    if (get_int(obj, a, has, out, err, errlen)) return -1;
    if (b && get_int(obj, b, has, out, err, errlen)) return -1;
    return 0;
}

static int get_bool(const cJSON *obj, const char *name, int *has, int *out, char *err,
                    size_t errlen) {
    const cJSON *v = field(obj, name);
    if (!v) return 0;
    if (!cJSON_IsBool(v))
        return fail(err, errlen, "%s must be a boolean, got %s", name, json_type_name(v));
    *has = 1;
    *out = cJSON_IsTrue(v);
    return 0;
}

static int get_seed(const cJSON *obj, japi_request *r, char *err, size_t errlen) {
    const cJSON *v = field(obj, "seed");
    if (!v) return 0;
    /* 2^64 is exact in a double; every integer below it that a JSON number
     * can carry exactly is a valid seed. */
    if (check_int(v, "seed", 0.0, 18446744073709549568.0, err, errlen)) return -1;
    r->sampling.has_seed = 1;
    r->sampling.seed = (uint64_t)v->valuedouble;
    return 0;
}

static int int_array(const cJSON *v, const char *name, int32_t **out, size_t *n, char *err,
                     size_t errlen) {
    int count = cJSON_GetArraySize(v);
    int32_t *ids = calloc(count > 0 ? (size_t)count : 1, sizeof *ids);
    if (!ids) return fail(err, errlen, "out of memory");
    int i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, v) {
        char what[64];
        snprintf(what, sizeof what, "%s[%d]", name, i);
        if (check_int(e, what, -2147483648.0, 2147483647.0, err, errlen)) {
            free(ids);
            return -1;
        }
        ids[i++] = (int32_t)e->valuedouble;
    }
    *out = ids;
    *n = (size_t)i;
    return 0;
}

static int get_stop(const cJSON *obj, japi_request *r, char *err, size_t errlen) {
    const cJSON *v = field(obj, "stop");
    if (!v) return 0;
    if (cJSON_IsString(v)) {
        r->stop = malloc(sizeof *r->stop);
        if (!r->stop) return fail(err, errlen, "out of memory");
        r->stop[0] = v->valuestring;
        r->gen.stop = r->stop;
        r->gen.n_stop = 1;
        return 0;
    }
    if (!cJSON_IsArray(v))
        return fail(err, errlen, "stop must be a string or an array of strings, got %s",
                    json_type_name(v));
    int count = cJSON_GetArraySize(v);
    r->stop = calloc(count > 0 ? (size_t)count : 1, sizeof *r->stop);
    if (!r->stop) return fail(err, errlen, "out of memory");
    int i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, v) {
        if (!cJSON_IsString(e))
            return fail(err, errlen, "stop[%d] must be a string, got %s", i, json_type_name(e));
        r->stop[i++] = e->valuestring;
    }
    r->gen.stop = r->stop;
    r->gen.n_stop = (size_t)i;
    return 0;
}

/* /v1/completions "prompt" as a list of prompts: each a string or an
 * array of token ids. */
static int get_prompt_list(const cJSON *v, japi_request *r, char *err, size_t errlen) {
    int count = cJSON_GetArraySize(v);
    if (count > JAPI_MAX_PROMPTS)
        return fail(err, errlen, "prompt: at most %d prompts per request, got %d", JAPI_MAX_PROMPTS,
                    count);
    r->prompts = calloc((size_t)count, sizeof *r->prompts);
    if (!r->prompts) return fail(err, errlen, "out of memory");
    const cJSON *e;
    cJSON_ArrayForEach(e, v) {
        japi_prompt *p = &r->prompts[r->n_prompts];
        char what[32];
        snprintf(what, sizeof what, "prompt[%d]", r->n_prompts);
        if (cJSON_IsString(e)) {
            p->text = e->valuestring;
        } else if (cJSON_IsArray(e) && cJSON_GetArraySize(e) > 0) {
            if (int_array(e, what, &p->ids, &p->n_ids, err, errlen)) return -1;
        } else {
            return fail(err, errlen,
                        "%s must be a string or a non-empty array of token ids, got %s", what,
                        cJSON_IsArray(e) ? "an empty array" : json_type_name(e));
        }
        r->n_prompts++;
    }
    japi_select_prompt(r, 0);
    return 0;
}

void japi_select_prompt(japi_request *r, int i) {
    const japi_prompt *p = &r->prompts[i];
    r->gen.prompt = (char *)p->text;
    r->gen.prompt_ids = p->ids;
    r->gen.n_prompt_ids = p->text ? 0 : p->n_ids;
}

/* "prompt": a string, a token-id array, or a one-element array of either
 * (the OpenAI SDKs wrap single prompts that way); /v1/completions takes a
 * list of several too (get_prompt_list). */
static int get_prompt(japi_kind kind, const cJSON *obj, japi_request *r, char *err, size_t errlen) {
    const cJSON *v = field(obj, "prompt");
    if (v && cJSON_IsArray(v) && cJSON_GetArraySize(v) == 1) {
        const cJSON *only = cJSON_GetArrayItem(v, 0);
        if (cJSON_IsString(only) || cJSON_IsArray(only)) v = only;
    }
    if (v) {
        if (cJSON_IsString(v)) {
            r->gen.prompt = v->valuestring;
        } else if (cJSON_IsArray(v)) {
            const cJSON *first = cJSON_GetArrayItem(v, 0);
            if (first && (cJSON_IsString(first) || cJSON_IsArray(first))) {
                if (kind != JAPI_COMPLETIONS)
                    return fail(err, errlen,
                                "prompt: a list of prompts is for /v1/completions; send one "
                                "prompt per request here");
                if (get_prompt_list(v, r, err, errlen)) return -1;
            } else {
                if (int_array(v, "prompt", &r->prompt_ids, &r->gen.n_prompt_ids, err, errlen))
                    return -1;
                r->gen.prompt_ids = r->prompt_ids;
            }
        } else {
            return fail(err, errlen, "prompt must be a string or an array of token ids, got %s",
                        json_type_name(v));
        }
    }
    const cJSON *ids = field(obj, "prompt_ids");
    if (ids) {
        if (v) return fail(err, errlen, "give prompt or prompt_ids, not both");
        if (!cJSON_IsArray(ids))
            return fail(err, errlen, "prompt_ids must be an array of integers, got %s",
                        json_type_name(ids));
        if (int_array(ids, "prompt_ids", &r->prompt_ids, &r->gen.n_prompt_ids, err, errlen))
            return -1;
        r->gen.prompt_ids = r->prompt_ids;
    }
    return 0;
}

/* OpenAI content: a string, null (an assistant turn with tool calls), or
 * an array of parts of which we take the text ones, joined by newlines. */
static int message_content(const cJSON *c, int i, japi_request *r, const char **out, char *err,
                           size_t errlen) {
    if (!c || cJSON_IsNull(c)) {
        *out = "";
        return 0;
    }
    if (cJSON_IsString(c)) {
        *out = c->valuestring;
        return 0;
    }
    if (!cJSON_IsArray(c))
        return fail(err, errlen,
                    "messages[%d].content must be a string or an array of parts, got %s", i,
                    json_type_name(c));
    size_t total = 1;
    const cJSON *p;
    int j = 0;
    cJSON_ArrayForEach(p, c) {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(p, "type");
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(p, "text");
        if (!cJSON_IsObject(p) || !cJSON_IsString(type) || strcmp(type->valuestring, "text") != 0)
            return fail(err, errlen,
                        "messages[%d].content[%d]: only parts of type \"text\" are supported", i,
                        j);
        if (!cJSON_IsString(text))
            return fail(err, errlen, "messages[%d].content[%d].text must be a string, got %s", i, j,
                        text ? json_type_name(text) : "nothing");
        total += strlen(text->valuestring) + 1;
        j++;
    }
    char *buf = malloc(total);
    if (!buf) return fail(err, errlen, "out of memory");
    r->joined[r->n_joined++] = buf;
    size_t at = 0;
    j = 0;
    cJSON_ArrayForEach(p, c) {
        const char *t = cJSON_GetObjectItemCaseSensitive(p, "text")->valuestring;
        if (j++) buf[at++] = '\n';
        size_t n = strlen(t);
        memcpy(buf + at, t, n);
        at += n;
    }
    buf[at] = 0;
    *out = buf;
    return 0;
}

static int get_messages(const cJSON *obj, japi_request *r, int required, char *err, size_t errlen) {
    const cJSON *v = field(obj, "messages");
    if (!v) return required ? fail(err, errlen, "messages is required") : 0;
    if (!cJSON_IsArray(v))
        return fail(err, errlen, "messages must be an array of objects, got %s", json_type_name(v));
    int count = cJSON_GetArraySize(v);
    if (count == 0) return fail(err, errlen, "messages must not be empty");
    size_t n = (size_t)count;
    r->msg_store = calloc(n, sizeof *r->msg_store);
    r->msgs = calloc(n, sizeof *r->msgs);
    r->joined = calloc(n, sizeof *r->joined);
    if (!r->msg_store || !r->msgs || !r->joined) return fail(err, errlen, "out of memory");
    int i = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, v) {
        if (!cJSON_IsObject(m))
            return fail(err, errlen, "messages[%d] must be an object, got %s", i,
                        json_type_name(m));
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        if (!cJSON_IsString(role))
            return fail(err, errlen, "messages[%d].role must be a string, got %s", i,
                        role ? json_type_name(role) : "nothing");
        const char *content = "";
        if (message_content(cJSON_GetObjectItemCaseSensitive(m, "content"), i, r, &content, err,
                            errlen))
            return -1;
        Inference__ChatMessage init = INFERENCE__CHAT_MESSAGE__INIT;
        r->msg_store[i] = init;
        r->msg_store[i].role = role->valuestring;
        r->msg_store[i].content = (char *)content;
        r->msgs[i] = &r->msg_store[i];
        i++;
    }
    r->gen.messages = r->msgs;
    r->gen.n_messages = n;
    return 0;
}

/* OpenAI features that would change the output if we ignored them. */
static int refuse_unsupported(const cJSON *obj, char *err, size_t errlen) {
    const cJSON *v;
    if ((v = field(obj, "echo")) && !cJSON_IsFalse(v))
        return fail(err, errlen, "echo is not supported");
    if ((v = field(obj, "best_of")) && !(cJSON_IsNumber(v) && v->valuedouble == 1))
        return fail(err, errlen, "best_of is not supported (use n)");
    if ((v = field(obj, "suffix")) && !(cJSON_IsString(v) && v->valuestring[0] == 0))
        return fail(err, errlen, "suffix is not supported");
    if ((v = field(obj, "tools")) && cJSON_GetArraySize(v) > 0)
        return fail(err, errlen, "tools are not supported");
    if ((v = field(obj, "functions")) && cJSON_GetArraySize(v) > 0)
        return fail(err, errlen, "functions are not supported");
    if ((v = field(obj, "logit_bias")) && cJSON_GetArraySize(v) > 0)
        return fail(err, errlen, "logit_bias is not supported");
    /* Accepted and ignored, but still type-checked. */
    static const char *const numbers[] = {"frequency_penalty", "presence_penalty"};
    for (size_t i = 0; i < sizeof numbers / sizeof numbers[0]; i++) {
        if ((v = field(obj, numbers[i])) && !cJSON_IsNumber(v))
            return fail(err, errlen, "%s must be a number, got %s", numbers[i], json_type_name(v));
    }
    if ((v = field(obj, "user")) && !cJSON_IsString(v))
        return fail(err, errlen, "user must be a string, got %s", json_type_name(v));
    return 0;
}

/* OpenAI's response_format: {"type": "text"}, {"type": "json_object"} or
 * {"type": "json_schema", "json_schema": {"name": .., "schema": {..},
 * "strict": ..}}. The schema travels as its JSON text; srv_prepare compiles
 * it (and refuses what the engine cannot enforce). */
static int get_response_format(const cJSON *o, japi_request *r, char *err, size_t errlen) {
    const cJSON *v = field(o, "response_format");
    if (!v) return 0;
    if (!cJSON_IsObject(v))
        return fail(err, errlen, "response_format must be an object, got %s", json_type_name(v));
    const cJSON *t = field(v, "type");
    if (!cJSON_IsString(t))
        return fail(err, errlen, "response_format.type must be a string, got %s",
                    t ? json_type_name(t) : "nothing");
    const char *type = t->valuestring;
    if (strcmp(type, "text") && strcmp(type, "json_object") && strcmp(type, "json_schema"))
        return fail(err, errlen,
                    "response_format.type must be \"text\", \"json_object\" or \"json_schema\", "
                    "got \"%s\"",
                    type);
    Inference__ResponseFormat init = INFERENCE__RESPONSE_FORMAT__INIT;
    r->response_format = init;
    r->response_format.type = (char *)type;
    if (!strcmp(type, "json_schema")) {
        const cJSON *js = field(v, "json_schema");
        if (!cJSON_IsObject(js))
            return fail(err, errlen, "response_format.json_schema must be an object with a schema");
        const cJSON *name = field(js, "name"), *strict = field(js, "strict");
        const cJSON *schema = field(js, "schema");
        if (name && !cJSON_IsString(name))
            return fail(err, errlen, "response_format.json_schema.name must be a string");
        if (strict && !cJSON_IsBool(strict))
            return fail(err, errlen, "response_format.json_schema.strict must be a boolean");
        if (!cJSON_IsObject(schema) && !cJSON_IsBool(schema))
            return fail(err, errlen, "response_format.json_schema.schema must be an object, got %s",
                        schema ? json_type_name(schema) : "nothing");
        if (!(r->schema_text = cJSON_PrintUnformatted(schema)))
            return fail(err, errlen, "out of memory");
        r->response_format.json_schema = r->schema_text;
        r->response_format.name = name ? name->valuestring : NULL;
        r->response_format.has_strict = strict != NULL;
        r->response_format.strict = cJSON_IsTrue(strict);
    }
    r->gen.response_format = &r->response_format;
    return 0;
}

/* /v1/completions' "logprobs": N (an integer in [0, JAPI_MAX_LEGACY_LOGPROBS]: each
 * token's logprob and the N most likely alternatives; false = off), or
 * /v1/chat/completions' "logprobs": true with "top_logprobs": N (srv_prepare
 * checks N's range). */
static int get_logprobs(japi_kind kind, const cJSON *o, japi_request *r, char *err, size_t errlen) {
    Inference__GenerateRequest *g = &r->gen;
    const cJSON *v = field(o, "logprobs");
    if (kind == JAPI_CHAT) {
        int has = 0, on = 0;
        if (get_bool(o, "logprobs", &has, &on, err, errlen)) return -1;
        g->has_logprobs = has;
        g->logprobs = on;
        has = 0;
        if (get_int(o, "top_logprobs", &has, &g->top_logprobs, err, errlen)) return -1;
        g->has_top_logprobs = has;
        return 0;
    }
    if ((v = field(o, "top_logprobs")))
        return fail(err, errlen,
                    "top_logprobs belongs to /v1/chat/completions; /v1/completions takes "
                    "\"logprobs\": N");
    if (!(v = field(o, "logprobs")) || cJSON_IsFalse(v)) return 0;
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < 0 ||
        v->valuedouble > JAPI_MAX_LEGACY_LOGPROBS) {
        char got[64];
        if (cJSON_IsNumber(v)) snprintf(got, sizeof got, "%g", v->valuedouble);
        else snprintf(got, sizeof got, "%s", json_type_name(v));
        return fail(err, errlen, "logprobs must be an integer in [0, %d], got %s",
                    JAPI_MAX_LEGACY_LOGPROBS, got);
    }
    g->has_logprobs = g->logprobs = 1;
    g->has_top_logprobs = 1;
    g->top_logprobs = (int32_t)v->valuedouble;
    return 0;
}

static int map_request(japi_kind kind, const cJSON *o, japi_request *r, char *err, size_t errlen) {
    Inference__GenerateRequest *g = &r->gen;
    Inference__SamplingParams *sp = &r->sampling;
    int has = 0;

    const cJSON *model = field(o, "model");
    if (model) {
        if (!cJSON_IsString(model))
            return fail(err, errlen, "model must be a string, got %s", json_type_name(model));
        r->model = model->valuestring;
    }
    if (kind != JAPI_GENERATE && refuse_unsupported(o, err, errlen)) return -1;

    if (kind == JAPI_CHAT) {
        if (get_messages(o, r, 1, err, errlen)) return -1;
    } else {
        if (get_prompt(kind, o, r, err, errlen)) return -1;
        if (kind == JAPI_GENERATE && get_messages(o, r, 0, err, errlen)) return -1;
    }

    /* Each getter sets *has only when the field is present. */
#define GET(call, has_field)                                                                       \
    do {                                                                                           \
        has = 0;                                                                                   \
        if (call) return -1;                                                                       \
        has_field = (has_field) || has;                                                            \
    } while (0)
    GET(get_number(o, "temperature", &has, &sp->temperature, err, errlen), sp->has_temperature);
    GET(get_number(o, "top_p", &has, &sp->top_p, err, errlen), sp->has_top_p);
    GET(get_number(o, "min_p", &has, &sp->min_p, err, errlen), sp->has_min_p);
    GET(get_number(o, "repetition_penalty", &has, &sp->repetition_penalty, err, errlen),
        sp->has_repetition_penalty);
    GET(get_int(o, "top_k", &has, &sp->top_k, err, errlen), sp->has_top_k);
    GET(get_int(o, "repeat_last_n", &has, &sp->repeat_last_n, err, errlen), sp->has_repeat_last_n);
    if (get_seed(o, r, err, errlen)) return -1;

    const char *max_alias = kind == JAPI_GENERATE ? "max_length"
                            : kind == JAPI_CHAT   ? "max_completion_tokens"
                                                  : NULL;
    GET(get_int_alias(o, "max_tokens", max_alias, &has, &g->max_tokens, err, errlen),
        g->has_max_tokens);
    GET(get_int_alias(o, "min_tokens", kind == JAPI_GENERATE ? "min_length" : NULL, &has,
                      &g->min_tokens, err, errlen),
        g->has_min_tokens);
    GET(get_int(o, "n", &has, &g->n, err, errlen), g->has_n);

    if (get_stop(o, r, err, errlen)) return -1;
    if (get_response_format(o, r, err, errlen)) return -1;
    if (kind != JAPI_GENERATE && get_logprobs(kind, o, r, err, errlen)) return -1;
    const cJSON *sid = field(o, "stop_ids");
    if (sid) {
        if (!cJSON_IsArray(sid))
            return fail(err, errlen, "stop_ids must be an array of integers, got %s",
                        json_type_name(sid));
        if (int_array(sid, "stop_ids", &r->stop_ids, &g->n_stop_ids, err, errlen)) return -1;
        g->stop_ids = r->stop_ids;
    }

    int b = 0;
    GET(get_bool(o, "ignore_eos", &has, &b, err, errlen), g->has_ignore_eos);
    g->ignore_eos = g->has_ignore_eos && b;
    b = 0;
    GET(get_bool(o, "add_special", &has, &b, err, errlen), g->has_add_special);
    g->add_special = g->has_add_special && b;
    int has_stream = 0;
    GET(get_bool(o, "stream", &has, &r->stream, err, errlen), has_stream);

    if (kind == JAPI_GENERATE) {
        if (field(o, "return_tokens") && field(o, "return_token_ids"))
            return fail(err, errlen,
                        "return_tokens and return_token_ids are the same setting; give one");
        GET(get_bool(o, "return_tokens", &has, &r->return_tokens, err, errlen),
            g->has_return_token_ids);
        GET(get_bool(o, "return_token_ids", &has, &r->return_tokens, err, errlen),
            g->has_return_token_ids);
        g->return_token_ids = g->has_return_token_ids && r->return_tokens;
    }
#undef GET

    const cJSON *so = field(o, "stream_options");
    if (so) {
        if (!cJSON_IsObject(so))
            return fail(err, errlen, "stream_options must be an object, got %s",
                        json_type_name(so));
        int has_usage = 0;
        if (get_bool(so, "include_usage", &has_usage, &r->include_usage, err, errlen)) {
            char inner[256];
            snprintf(inner, sizeof inner, "stream_options.%s", err);
            snprintf(err, errlen, "%s", inner);
            return -1;
        }
    }

    if (sp->has_temperature || sp->has_top_k || sp->has_top_p || sp->has_min_p ||
        sp->has_repetition_penalty || sp->has_repeat_last_n || sp->has_seed)
        g->sampling = sp;
    return 0;
}

int japi_parse(japi_kind kind, const char *body, size_t len, japi_request *out, char *err,
               size_t errlen) {
    memset(out, 0, sizeof *out);
    Inference__GenerateRequest ginit = INFERENCE__GENERATE_REQUEST__INIT;
    Inference__SamplingParams sinit = INFERENCE__SAMPLING_PARAMS__INIT;
    out->gen = ginit;
    out->sampling = sinit;
    cJSON *root = NULL;
    if (parse_json(body, len, &root, err, errlen)) return -1;
    out->root = root;
    if (map_request(kind, root, out, err, errlen)) {
        japi_request_free(out);
        return -1;
    }
    return 0;
}

void japi_request_free(japi_request *r) {
    if (!r) return;
    for (size_t i = 0; i < r->n_joined; i++) free(r->joined[i]);
    free(r->joined);
    free(r->msg_store);
    free(r->msgs);
    free(r->stop);
    free(r->prompt_ids);
    free(r->stop_ids);
    for (int i = 0; i < r->n_prompts; i++) free(r->prompts[i].ids);
    free(r->prompts);
    cJSON_free(r->schema_text);
    cJSON_Delete(r->root);
    memset(r, 0, sizeof *r);
}
