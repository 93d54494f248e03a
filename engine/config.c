/*
 * config.c - the JSON configuration (see config.h, docs/config.md): the
 * generic mechanism, then the engine's key table.
 *
 * Every key is one row of a table (section, name, kind, where it lives in
 * its owner's struct, its range). The file loader, the --set overrides, the
 * validator and the JSON writer all walk the bound tables, so a key added to
 * a table is parsed, checked, overridable and printed without further code.
 *
 * A value arrives as a cJSON node (from the file, or built from the
 * command-line text by config_set), is type-checked and stored into a
 * scratch copy of its struct, then the stored value is range-checked by the
 * same function config_validate uses. The caller's structs are replaced
 * only when everything succeeded, so a failed load changes nothing.
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

/* ---- fields of a bound struct ---- */

static int *int_field(void *st, const config_key *k) { return (int *)((char *)st + k->off); }
static int int_value(const void *st, const config_key *k) {
    return *(const int *)((const char *)st + k->off);
}
static double *double_field(void *st, const config_key *k) {
    return (double *)((char *)st + k->off);
}
static double double_value(const void *st, const config_key *k) {
    return *(const double *)((const char *)st + k->off);
}
static char *str_field(void *st, const config_key *k) { return (char *)st + k->off; }
static const char *str_value(const void *st, const config_key *k) {
    return (const char *)st + k->off;
}
/* CONFIG_STRLIST: entry i and the entry count. */
static char *entry_field(void *st, const config_key *k, int i) {
    return (char *)st + k->off + (size_t)i * k->cap;
}
static const char *entry_value(const void *st, const config_key *k, int i) {
    return (const char *)st + k->off + (size_t)i * k->cap;
}
static int *count_field(void *st, const config_key *k) {
    return (int *)((char *)st + k->count_off);
}
static int count_value(const void *st, const config_key *k) {
    return *(const int *)((const char *)st + k->count_off);
}

static void set_str(char *dst, size_t cap, const char *src) {
    memset(dst, 0, cap);
    size_t n = strlen(src);
    memcpy(dst, src, n < cap ? n : cap - 1);
}

void config_defaults(const config_bindings *b) {
    for (int i = 0; i < b->n; i++) b->bind[i].table->defaults(b->bind[i].dst);
}

/* ---- finding sections and keys among the bound tables ---- */

#define SECTION_UNKNOWN (-1)
#define SECTION_SKIPPED (-2)

/* The index of the binding whose table owns section, or SECTION_SKIPPED /
 * SECTION_UNKNOWN. */
static int section_owner(const config_bindings *b, const char *section) {
    for (int i = 0; i < b->n; i++) {
        const config_table *t = b->bind[i].table;
        for (int s = 0; s < t->n_sections; s++)
            if (strcmp(t->sections[s], section) == 0) return i;
    }
    for (const char *const *p = b->skip; p && *p; p++)
        if (strcmp(*p, section) == 0) return SECTION_SKIPPED;
    return SECTION_UNKNOWN;
}

