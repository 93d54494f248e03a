/*
 * config.c - the JSON configuration (see config.h, docs/config.md).
 *
 * Every key is one row of a table (section, name, kind, where it lives in
 * engine_config, its range). The file loader, the --set overrides, the
 * validator and the JSON writer all walk that table, so a key added there
 * is parsed, checked, overridable and printed without further code.
 *
 * A value arrives as a cJSON node (from the file, or built from the
 * command-line text by config_set), is type-checked and stored into a
 * scratch copy of the config, then the stored value is range-checked by the
 * same function config_validate uses. The caller's config is replaced only
 * when everything succeeded, so a failed load changes nothing.
 */
#include "engine/config.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CFG_FILE_MAX (1 << 20) /* a config file is small; refuse anything huge */
#define BLOCKS_MAX (1 << 24)

/* ---- the key table ---- */

typedef enum {
    K_INT,    /* JSON integer in [min, max] */
    K_DOUBLE, /* JSON number in [min, max] (min exclusive when min_open) */
    K_STRING, /* JSON string shorter than its field */
    K_ENUM,   /* JSON string, one of names[] */
    K_BLOCKS, /* integer > 0 or "auto" */
    K_LISTEN, /* array of address strings */
} key_kind;

typedef enum { X_NONE, X_POW2, X_HTTP_ADDR, X_API_KEY } key_extra;

typedef struct {
    const char *section;
    const char *name;
    key_kind kind;
    size_t off; /* offset of the field in engine_config */
    size_t cap; /* K_STRING: field size */
    double min, max;
    int min_open;
    key_extra extra;
    const char *const *names; /* K_ENUM: index = enum value */
    int n_names;
} cfg_key;

static const char *const dtype_names[] = {"f32", "f16"};       /* index = kv_dtype */
static const char *const numerics_names[] = {"exact", "fast"}; /* index = be_numerics */

#define OFF(f) offsetof(engine_config, f)
#define INT_KEY(s, n, f, lo, hi)                                                                   \
    { s, n, K_INT, OFF(f), 0, lo, hi, 0, X_NONE, NULL, 0 }
#define STR_KEY(s, n, f, x)                                                                        \
    { s, n, K_STRING, OFF(f), sizeof(((engine_config *)0)->f), 0, 0, 0, x, NULL, 0 }
#define ENUM_KEY(s, n, f, tab)                                                                     \
    { s, n, K_ENUM, OFF(f), 0, 0, 0, 0, X_NONE, tab, (int)(sizeof tab / sizeof tab[0]) }

static const cfg_key keys[] = {
    STR_KEY("model_loading_config", "model_path", model_path, X_NONE),
    ENUM_KEY("model_loading_config", "dtype", kv_dtype, dtype_names),
    INT_KEY("model_loading_config", "model_max_length", model_max_length, 0, 16777216),
    INT_KEY("model_loading_config", "n_threads", n_threads, 0, 1024),
    ENUM_KEY("model_loading_config", "numerics", numerics, numerics_names),

    INT_KEY("batcher_config", "batch_max_tokens", batch_max_tokens, 1, 1048576),
    INT_KEY("batcher_config", "batch_max_seqs", batch_max_seqs, 1, 65536),
    ENUM_KEY("batcher_config", "policy", batching, engine_batching_names),
    INT_KEY("batcher_config", "max_waiting", max_waiting, 1, 16777216),

    {"cache_config", "num_blocks", K_BLOCKS, OFF(num_blocks), 0, 1, BLOCKS_MAX, 0, X_NONE, NULL, 0},
    {"cache_config", "kv_memory_mb", K_DOUBLE, OFF(kv_memory_mb), 0, 0, 16777216, 1, X_NONE, NULL,
     0},
    INT_KEY("cache_config", "num_blocks_cpu", num_blocks_cpu, 0, BLOCKS_MAX),
    {"cache_config", "block_size", K_INT, OFF(block_size), 0, 1, 256, 0, X_POW2, NULL, 0},
    {"cache_config", "watermark", K_DOUBLE, OFF(watermark), 0, 0, 0.5, 0, X_NONE, NULL, 0},
    STR_KEY("cache_config", "swap_path", swap_path, X_NONE),
    ENUM_KEY("cache_config", "preemption_mode", preemption_mode, engine_preempt_names),

    {"server", "listen", K_LISTEN, OFF(listen), 0, 0, CFG_MAX_LISTEN, 0, X_NONE, NULL, 0},
    STR_KEY("server", "http_listen", http_listen, X_HTTP_ADDR),
    INT_KEY("server", "max_message_bytes", max_message_bytes, 1024, 1073741824),
    STR_KEY("server", "api_key", api_key, X_API_KEY),
    INT_KEY("server", "max_stop_strings", max_stop_strings, 0, 1024),
    INT_KEY("server", "request_timeout_ms", request_timeout_ms, 0, 86400000),
    INT_KEY("server", "drain_timeout_ms", drain_timeout_ms, 0, 3600000),
};
#define N_KEYS ((int)(sizeof keys / sizeof keys[0]))