static const config_key *find_key(const config_table *t, const char *section, const char *name) {
    for (int i = 0; i < t->n_keys; i++)
        if (strcmp(t->keys[i].section, section) == 0 && strcmp(t->keys[i].name, name) == 0)
            return &t->keys[i];
    return NULL;
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

/* Keeps candidate in *best when it is a closer typo of name than *best. */
static void consider(const char *name, const char *candidate, const char **best, int *best_d) {
    if (!is_close(name, candidate)) return;
    int d = edit_distance(name, candidate);
    if (d < *best_d) *best_d = d, *best = candidate;
}

/* Writes " (did you mean 'x'?)" or "" into buf. section is NULL for a key at
 * the top level. A name that exists in another section of any bound table is
 * suggested with its full path (the usual mistake: right key, wrong section);
 * otherwise the nearest name in the same place, without a path. */
static void suggest(const config_bindings *b, const char *section, const char *name, char *buf,
                    size_t len) {
    buf[0] = '\0';
    for (int t = 0; t < b->n; t++) {
        const config_table *tab = b->bind[t].table;
        for (int i = 0; i < tab->n_keys; i++) {
            const config_key *k = &tab->keys[i];
            if (strcmp(k->name, name) == 0 && (!section || strcmp(k->section, section) != 0)) {
                snprintf(buf, len, " (did you mean '%s.%s'?)", k->section, k->name);
                return;
            }
        }
    }
    const char *best = NULL;
    int best_d = INT_MAX;
    for (int t = 0; t < b->n; t++) {
        const config_table *tab = b->bind[t].table;
        if (section) {
            for (int i = 0; i < tab->n_keys; i++)
                if (strcmp(tab->keys[i].section, section) == 0)
                    consider(name, tab->keys[i].name, &best, &best_d);
        } else {
            for (int s = 0; s < tab->n_sections; s++)
                consider(name, tab->sections[s], &best, &best_d);
        }
    }
    if (best) snprintf(buf, len, " (did you mean '%s'?)", best);
}

/* ---- checks on stored values (shared by load, set and validate) ---- */

static int is_pow2(int v) { return v > 0 && (v & (v - 1)) == 0; }

static int check_int(const config_key *k, int v, char *err, size_t errlen) {
    if (k->extra == CONFIG_POW2) {
        if (v < k->min || v > k->max || !is_pow2(v)) {
            snprintf(err, errlen, "%s.%s: must be a power of two between %.0f and %.0f, got %d",
                     k->section, k->name, k->min, k->max, v);
            return -1;
        }
    } else if (v < k->min || v > k->max) {
        snprintf(err, errlen, "%s.%s: must be between %.0f and %.0f, got %d", k->section, k->name,
                 k->min, k->max, v);
        return -1;
    }
    return 0;
}

static int check_double(const config_key *k, double v, char *err, size_t errlen) {
    int low = k->min_open ? !(v > k->min) : !(v >= k->min);
    if (isfinite(v) && !low && v <= k->max) return 0;
    if (k->min_open)
        snprintf(err, errlen, "%s.%s: must be greater than %g and at most %g, got %g", k->section,
                 k->name, k->min, k->max, v);
    else
        snprintf(err, errlen, "%s.%s: must be between %g and %g, got %g", k->section, k->name,
                 k->min, k->max, v);
    return -1;
}

static int check_strlist(const config_key *k, const void *st, char *err, size_t errlen) {
    int n = count_value(st, k);
    if (n < 0 || n > k->max) {
        snprintf(err, errlen, "%s.%s: must list at most %.0f %s, got %d", k->section, k->name,
                 k->max, k->entries, n);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        if (memchr(entry_value(st, k, i), '\0', k->cap) == NULL) {
            snprintf(err, errlen, "%s.%s[%d]: not terminated within %zu bytes", k->section, k->name,
                     i, k->cap);
            return -1;
        }
    }
    return 0;
}

/* The key's kind and range, then its owner's rule. */
static int check_key(const config_table *t, const config_key *k, const void *st, char *err,
                     size_t errlen) {
    int rc = 0;
    switch (k->kind) {
    case CONFIG_INT: rc = check_int(k, int_value(st, k), err, errlen); break;
    case CONFIG_BOOL:
        if (int_value(st, k) != 0 && int_value(st, k) != 1) {
            snprintf(err, errlen, "%s.%s: must be true or false, got %d", k->section, k->name,
                     int_value(st, k));
            rc = -1;
        }
        break;
    case CONFIG_DOUBLE: rc = check_double(k, double_value(st, k), err, errlen); break;
    case CONFIG_BLOCKS: {
        int v = int_value(st, k);
        if (v != CFG_NUM_BLOCKS_AUTO && (v < k->min || v > k->max)) {
            snprintf(err, errlen,
                     "%s.%s: must be \"auto\" or an integer between %.0f and %.0f, got %d",
                     k->section, k->name, k->min, k->max, v);
            rc = -1;
        }
        break;
    }
    case CONFIG_ENUM: {
        int v = t->enum_get(st, k);
        if (v < 0 || v >= k->n_names) {
            snprintf(err, errlen, "%s.%s: invalid value %d", k->section, k->name, v);
            rc = -1;
        }
        break;
    }
    case CONFIG_STRING:
        if (memchr(str_value(st, k), '\0', k->cap) == NULL) {
            snprintf(err, errlen, "%s.%s: not terminated within %zu bytes", k->section, k->name,
                     k->cap);
            rc = -1;
        }
        break;
    case CONFIG_STRLIST: rc = check_strlist(k, st, err, errlen); break;
    }
    if (rc == 0 && k->check) rc = k->check(k, st, err, errlen);
    return rc;
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
static int json_int(const config_key *k, const char *path, const cJSON *v, int *out, char *err,
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

static int store_enum(const config_table *t, const config_key *k, const char *path, const cJSON *v,
                      void *st, char *err, size_t errlen) {
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
            t->enum_set(st, k, i);
            return 0;
        }
    }
    char got[80];
    describe(v, got, sizeof got);
    snprintf(err, errlen, "%s: must be one of %s, got %s", path, list, got);
    return -1;
}

static int store_blocks(const config_key *k, const char *path, const cJSON *v, void *st, char *err,
                        size_t errlen) {
    if (cJSON_IsString(v) && strcmp(v->valuestring, "auto") == 0) {
        *int_field(st, k) = CFG_NUM_BLOCKS_AUTO;
    } else if (cJSON_IsNumber(v) && isfinite(v->valuedouble) &&
               floor(v->valuedouble) == v->valuedouble && v->valuedouble >= k->min &&
               v->valuedouble <= k->max) {
        *int_field(st, k) = (int)v->valuedouble;
    } else {
        char got[80];
        describe(v, got, sizeof got);
        snprintf(err, errlen, "%s: must be \"auto\" or an integer between %.0f and %.0f, got %s",
                 path, k->min, k->max, got);
        return -1;
    }
    return 0;
}

/* The array replaces the whole list. */
static int store_strlist(const config_key *k, const char *path, const cJSON *v, void *st, char *err,
                         size_t errlen) {
    if (!cJSON_IsArray(v)) return type_error(path, "an array of strings", v, err, errlen);
    int n = cJSON_GetArraySize(v);
    if (n > k->max) {
        snprintf(err, errlen, "%s: must list at most %.0f %s, got %d", path, k->max, k->entries, n);
        return -1;
    }
    int i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, v) {
        char epath[160];
        snprintf(epath, sizeof epath, "%s[%d]", path, i);
        if (store_string(epath, entry_field(st, k, i), k->cap, e, err, errlen)) return -1;
        i++;
    }
    for (int j = i; j < (int)k->max; j++) memset(entry_field(st, k, j), 0, k->cap);
    *count_field(st, k) = n;
    return 0;
}

static int apply_value(const config_table *t, const config_key *k, const cJSON *v, void *st,
                       char *err, size_t errlen) {
    char path[128];
    snprintf(path, sizeof path, "%s.%s", k->section, k->name);
    int rc = 0;
    switch (k->kind) {
    case CONFIG_INT: {
        int x = 0;
        rc = json_int(k, path, v, &x, err, errlen);
        if (rc == 0) *int_field(st, k) = x;
        break;
    }
    case CONFIG_BOOL:
        if (!cJSON_IsBool(v)) return type_error(path, "true or false", v, err, errlen);
        *int_field(st, k) = cJSON_IsTrue(v) ? 1 : 0;
        break;
    case CONFIG_DOUBLE:
        if (!cJSON_IsNumber(v)) return type_error(path, "a number", v, err, errlen);
        *double_field(st, k) = v->valuedouble;
        break;
    case CONFIG_STRING: rc = store_string(path, str_field(st, k), k->cap, v, err, errlen); break;
    case CONFIG_ENUM: return store_enum(t, k, path, v, st, err, errlen);
    case CONFIG_BLOCKS: rc = store_blocks(k, path, v, st, err, errlen); break;
    case CONFIG_STRLIST: rc = store_strlist(k, path, v, st, err, errlen); break;
    }
    return rc ? rc : check_key(t, k, st, err, errlen);
}

/* ---- scratch copies: a failed load or set changes nothing ---- */

/* A copy of every bound struct, or NULL (out of memory). */
static void **scratch_open(const config_bindings *b) {
    void **s = calloc((size_t)b->n + 1, sizeof *s);
    for (int i = 0; s && i < b->n; i++) {
        s[i] = malloc(b->bind[i].table->size);
        if (!s[i]) {
            for (int j = 0; j < i; j++) free(s[j]);
            free(s);
            return NULL;
        }
        memcpy(s[i], b->bind[i].dst, b->bind[i].table->size);
    }
    return s;
}