static const char *const sections[] = {"model_loading_config", "batcher_config", "cache_config",
                                       "server"};
#define N_SECTIONS ((int)(sizeof sections / sizeof sections[0]))

static int *int_field(engine_config *c, const cfg_key *k) { return (int *)((char *)c + k->off); }
static int int_value(const engine_config *c, const cfg_key *k) {
    return *(const int *)((const char *)c + k->off);
}
static double *double_field(engine_config *c, const cfg_key *k) {
    return (double *)((char *)c + k->off);
}
static double double_value(const engine_config *c, const cfg_key *k) {
    return *(const double *)((const char *)c + k->off);
}
static char *str_field(engine_config *c, const cfg_key *k) { return (char *)c + k->off; }
static const char *str_value(const engine_config *c, const cfg_key *k) {
    return (const char *)c + k->off;
}

/* The enums have their own types, so they are read and written by
 * name rather than through an int pointer. */
static int enum_value(const engine_config *c, const cfg_key *k) {
    if (k->off == OFF(kv_dtype)) return (int)c->kv_dtype;
    if (k->off == OFF(numerics)) return (int)c->numerics;
    if (k->off == OFF(batching)) return (int)c->batching;
    return (int)c->preemption_mode;
}
static void enum_set(engine_config *c, const cfg_key *k, int v) {
    if (k->off == OFF(kv_dtype)) c->kv_dtype = (kv_dtype)v;
    else if (k->off == OFF(numerics)) c->numerics = (be_numerics)v;
    else if (k->off == OFF(batching)) c->batching = (engine_batching)v;
    else c->preemption_mode = (engine_preempt_mode)v;
}

/* ---- defaults ---- */

static void set_str(char *dst, size_t cap, const char *src) {
    memset(dst, 0, cap);
    size_t n = strlen(src);
    memcpy(dst, src, n < cap ? n : cap - 1);
}

void config_defaults(engine_config *c) {
    engine_options o;
    engine_options_default(&o);
    memset(c, 0, sizeof *c);
    c->kv_dtype = o.kv_type;
    c->model_max_length = o.max_context;
    c->n_threads = 0;
    c->numerics = BE_NUMERICS_EXACT;
    c->batch_max_tokens = o.batch_max_tokens;
    c->batch_max_seqs = o.batch_max_seqs;
    c->batching = o.batching;
    c->max_waiting = o.max_waiting;
    c->num_blocks = o.num_blocks > 0 ? o.num_blocks : CFG_NUM_BLOCKS_AUTO;
    c->kv_memory_mb = o.kv_memory_mb;
    c->num_blocks_cpu = o.num_blocks_cpu;
    c->block_size = o.block_size;
    c->watermark = o.watermark;
    c->preemption_mode = o.preempt_mode;
    set_str(c->listen[0], sizeof c->listen[0], "tcp://127.0.0.1:8700");
    c->n_listen = 1;
    set_str(c->http_listen, sizeof c->http_listen, "http://127.0.0.1:8080");
    c->max_message_bytes = 4 << 20;
    c->max_stop_strings = 16;
    c->request_timeout_ms = 0;
    c->drain_timeout_ms = 30000;
}

/* ---- unknown keys: a suggestion by edit distance ---- */

/* Optimal string alignment distance (Levenshtein plus adjacent swaps),
 * case-insensitive; names are short, so the O(n*m) table is tiny. */
static int edit_distance(const char *a, const char *b) {
    size_t n = strlen(a), m = strlen(b);
    if (n > 64 || m > 64) return INT_MAX;
    int d[65][65];
    for (size_t i = 0; i <= n; i++) d[i][0] = (int)i;
    for (size_t j = 0; j <= m; j++) d[0][j] = (int)j;
    for (size_t i = 1; i <= n; i++) {
        for (size_t j = 1; j <= m; j++) {
            int ca = tolower((unsigned char)a[i - 1]), cb = tolower((unsigned char)b[j - 1]);
            int best = d[i - 1][j - 1] + (ca != cb);
            if (d[i - 1][j] + 1 < best) best = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < best) best = d[i][j - 1] + 1;
            if (i > 1 && j > 1 && ca == tolower((unsigned char)b[j - 2]) &&
                tolower((unsigned char)a[i - 2]) == cb && d[i - 2][j - 2] + 1 < best)
                best = d[i - 2][j - 2] + 1;
            d[i][j] = best;
        }
    }
    return d[n][m];
}

/* Close enough to be a typo of candidate rather than a different word. */
static int is_close(const char *typed, const char *candidate) {
    size_t len = strlen(candidate);
    int limit = len <= 4 ? 1 : len <= 8 ? 2 : 3;
    return edit_distance(typed, candidate) <= limit;
}