/* Copies the scratch structs back when commit, then frees them. */
static void scratch_close(const config_bindings *b, void **s, int commit) {
    for (int i = 0; i < b->n; i++) {
        if (commit) memcpy(b->bind[i].dst, s[i], b->bind[i].table->size);
        free(s[i]);
    }
    free(s);
}

/* ---- loading ---- */

/* Same name earlier among the siblings: JSON allows it, a config must not
 * (which one would win is a guess the reader should not have to make). */
static int earlier_sibling_named(const cJSON *parent, const cJSON *item) {
    for (const cJSON *p = parent->child; p && p != item; p = p->next)
        if (p->string && strcmp(p->string, item->string) == 0) return 1;
    return 0;
}

/* The keys of one section into st, the struct of the binding that owns it. */
static int apply_section(const config_bindings *b, const config_table *t, const cJSON *sec,
                         void *st, char *err, size_t errlen) {
    const cJSON *item;
    cJSON_ArrayForEach(item, sec) {
        if (earlier_sibling_named(sec, item)) {
            snprintf(err, errlen, "duplicate key '%s.%.100s'", sec->string, item->string);
            return -1;
        }
        const config_key *k = find_key(t, sec->string, item->string);
        if (!k) {
            char hint[128];
            suggest(b, sec->string, item->string, hint, sizeof hint);
            snprintf(err, errlen, "unknown key '%s.%.100s'%s", sec->string, item->string, hint);
            return -1;
        }
        if (apply_value(t, k, item, st, err, errlen)) return -1;
    }
    return 0;
}

static int apply_object(const config_bindings *b, void **scratch, const cJSON *root, char *err,
                        size_t errlen) {
    if (!cJSON_IsObject(root))
        return type_error("config", "an object at the top level", root, err, errlen);
    const cJSON *sec;
    cJSON_ArrayForEach(sec, root) {
        if (earlier_sibling_named(root, sec)) {
            snprintf(err, errlen, "duplicate key '%s'", sec->string);
            return -1;
        }
        int owner = section_owner(b, sec->string);
        if (owner == SECTION_UNKNOWN) {
            char hint[128];
            suggest(b, NULL, sec->string, hint, sizeof hint);
            snprintf(err, errlen, "unknown key '%.100s'%s", sec->string, hint);
            return -1;
        }
        if (!cJSON_IsObject(sec)) return type_error(sec->string, "an object", sec, err, errlen);
        if (owner == SECTION_SKIPPED) continue;
        if (apply_section(b, b->bind[owner].table, sec, scratch[owner], err, errlen)) return -1;
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

/* Why json (which cJSON refused, stopping at end) is malformed, with line
 * and column. */
static void parse_error(const char *json, const char *end, char *msg, size_t msglen) {
    size_t off = end && end >= json ? (size_t)(end - json) : 0;
    size_t total = strlen(json);
    if (off > total) off = total;
    /* The commonest mistake in a hand-written config is a trailing comma;
     * cJSON stops at or just past the closing bracket, so point at the
     * comma instead. */
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
        snprintf(msg, msglen, "line %d, column %d: malformed JSON (trailing comma)", line, col);
        return;
    }
    line_col(json, off, &line, &col);
    size_t start = off + strspn(json + off, " \t\r\n");
    size_t n = 0;
    while (n < 16 && json[start + n] && json[start + n] != '\n' && json[start + n] != '\r') n++;
    if (strspn(json, " \t\r\n") == total)
        snprintf(msg, msglen, "line %d, column %d: malformed JSON (empty input)", line, col);
    else if (n == 0)
        snprintf(msg, msglen, "line %d, column %d: malformed JSON (unexpected end)", line, col);
    else
        snprintf(msg, msglen, "line %d, column %d: malformed JSON near '%.*s'", line, col, (int)n,
                 json + start);
}

static int load_text(const config_bindings *b, const char *json, const char *origin, char *err,
                     size_t errlen) {
    char msg[512];
    if (strncmp(json, "\xEF\xBB\xBF", 3) == 0) json += 3; /* UTF-8 byte order mark */
    /* return_parse_end is the per-call form of cJSON_GetErrorPtr (which is
     * global and so racy between threads). */
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithOpts(json, &end, 1);
    void **scratch = root ? scratch_open(b) : NULL;
    if (!root) {
        parse_error(json, end, msg, sizeof msg);
    } else if (!scratch) {
        snprintf(msg, sizeof msg, "out of memory");
    } else {
        int rc = apply_object(b, scratch, root, msg, sizeof msg);
        scratch_close(b, scratch, rc == 0);
        if (rc == 0) {
            cJSON_Delete(root);
            return 0;
        }
    }
    cJSON_Delete(root);
    if (origin) snprintf(err, errlen, "%s: %s", origin, msg);
    else snprintf(err, errlen, "%s", msg);
    return -1;
}

int config_load_string(const config_bindings *b, const char *json, char *err, size_t errlen) {
    if (!json) {
        snprintf(err, errlen, "no JSON text");
        return -1;
    }
    return load_text(b, json, NULL, err, errlen);
}

int config_load_file(const config_bindings *b, const char *path, char *err, size_t errlen) {
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
    int rc = load_text(b, buf, path, err, errlen);
    free(buf);
    return rc;
}

int config_apply_env(const config_bindings *b, char *err, size_t errlen) {
    for (int i = 0; i < b->n; i++) {
        const config_table *t = b->bind[i].table;
        if (t->apply_env && t->apply_env(b->bind[i].dst, err, errlen)) return -1;
    }
    return 0;
}

/* ---- command-line overrides ---- */

/* A comma-separated list as a JSON array of strings (blanks around the
 * commas dropped; "" is the empty list). */
static cJSON *list_node(const char *p) {
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

/* The command-line text as the JSON value the key expects. Numbers are
 * parsed as JSON; text that is not a number stays a string so the type
 * error can quote it. */
static cJSON *value_node(const config_key *k, const char *value) {
    switch (k->kind) {
    case CONFIG_STRING:
    case CONFIG_ENUM: return cJSON_CreateString(value);
    case CONFIG_BOOL:
    case CONFIG_INT:
    case CONFIG_DOUBLE:
    case CONFIG_BLOCKS: {
        cJSON *v = cJSON_ParseWithOpts(value, NULL, 1);
        if (v && (cJSON_IsNumber(v) || cJSON_IsBool(v) || cJSON_IsNull(v))) return v;
        cJSON_Delete(v);
        return cJSON_CreateString(value);
    }
    case CONFIG_STRLIST: {
        const char *p = value;
        while (*p == ' ' || *p == '\t') p++;
        if (*p == '[') return cJSON_ParseWithOpts(value, NULL, 1);
        return list_node(p);
    }
    }
    return NULL;
}

/* "'x' is a section; ..." when dotted_key names a bound section, else
 * "unknown key" with a suggestion. Returns -1. */
static int undotted_key_error(const config_bindings *b, const char *dotted_key, char *err,
                              size_t errlen) {
    for (int t = 0; t < b->n; t++) {
        const config_table *tab = b->bind[t].table;
        for (int i = 0; i < tab->n_keys; i++) {
            if (strcmp(tab->keys[i].section, dotted_key) == 0) {
                snprintf(err, errlen, "'%s' is a section; set one of its keys, e.g. '%s.%s'",
                         dotted_key, dotted_key, tab->keys[i].name);
                return -1;
            }
        }
    }
    char hint[128];
    suggest(b, NULL, dotted_key, hint, sizeof hint);
    snprintf(err, errlen, "unknown key '%.100s'%s", dotted_key, hint);
    return -1;
}

int config_set(const config_bindings *b, const char *dotted_key, const char *value, char *err,
               size_t errlen) {
    if (!dotted_key || !value) {
        snprintf(err, errlen, "config_set: missing key or value");
        return -1;
    }
    char section[64], hint[128];
    const char *dot = strchr(dotted_key, '.');
    if (!dot) return undotted_key_error(b, dotted_key, err, errlen);
    size_t slen = (size_t)(dot - dotted_key);
    snprintf(section, sizeof section, "%.*s",
             (int)(slen < sizeof section ? slen : sizeof section - 1), dotted_key);
    int owner = slen < sizeof section ? section_owner(b, section) : SECTION_UNKNOWN;
    if (owner == SECTION_SKIPPED) return 0;
    if (owner == SECTION_UNKNOWN) {
        suggest(b, NULL, section, hint, sizeof hint);
        snprintf(err, errlen, "unknown key '%.100s'%s", dotted_key, hint);
        return -1;
    }
    const config_binding *bd = &b->bind[owner];
    const config_key *k = find_key(bd->table, section, dot + 1);
    if (!k) {
        suggest(b, section, dot + 1, hint, sizeof hint);
        snprintf(err, errlen, "unknown key '%.100s'%s", dotted_key, hint);
        return -1;
    }
    cJSON *v = value_node(k, value);
    void *tmp = v ? malloc(bd->table->size) : NULL;
    if (!tmp) {
        if (!v && k->kind == CONFIG_STRLIST)
            snprintf(err, errlen, "%s.%s: malformed JSON array", k->section, k->name);
        else snprintf(err, errlen, "%s.%s: out of memory", k->section, k->name);
        cJSON_Delete(v);
        return -1;
    }
    memcpy(tmp, bd->dst, bd->table->size);
    int rc = apply_value(bd->table, k, v, tmp, err, errlen);
    cJSON_Delete(v);
    if (rc == 0) memcpy(bd->dst, tmp, bd->table->size);
    free(tmp);
    return rc;
}

/* ---- whole-config checks ---- */

int config_validate(const config_bindings *b, char *err, size_t errlen) {
    for (int t = 0; t < b->n; t++) {
        const config_table *tab = b->bind[t].table;
        for (int i = 0; i < tab->n_keys; i++)
            if (check_key(tab, &tab->keys[i], b->bind[t].dst, err, errlen)) return -1;
    }
    for (int t = 0; t < b->n; t++) {
        const config_table *tab = b->bind[t].table;
        if (tab->validate && tab->validate(b->bind[t].dst, err, errlen)) return -1;
    }
    return 0;
}

/* ---- writing ---- */

static cJSON *strlist_node(const config_key *k, const void *st) {
    cJSON *v = cJSON_CreateArray();
    for (int j = 0; v && j < count_value(st, k) && j < (int)k->max; j++) {
        cJSON *e = cJSON_CreateString(entry_value(st, k, j));
        if (!e) {
            cJSON_Delete(v);
            return NULL;
        }
        cJSON_AddItemToArray(v, e);
    }
    return v;
}

/* The stored value of k as the JSON the file format takes. */
static cJSON *key_node(const config_table *t, const config_key *k, const void *st) {
    switch (k->kind) {
    case CONFIG_INT: return cJSON_CreateNumber(int_value(st, k));
    case CONFIG_BOOL: return cJSON_CreateBool(int_value(st, k) != 0);
    case CONFIG_DOUBLE: return cJSON_CreateNumber(double_value(st, k));
    case CONFIG_STRING: {
        const char *str = str_value(st, k);
        if (k->extra == CONFIG_SECRET && str[0]) str = "<redacted>";
        return cJSON_CreateString(str);
    }
    case CONFIG_ENUM: {
        int e = t->enum_get(st, k);
        return cJSON_CreateString(e >= 0 && e < k->n_names ? k->names[e] : "?");
    }
    case CONFIG_BLOCKS:
        return int_value(st, k) == CFG_NUM_BLOCKS_AUTO ? cJSON_CreateString("auto")
                                                       : cJSON_CreateNumber(int_value(st, k));
    case CONFIG_STRLIST: return strlist_node(k, st);
    }
    return NULL;
}

/* Adds every section of one bound table to root; 0 or -1 (out of memory). */
static int add_sections(cJSON *root, const config_binding *bd) {
    const config_table *t = bd->table;
    for (int s = 0; s < t->n_sections; s++) {
        cJSON *sec = cJSON_AddObjectToObject(root, t->sections[s]);
        if (!sec) return -1;
        for (int i = 0; i < t->n_keys; i++) {
            const config_key *k = &t->keys[i];
            if (strcmp(k->section, t->sections[s]) != 0) continue;
            cJSON *v = key_node(t, k, bd->dst);
            if (!v) return -1;
            cJSON_AddItemToObject(sec, k->name, v);
        }
    }
    return 0;
}

int config_to_json(const config_bindings *b, char **out) {
    *out = NULL;
    cJSON *root = cJSON_CreateObject();
    if (!root) return -1;
    int ok = 1;
    for (int i = 0; i < b->n && ok; i++) ok = add_sections(root, &b->bind[i]) == 0;
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

/* ---- the engine's table ---- */

static const char *const dtype_names[] = {"f32", "f16"};       /* index = kv_dtype */
static const char *const numerics_names[] = {"exact", "fast"}; /* index = be_numerics */

#define ENG(f) offsetof(engine_config, f)

static const config_key engine_keys[] = {
    CONFIG_STR_KEY(engine_config, "model_loading_config", "model_path", model_path),
    CONFIG_ENUM_KEY(engine_config, "model_loading_config", "dtype", kv_dtype, dtype_names),
    CONFIG_INT_KEY(engine_config, "model_loading_config", "model_max_length", model_max_length, 0,
                   16777216),
    CONFIG_INT_KEY(engine_config, "model_loading_config", "n_threads", n_threads, 0, 1024),
    CONFIG_ENUM_KEY(engine_config, "model_loading_config", "numerics", numerics, numerics_names),

    CONFIG_INT_KEY(engine_config, "batcher_config", "batch_max_tokens", batch_max_tokens, 1,
                   1048576),
    CONFIG_INT_KEY(engine_config, "batcher_config", "batch_max_seqs", batch_max_seqs, 1, 65536),
    CONFIG_ENUM_KEY(engine_config, "batcher_config", "policy", batching, engine_batching_names),
    CONFIG_INT_KEY(engine_config, "batcher_config", "max_waiting", max_waiting, 1, 16777216),

    {.section = "cache_config",
     .name = "num_blocks",
     .kind = CONFIG_BLOCKS,
     .off = ENG(num_blocks),
     .min = 1,
     .max = BLOCKS_MAX},
    {.section = "cache_config",
     .name = "kv_memory_mb",
     .kind = CONFIG_DOUBLE,
     .off = ENG(kv_memory_mb),
     .min = 0,
     .max = 16777216,
     .min_open = 1},
    CONFIG_INT_KEY(engine_config, "cache_config", "num_blocks_cpu", num_blocks_cpu, 0, BLOCKS_MAX),
    {.section = "cache_config",
     .name = "block_size",
     .kind = CONFIG_INT,
     .off = ENG(block_size),
     .min = 1,
     .max = 256,
     .extra = CONFIG_POW2},
    {.section = "cache_config",
     .name = "watermark",
     .kind = CONFIG_DOUBLE,
     .off = ENG(watermark),
     .min = 0,
     .max = 0.5},
    CONFIG_STR_KEY(engine_config, "cache_config", "swap_path", swap_path),
    CONFIG_ENUM_KEY(engine_config, "cache_config", "preemption_mode", preemption_mode,
                    engine_preempt_names),
    CONFIG_BOOL_KEY(engine_config, "cache_config", "enable_prefix_caching", enable_prefix_caching),
};

static const char *const engine_sections[] = {"model_loading_config", "batcher_config",
                                              "cache_config"};

/* The enums have their own types, so they are read and written by name
 * rather than through an int pointer. */
static int engine_enum_get(const void *st, const config_key *k) {
    const engine_config *c = st;
    if (k->off == ENG(kv_dtype)) return (int)c->kv_dtype;
    if (k->off == ENG(numerics)) return (int)c->numerics;
    if (k->off == ENG(batching)) return (int)c->batching;
    return (int)c->preemption_mode;
}
static void engine_enum_set(void *st, const config_key *k, int v) {
    engine_config *c = st;
    if (k->off == ENG(kv_dtype)) c->kv_dtype = (kv_dtype)v;
    else if (k->off == ENG(numerics)) c->numerics = (be_numerics)v;
    else if (k->off == ENG(batching)) c->batching = (engine_batching)v;
    else c->preemption_mode = (engine_preempt_mode)v;
}

void config_engine_defaults(engine_config *c) {
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
    c->enable_prefix_caching = o.enable_prefix_caching;
}
static void engine_defaults(void *st) { config_engine_defaults(st); }

/* The cross-field rules of the engine's sections. */
static int engine_validate(const void *st, char *err, size_t errlen) {
    const engine_config *c = st;
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

const config_table config_engine_table = {
    .sections = engine_sections,
    .n_sections = (int)(sizeof engine_sections / sizeof engine_sections[0]),
    .keys = engine_keys,
    .n_keys = (int)(sizeof engine_keys / sizeof engine_keys[0]),
    .size = sizeof(engine_config),
    .defaults = engine_defaults,
    .validate = engine_validate,
    .enum_get = engine_enum_get,
    .enum_set = engine_enum_set,
};

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
    o->enable_prefix_caching = c->enable_prefix_caching;
}