/* Writes " (did you mean 'x'?)" or "" into buf. section is NULL for a key at
 * the top level. A name that exists in another section is suggested with its
 * full path (the usual mistake: right key, wrong section); otherwise the
 * nearest name in the same place, without a path. */
static void suggest(const char *section, const char *name, char *buf, size_t len) {
    buf[0] = '\0';
    for (int i = 0; i < N_KEYS; i++) {
        if (strcmp(keys[i].name, name) == 0 &&
            (!section || strcmp(keys[i].section, section) != 0)) {
            snprintf(buf, len, " (did you mean '%s.%s'?)", keys[i].section, keys[i].name);
            return;
        }
    }
    const char *best = NULL;
    int best_d = INT_MAX;
    if (section) {
        for (int i = 0; i < N_KEYS; i++) {
            if (strcmp(keys[i].section, section) != 0 || !is_close(name, keys[i].name)) continue;
            int d = edit_distance(name, keys[i].name);
            if (d < best_d) best_d = d, best = keys[i].name;
        }
    } else {
        for (int i = 0; i < N_SECTIONS; i++) {
            if (!is_close(name, sections[i])) continue;
            int d = edit_distance(name, sections[i]);
            if (d < best_d) best_d = d, best = sections[i];
        }
    }
    if (best) snprintf(buf, len, " (did you mean '%s'?)", best);
}

static int is_section(const char *name) {
    for (int i = 0; i < N_SECTIONS; i++)
        if (strcmp(sections[i], name) == 0) return 1;
    return 0;
}

static const cfg_key *find_key(const char *section, const char *name) {
    for (int i = 0; i < N_KEYS; i++)
        if (strcmp(keys[i].section, section) == 0 && strcmp(keys[i].name, name) == 0)
            return &keys[i];
    return NULL;
}

/* ---- checks on stored values (shared by load, set and validate) ---- */

static int is_pow2(int v) { return v > 0 && (v & (v - 1)) == 0; }

/* "host:port" with host empty, a name, an IPv4 address or [IPv6], and a
 * decimal port 0..65535 (0: let the system pick). */
static int host_port_ok(const char *s) {
    const char *colon = strrchr(s, ':');
    if (!colon) return 0;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close || close + 1 != colon || close == s + 1) return 0;
    } else {
        for (const char *p = s; p < colon; p++)
            if (!(isalnum((unsigned char)*p) || *p == '.' || *p == '-' || *p == '_' || *p == '*'))
                return 0;
    }
    const char *port = colon + 1;
    size_t n = strlen(port);
    if (n == 0 || n > 5) return 0;
    long v = 0;
    for (const char *p = port; *p; p++) {
        if (!isdigit((unsigned char)*p)) return 0;
        v = v * 10 + (*p - '0');
    }
    return v <= 65535;
}

static int listen_addr_ok(const char *s) {
    if (strncmp(s, "tcp://", 6) == 0) return host_port_ok(s + 6);
    if (strncmp(s, "ipc://", 6) == 0) return s[6] != '\0';
    return 0;
}

static int check_key(const cfg_key *k, const engine_config *c, char *err, size_t errlen) {
    switch (k->kind) {
    case K_INT: {
        int v = int_value(c, k);
        if (k->extra == X_POW2) {
            if (v < k->min || v > k->max || !is_pow2(v)) {
                snprintf(err, errlen, "%s.%s: must be a power of two between %.0f and %.0f, got %d",
                         k->section, k->name, k->min, k->max, v);
                return -1;
            }
        } else if (v < k->min || v > k->max) {
            snprintf(err, errlen, "%s.%s: must be between %.0f and %.0f, got %d", k->section,
                     k->name, k->min, k->max, v);
            return -1;
        }
        return 0;
    }
    case K_DOUBLE: {
        double v = double_value(c, k);
        int low = k->min_open ? !(v > k->min) : !(v >= k->min);
        if (!isfinite(v) || low || v > k->max) {
            if (k->min_open)
                snprintf(err, errlen, "%s.%s: must be greater than %g and at most %g, got %g",
                         k->section, k->name, k->min, k->max, v);
            else
                snprintf(err, errlen, "%s.%s: must be between %g and %g, got %g", k->section,
                         k->name, k->min, k->max, v);
            return -1;
        }
        return 0;
    }
    case K_BLOCKS: {
        int v = int_value(c, k);
        if (v == CFG_NUM_BLOCKS_AUTO) return 0;
        if (v < k->min || v > k->max) {
            snprintf(err, errlen,
                     "%s.%s: must be \"auto\" or an integer between %.0f and %.0f, got %d",
                     k->section, k->name, k->min, k->max, v);
            return -1;
        }
        return 0;
    }
    case K_ENUM: {
        int v = enum_value(c, k);
        if (v < 0 || v >= k->n_names) {
            snprintf(err, errlen, "%s.%s: invalid value %d", k->section, k->name, v);
            return -1;
        }
        return 0;
    }
    case K_STRING: {
        const char *s = str_value(c, k);
        if (memchr(s, '\0', k->cap) == NULL) {
            snprintf(err, errlen, "%s.%s: not terminated within %zu bytes", k->section, k->name,
                     k->cap);
            return -1;
        }
        if (k->extra == X_HTTP_ADDR && s[0] &&
            (strncmp(s, "http://", 7) != 0 || !host_port_ok(s + 7))) {
            snprintf(err, errlen, "%s.%s: expected \"http://host:port\" or \"\", got \"%.200s\"",
                     k->section, k->name, s);
            return -1;
        }
        if (k->extra == X_API_KEY) {
            /* The key is never echoed: error messages end up in logs. */
            for (const char *p = s; *p; p++) {
                if (*p < 0x21 || *p > 0x7e) {
                    snprintf(err, errlen, "%s.%s: must be printable ASCII without spaces",
                             k->section, k->name);
                    return -1;
                }
            }
        }
        return 0;
    }
    case K_LISTEN: {
        if (c->n_listen < 0 || c->n_listen > CFG_MAX_LISTEN) {
            snprintf(err, errlen, "%s.%s: must list at most %d addresses, got %d", k->section,
                     k->name, CFG_MAX_LISTEN, c->n_listen);
            return -1;
        }
        for (int i = 0; i < c->n_listen; i++) {
            const char *s = c->listen[i];
            if (memchr(s, '\0', sizeof c->listen[i]) == NULL || !listen_addr_ok(s)) {
                snprintf(
                    err, errlen,
                    "%s.%s[%d]: expected \"tcp://host:port\" or \"ipc:///path\", got \"%.200s\"",
                    k->section, k->name, i, memchr(s, '\0', sizeof c->listen[i]) ? s : "");
                return -1;
            }
            for (int j = 0; j < i; j++) {
                if (strcmp(c->listen[j], s) == 0) {
                    snprintf(err, errlen, "%s.%s[%d]: \"%.200s\" is listed twice", k->section,
                             k->name, i, s);
                    return -1;
                }
            }
        }
        return 0;
    }
    }
    return 0;
}

/* ---- storing a JSON value ---- */

/* A short rendering of a JSON value for "got ..." in messages. */
static void describe(const cJSON *v, char *buf, size_t len) {
    char *s = cJSON_PrintUnformatted(v);
    if (!s) {
        snprintf(buf, len, "(unprintable)");
        return;
    }
    if (strlen(s) > 60) snprintf(buf, len, "%.57s...", s);
    else snprintf(buf, len, "%s", s);
    cJSON_free(s);
}

static int type_error(const char *path, const char *expected, const cJSON *v, char *err,
                      size_t errlen) {
    char got[80];
    describe(v, got, sizeof got);
    snprintf(err, errlen, "%s: expected %s, got %s", path, expected, got);
    return -1;
}

/* An integral JSON number that fits an int. Out-of-range integers report the
 * key's range rather than a type error. */
static int json_int(const cfg_key *k, const char *path, const cJSON *v, int *out, char *err,
                    size_t errlen) {
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || floor(v->valuedouble) != v->valuedouble)
        return type_error(path, "an integer", v, err, errlen);
    if (v->valuedouble < INT_MIN || v->valuedouble > INT_MAX) {
        char got[80];
        describe(v, got, sizeof got);
        snprintf(err, errlen, "%s: must be between %.0f and %.0f, got %s", path, k->min, k->max,
                 got);
        return -1;
    }
    *out = (int)v->valuedouble;
    return 0;
}

static int store_string(const char *path, char *dst, size_t cap, const cJSON *v, char *err,
                        size_t errlen) {
    if (!cJSON_IsString(v)) return type_error(path, "a string", v, err, errlen);
    if (strlen(v->valuestring) >= cap) {
        snprintf(err, errlen, "%s: longer than %zu bytes", path, cap - 1);
        return -1;
    }
    set_str(dst, cap, v->valuestring);
    return 0;
}

static int apply_value(const cfg_key *k, const cJSON *v, engine_config *c, char *err,
                       size_t errlen) {
    char path[128];
    snprintf(path, sizeof path, "%s.%s", k->section, k->name);
    switch (k->kind) {
    case K_INT: {
        int x = 0;
        if (json_int(k, path, v, &x, err, errlen)) return -1;
        *int_field(c, k) = x;
        break;
    }
    case K_DOUBLE:
        if (!cJSON_IsNumber(v)) return type_error(path, "a number", v, err, errlen);
        *double_field(c, k) = v->valuedouble;
        break;
    case K_STRING:
        if (store_string(path, str_field(c, k), k->cap, v, err, errlen)) return -1;
        break;
    case K_ENUM: {
        char list[128] = "";
        for (int i = 0; i < k->n_names; i++) {
            size_t n = strlen(list);
            snprintf(list + n, sizeof list - n, "%s\"%s\"", i ? ", " : "", k->names[i]);
        }
        if (!cJSON_IsString(v)) {
            char expected[160];
            snprintf(expected, sizeof expected, "a string (one of %s)", list);
            return type_error(path, expected, v, err, errlen);
        }
        for (int i = 0; i < k->n_names; i++) {
            if (strcmp(v->valuestring, k->names[i]) == 0) {
                enum_set(c, k, i);
                return 0;
            }
        }
        char got[80];
        describe(v, got, sizeof got);
        snprintf(err, errlen, "%s: must be one of %s, got %s", path, list, got);
        return -1;
    }
    case K_BLOCKS:
        if (cJSON_IsString(v) && strcmp(v->valuestring, "auto") == 0) {
            *int_field(c, k) = CFG_NUM_BLOCKS_AUTO;
        } else if (cJSON_IsNumber(v) && isfinite(v->valuedouble) &&
                   floor(v->valuedouble) == v->valuedouble && v->valuedouble >= k->min &&
                   v->valuedouble <= k->max) {
            *int_field(c, k) = (int)v->valuedouble;
        } else {
            char got[80];
            describe(v, got, sizeof got);
            snprintf(err, errlen,
                     "%s: must be \"auto\" or an integer between %.0f and %.0f, got %s", path,
                     k->min, k->max, got);
            return -1;
        }
        break;
    case K_LISTEN: {
        if (!cJSON_IsArray(v)) return type_error(path, "an array of strings", v, err, errlen);
        int n = cJSON_GetArraySize(v);
        if (n > CFG_MAX_LISTEN) {
            snprintf(err, errlen, "%s: must list at most %d addresses, got %d", path,
                     CFG_MAX_LISTEN, n);
            return -1;
        }
        int i = 0;
        const cJSON *e;
        cJSON_ArrayForEach(e, v) {
            char epath[160];
            snprintf(epath, sizeof epath, "%s[%d]", path, i);
            if (store_string(epath, c->listen[i], sizeof c->listen[i], e, err, errlen)) return -1;
            i++;
        }
        for (int j = i; j < CFG_MAX_LISTEN; j++) memset(c->listen[j], 0, sizeof c->listen[j]);
        c->n_listen = n;
        break;
    }
    }
    return check_key(k, c, err, errlen);
}

/* ---- loading ---- */

/* Same name earlier among the siblings: JSON allows it, a config must not
 * (which one would win is a guess the reader should not have to make). */
static int earlier_sibling_named(const cJSON *parent, const cJSON *item) {
    for (const cJSON *p = parent->child; p && p != item; p = p->next)
        if (p->string && strcmp(p->string, item->string) == 0) return 1;
    return 0;
}

static int apply_object(engine_config *c, const cJSON *root, char *err, size_t errlen) {
    if (!cJSON_IsObject(root))
        return type_error("config", "an object at the top level", root, err, errlen);
    const cJSON *sec;
    cJSON_ArrayForEach(sec, root) {
        char hint[128];
        if (earlier_sibling_named(root, sec)) {
            snprintf(err, errlen, "duplicate key '%s'", sec->string);
            return -1;
        }
        if (!is_section(sec->string)) {
            suggest(NULL, sec->string, hint, sizeof hint);
            snprintf(err, errlen, "unknown key '%.100s'%s", sec->string, hint);
            return -1;
        }
        if (!cJSON_IsObject(sec)) return type_error(sec->string, "an object", sec, err, errlen);
        const cJSON *item;
        cJSON_ArrayForEach(item, sec) {
            if (earlier_sibling_named(sec, item)) {
                snprintf(err, errlen, "duplicate key '%s.%.100s'", sec->string, item->string);
                return -1;
            }
            const cfg_key *k = find_key(sec->string, item->string);
            if (!k) {
                suggest(sec->string, item->string, hint, sizeof hint);
                snprintf(err, errlen, "unknown key '%s.%.100s'%s", sec->string, item->string, hint);
                return -1;
            }
            if (apply_value(k, item, c, err, errlen)) return -1;
        }
    }
    return 0;
}

/* Line and column (both from 1) of a byte offset, for parse errors. */
static void line_col(const char *text, size_t off, int *line, int *col) {
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < off && text[i]; i++) {
        if (text[i] == '\n') (*line)++, *col = 1;
        else (*col)++;
    }
}

static int load_text(engine_config *c, const char *json, const char *origin, char *err,
                     size_t errlen) {
    char msg[512];
    if (strncmp(json, "\xEF\xBB\xBF", 3) == 0) json += 3; /* UTF-8 byte order mark */
    /* return_parse_end is the per-call form of cJSON_GetErrorPtr (which is
     * global and so racy between threads). */
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithOpts(json, &end, 1);
    if (!root) {
        size_t off = end && end >= json ? (size_t)(end - json) : 0;
        size_t total = strlen(json);
        if (off > total) off = total;
        /* The commonest mistake in a hand-written config is a trailing
         * comma; cJSON stops at or just past the closing bracket, so point at
         * the comma instead. */
        size_t comma = off;
        for (size_t p = off ? off - 1 : 0; p <= off && comma == off; p++) {
            if (json[p] != '}' && json[p] != ']') continue;
            size_t i = p;
            while (i > 0 && strchr(" \t\r\n", json[i - 1])) i--;
            if (i > 0 && json[i - 1] == ',') comma = i - 1;
        }
        int line, col;
        if (comma != off) {
            line_col(json, comma, &line, &col);
            snprintf(msg, sizeof msg, "line %d, column %d: malformed JSON (trailing comma)", line,
                     col);
        } else {
            line_col(json, off, &line, &col);
            size_t start = off + strspn(json + off, " \t\r\n");
            size_t n = 0;
            while (n < 16 && json[start + n] && json[start + n] != '\n' && json[start + n] != '\r')
                n++;
            if (strspn(json, " \t\r\n") == total)
                snprintf(msg, sizeof msg, "line %d, column %d: malformed JSON (empty input)", line,
                         col);
            else if (n == 0)
                snprintf(msg, sizeof msg, "line %d, column %d: malformed JSON (unexpected end)",
                         line, col);
            else
                snprintf(msg, sizeof msg, "line %d, column %d: malformed JSON near '%.*s'", line,
                         col, (int)n, json + start);
        }
    } else {
        engine_config tmp = *c;
        int rc = apply_object(&tmp, root, msg, sizeof msg);
        cJSON_Delete(root);
        if (rc == 0) {
            *c = tmp;
            return 0;
        }
    }
    if (origin) snprintf(err, errlen, "%s: %s", origin, msg);
    else snprintf(err, errlen, "%s", msg);
    return -1;
}

int config_load_string(engine_config *c, const char *json, char *err, size_t errlen) {
    if (!json) {
        snprintf(err, errlen, "no JSON text");
        return -1;
    }
    return load_text(c, json, NULL, err, errlen);
}

int config_load_file(engine_config *c, const char *path, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    char *buf = malloc(CFG_FILE_MAX + 1);
    if (!buf) {
        fclose(f);
        snprintf(err, errlen, "%s: out of memory", path);
        return -1;
    }
    size_t n = fread(buf, 1, CFG_FILE_MAX + 1, f);
    int read_err = ferror(f);
    fclose(f);
    if (read_err) {
        free(buf);
        snprintf(err, errlen, "%s: read error", path);
        return -1;
    }
    if (n > CFG_FILE_MAX) {
        free(buf);
        snprintf(err, errlen, "%s: larger than %d bytes; not a config file?", path, CFG_FILE_MAX);
        return -1;
    }
    buf[n] = '\0';
    if (memchr(buf, '\0', n)) {
        free(buf);
        snprintf(err, errlen, "%s: contains NUL bytes; not a JSON file", path);
        return -1;
    }
    int rc = load_text(c, buf, path, err, errlen);
    free(buf);
    return rc;
}

int config_apply_env(engine_config *c, char *err, size_t errlen) {
    const char *key = getenv("ENGINE_API_KEY");
    if (!key || !*key) return 0;
    if (strlen(key) >= sizeof c->api_key) {
        snprintf(err, errlen, "ENGINE_API_KEY: longer than %zu bytes", sizeof c->api_key - 1);
        return -1;
    }
    for (const char *p = key; *p; p++) {
        if (*p < 0x21 || *p > 0x7e) {
            snprintf(err, errlen, "ENGINE_API_KEY: must be printable ASCII without spaces");
            return -1;
        }
    }
    set_str(c->api_key, sizeof c->api_key, key);
    return 0;
}

/* ---- command-line overrides ---- */

/* The command-line text as the JSON value the key expects. Numbers are
 * parsed as JSON; text that is not a number stays a string so the type
 * error can quote it. */
static cJSON *value_node(const cfg_key *k, const char *value) {
    switch (k->kind) {
    case K_STRING:
    case K_ENUM: return cJSON_CreateString(value);
    case K_INT:
    case K_DOUBLE:
    case K_BLOCKS: {
        cJSON *v = cJSON_ParseWithOpts(value, NULL, 1);
        if (v && (cJSON_IsNumber(v) || cJSON_IsBool(v) || cJSON_IsNull(v))) return v;
        cJSON_Delete(v);
        return cJSON_CreateString(value);
    }
    case K_LISTEN: {
        const char *p = value;
        while (*p == ' ' || *p == '\t') p++;
        if (*p == '[') return cJSON_ParseWithOpts(value, NULL, 1);
        cJSON *arr = cJSON_CreateArray();
        if (!arr) return NULL;
        while (*p) {
            const char *comma = strchr(p, ',');
            size_t n = comma ? (size_t)(comma - p) : strlen(p);
            while (n && (p[n - 1] == ' ' || p[n - 1] == '\t')) n--;
            char *item = malloc(n + 1);
            if (!item) {
                cJSON_Delete(arr);
                return NULL;
            }
            memcpy(item, p, n);
            item[n] = '\0';
            cJSON *s = cJSON_CreateString(item);
            free(item);
            if (!s) {
                cJSON_Delete(arr);
                return NULL;
            }
            cJSON_AddItemToArray(arr, s);
            if (!comma) break;
            p = comma + 1;
            while (*p == ' ' || *p == '\t') p++;
        }
        return arr;
    }
    }
    return NULL;
}

int config_set(engine_config *c, const char *dotted_key, const char *value, char *err,
               size_t errlen) {
    if (!dotted_key || !value) {
        snprintf(err, errlen, "config_set: missing key or value");
        return -1;
    }
    char section[64], hint[128];
    const char *dot = strchr(dotted_key, '.');
    if (!dot) {
        for (int i = 0; i < N_KEYS; i++) {
            if (strcmp(keys[i].section, dotted_key) == 0) {
                snprintf(err, errlen, "'%s' is a section; set one of its keys, e.g. '%s.%s'",
                         dotted_key, dotted_key, keys[i].name);
                return -1;
            }
        }
        suggest(NULL, dotted_key, hint, sizeof hint);
        snprintf(err, errlen, "unknown key '%.100s'%s", dotted_key, hint);
        return -1;
    }
    size_t slen = (size_t)(dot - dotted_key);
    snprintf(section, sizeof section, "%.*s",
             (int)(slen < sizeof section ? slen : sizeof section - 1), dotted_key);
    if (slen >= sizeof section || !is_section(section)) {
        suggest(NULL, section, hint, sizeof hint);
        snprintf(err, errlen, "unknown key '%.100s'%s", dotted_key, hint);
        return -1;
    }
    const cfg_key *k = find_key(section, dot + 1);
    if (!k) {
        suggest(section, dot + 1, hint, sizeof hint);
        snprintf(err, errlen, "unknown key '%.100s'%s", dotted_key, hint);
        return -1;
    }
    cJSON *v = value_node(k, value);
    if (!v) {
        if (k->kind == K_LISTEN)
            snprintf(err, errlen, "%s.%s: malformed JSON array", k->section, k->name);
        else snprintf(err, errlen, "%s.%s: out of memory", k->section, k->name);
        return -1;
    }
    engine_config tmp = *c;
    int rc = apply_value(k, v, &tmp, err, errlen);
    cJSON_Delete(v);
    if (rc == 0) *c = tmp;
    return rc;
}

/* ---- whole-config checks ---- */

int config_validate(const engine_config *c, char *err, size_t errlen) {
    for (int i = 0; i < N_KEYS; i++)
        if (check_key(&keys[i], c, err, errlen)) return -1;
    if (c->batch_max_seqs > c->batch_max_tokens) {
        snprintf(err, errlen,
                 "batcher_config.batch_max_seqs: must be at most batcher_config.batch_max_tokens "
                 "(%d), since every sequence in a step takes at least one token; got %d",
                 c->batch_max_tokens, c->batch_max_seqs);
        return -1;
    }
    if (c->swap_path[0] && c->num_blocks_cpu <= 0) {
        snprintf(err, errlen,
                 "cache_config.swap_path: requires cache_config.num_blocks_cpu > 0 (the file "
                 "backs the CPU swap tier), got num_blocks_cpu %d",
                 c->num_blocks_cpu);
        return -1;
    }
    if (c->preemption_mode == ENGINE_PREEMPT_SWAP && c->num_blocks_cpu <= 0) {
        snprintf(err, errlen,
                 "cache_config.preemption_mode: \"swap\" requires cache_config.num_blocks_cpu > 0, "
                 "got num_blocks_cpu %d",
                 c->num_blocks_cpu);
        return -1;
    }
    /* An explicit pool that cannot hold one sequence of the configured
     * length would fail every long request; say so at startup instead. */
    if (c->num_blocks > 0 && c->model_max_length > 0 &&
        (long long)c->num_blocks * c->block_size < c->model_max_length) {
        snprintf(err, errlen,
                 "cache_config.num_blocks: %d blocks of %d tokens hold %lld tokens, fewer than "
                 "model_loading_config.model_max_length (%d)",
                 c->num_blocks, c->block_size, (long long)c->num_blocks * c->block_size,
                 c->model_max_length);
        return -1;
    }
    return 0;
}

int config_resolve_num_blocks(const engine_config *c, int n_layer, int kv_dim, char *err,
                              size_t errlen) {
    if (c->num_blocks > 0) return c->num_blocks;
    if (c->num_blocks != CFG_NUM_BLOCKS_AUTO) {
        snprintf(err, errlen, "cache_config.num_blocks: must be \"auto\" or > 0, got %d",
                 c->num_blocks);
        return -1;
    }
    if (n_layer <= 0 || kv_dim <= 0) {
        snprintf(err, errlen, "cache_config.num_blocks: bad model shape (n_layer %d, kv_dim %d)",
                 n_layer, kv_dim);
        return -1;
    }
    if (!is_pow2(c->block_size) || c->block_size > 256) {
        snprintf(err, errlen,
                 "cache_config.block_size: must be a power of two between 1 and 256, got %d",
                 c->block_size);
        return -1;
    }
    if (!isfinite(c->kv_memory_mb) || !(c->kv_memory_mb > 0) || c->kv_memory_mb > 16777216) {
        snprintf(err, errlen,
                 "cache_config.kv_memory_mb: must be greater than 0 and at most "
                 "16777216, got %g",
                 c->kv_memory_mb);
        return -1;
    }
    uint64_t block_bytes = kv_block_bytes(n_layer, kv_dim, c->block_size, c->kv_dtype);
    uint64_t n = kv_blocks_in_budget(c->kv_memory_mb, block_bytes);
    if (n > BLOCKS_MAX) {
        snprintf(err, errlen,
                 "cache_config.kv_memory_mb: %g MiB makes %llu blocks of %llu bytes, more than "
                 "%d; lower the budget or set num_blocks",
                 c->kv_memory_mb, (unsigned long long)n, (unsigned long long)block_bytes,
                 BLOCKS_MAX);
        return -1;
    }
    return (int)n;
}

/* ---- writing ---- */

int config_to_json(const engine_config *c, char **out) {
    *out = NULL;
    cJSON *root = cJSON_CreateObject();
    if (!root) return -1;
    int ok = 1;
    for (int s = 0; s < N_SECTIONS && ok; s++) {
        cJSON *sec = cJSON_AddObjectToObject(root, sections[s]);
        if (!sec) {
            ok = 0;
            break;
        }
        for (int i = 0; i < N_KEYS && ok; i++) {
            const cfg_key *k = &keys[i];
            if (strcmp(k->section, sections[s]) != 0) continue;
            cJSON *v = NULL;
            switch (k->kind) {
            case K_INT: v = cJSON_CreateNumber(int_value(c, k)); break;
            case K_DOUBLE: v = cJSON_CreateNumber(double_value(c, k)); break;
            case K_STRING: {
                const char *str = str_value(c, k);
                if (k->extra == X_API_KEY && str[0]) str = "<redacted>";
                v = cJSON_CreateString(str);
                break;
            }
            case K_ENUM: {
                int e = enum_value(c, k);
                v = cJSON_CreateString(e >= 0 && e < k->n_names ? k->names[e] : "?");
                break;
            }
            case K_BLOCKS:
                v = int_value(c, k) == CFG_NUM_BLOCKS_AUTO ? cJSON_CreateString("auto")
                                                           : cJSON_CreateNumber(int_value(c, k));
                break;
            case K_LISTEN:
                v = cJSON_CreateArray();
                for (int j = 0; v && j < c->n_listen && j < CFG_MAX_LISTEN; j++) {
                    cJSON *e = cJSON_CreateString(c->listen[j]);
                    if (!e) {
                        cJSON_Delete(v);
                        v = NULL;
                        break;
                    }
                    cJSON_AddItemToArray(v, e);
                }
                break;
            }
            if (!v) ok = 0;
            else cJSON_AddItemToObject(sec, k->name, v);
        }
    }
    char *text = ok ? cJSON_Print(root) : NULL;
    cJSON_Delete(root);
    if (!text) return -1;
    /* Copy into plain malloc memory so the caller frees it with free()
     * whatever allocator hooks cJSON was given. */
    size_t n = strlen(text);
    *out = malloc(n + 2);
    if (*out) {
        memcpy(*out, text, n);
        (*out)[n] = '\n';
        (*out)[n + 1] = '\0';
    }
    cJSON_free(text);
    return *out ? 0 : -1;
}

void config_engine_options(const engine_config *c, int num_blocks, engine_options *o) {
    engine_options_default(o);
    o->batch_max_tokens = c->batch_max_tokens;
    o->batch_max_seqs = c->batch_max_seqs;
    o->batching = c->batching;
    o->max_waiting = c->max_waiting;
    o->num_blocks = num_blocks;
    o->kv_memory_mb = c->kv_memory_mb;
    o->num_blocks_cpu = c->num_blocks_cpu;
    o->block_size = c->block_size;
    o->watermark = c->watermark;
    o->swap_path = c->swap_path[0] ? c->swap_path : NULL;
    o->preempt_mode = c->preemption_mode;
    o->kv_type = c->kv_dtype;
    o->max_context = c->model_max_length;
}
