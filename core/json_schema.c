/*
 * json_schema.c - JSON schema text -> node graph (json_grammar_internal.h);
 * see json_grammar.h for the subset and the limits.
 *
 * The input is hostile (it comes from a request body): its size, nesting,
 * node count, property and enum counts are bounded, every keyword is checked
 * against a list (an unknown one is refused by name, never ignored, since
 * ignoring an assertion could produce output that does not validate), and
 * $ref cycles that would expand forever without consuming a byte are
 * refused. A $ref is compiled once (memo by the referenced JSON value) into
 * an alias node allocated before its target, so recursion closes on it;
 * aliases are resolved away at the end.
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json_grammar.h"
#include "core/json_grammar_internal.h"

enum { JC_MAX_REFS = 256, JC_PATH = 200 };

typedef struct {
    jg_schema *g;
    const cJSON *root;
    const cJSON *ref_json[JC_MAX_REFS];
    int ref_node[JC_MAX_REFS];
    int n_refs;
    int any; /* the "any JSON value" node, or JG_NONE until needed */
    int oneofs[JG_MAX_NODES];
    int n_oneofs;
    char *err;
    size_t errlen;
    int failed;
} jc;

static int jc_fail(jc *c, const char *fmt, ...) {
    if (!c->failed) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->err, c->errlen, fmt, ap);
        va_end(ap);
        c->failed = 1;
    }
    return JG_NONE;
}

static const char *at(const char *path) { return path[0] ? path : "the root"; }

static int node_new(jc *c, jg_node_kind kind) {
    jg_schema *g = c->g;
    if (g->n_nodes >= JG_MAX_NODES)
        return jc_fail(c, "the schema is too large (more than %d nodes)", JG_MAX_NODES);
    if (g->n_nodes == g->cap_nodes) {
        int cap = g->cap_nodes ? g->cap_nodes * 2 : 32;
        jg_node *p = realloc(g->nodes, (size_t)cap * sizeof *p);
        if (!p) return jc_fail(c, "out of memory compiling the schema");
        g->nodes = p;
        g->cap_nodes = cap;
    }
    jg_node *n = &g->nodes[g->n_nodes];
    memset(n, 0, sizeof *n);
    n->kind = kind;
    n->extra = JG_NONE;
    n->hi = -1;
    return g->n_nodes++;
}

/* Add a string (copied) to node i's strs; -1 when out of memory. */
static int node_add_str(jc *c, int i, const char *s, size_t len) {
    jg_node *n = &c->g->nodes[i];
    char **strs = realloc(n->strs, (size_t)(n->n_strs + 1) * sizeof *strs);
    if (strs) n->strs = strs;
    size_t *lens = realloc(n->lens, (size_t)(n->n_strs + 1) * sizeof *lens);
    if (lens) n->lens = lens;
    char *copy = malloc(len + 1);
    if (!strs || !lens || !copy) {
        free(copy);
        jc_fail(c, "out of memory compiling the schema");
        return -1;
    }
    memcpy(copy, s, len);
    copy[len] = 0;
    n->strs[n->n_strs] = copy;
    n->lens[n->n_strs++] = len;
    return 0;
}

static int node_add_kid(jc *c, int i, int kid) {
    jg_node *n = &c->g->nodes[i];
    int *kids = realloc(n->kids, (size_t)(n->n_kids + 1) * sizeof *kids);
    if (!kids) {
        jc_fail(c, "out of memory compiling the schema");
        return -1;
    }
    n->kids = kids;
    n->kids[n->n_kids++] = kid;
    return 0;
}

static int literals_node(jc *c, const char *const *texts, int n) {
    int i = node_new(c, JG_N_LITERALS);
    for (int k = 0; i >= 0 && k < n; k++)
        if (node_add_str(c, i, texts[k], strlen(texts[k])) != 0) return JG_NONE;
    return i;
}

/* The "any JSON value" node (anyOf object, array, string, number, literals). */
static int any_node(jc *c) {
    if (c->any != JG_NONE) return c->any;
    int a = node_new(c, JG_N_ANYOF);
    if (a < 0) return a;
    c->any = a;
    int obj = node_new(c, JG_N_OBJECT), arr = node_new(c, JG_N_ARRAY);
    int str = node_new(c, JG_N_STRING), num = node_new(c, JG_N_NUMBER);
    static const char *const lits[] = {"true", "false", "null"};
    int lit = literals_node(c, lits, 3);
    if (obj < 0 || arr < 0 || str < 0 || num < 0 || lit < 0) return JG_NONE;
    c->g->nodes[obj].extra = a;
    c->g->nodes[arr].extra = a;
    const int kids[] = {obj, arr, str, num, lit};
    for (int k = 0; k < 5; k++)
        if (node_add_kid(c, a, kids[k]) != 0) return JG_NONE;
    return a;
}

/* ---- keywords ---- */

static const char *const annotations[] = {
    "title", "description", "default",    "examples", "$schema",   "$id",      "$comment",
    "$defs", "definitions", "deprecated", "readOnly", "writeOnly", "examples", NULL};
static const char *const assertions[] = {"type",
                                         "properties",
                                         "required",
                                         "additionalProperties",
                                         "items",
                                         "minItems",
                                         "maxItems",
                                         "minLength",
                                         "maxLength",
                                         "enum",
                                         "const",
                                         "anyOf",
                                         "oneOf",
                                         "allOf",
                                         "$ref",
                                         "uniqueItems",
                                         "minimum",
                                         "maximum",
                                         "exclusiveMinimum",
                                         "exclusiveMaximum",
                                         NULL};

static int in_list(const char *const *list, const char *s) {
    for (int i = 0; list[i]; i++)
        if (strcmp(list[i], s) == 0) return 1;
    return 0;
}

/* Refuse keywords outside the subset; with `alone`, also every assertion
 * but `alone` itself (for $ref, anyOf, oneOf, allOf, enum/const). */
static int check_keywords(jc *c, const cJSON *s, const char *path, const char *alone) {
    for (const cJSON *k = s->child; k; k = k->next) {
        if (in_list(annotations, k->string)) continue;
        if (!in_list(assertions, k->string)) {
            jc_fail(c, "unsupported keyword '%s' at %s", k->string, at(path));
            return -1;
        }
        if (strcmp(k->string, "uniqueItems") == 0 && !cJSON_IsFalse(k)) {
            jc_fail(c, "unsupported keyword 'uniqueItems' (true) at %s", at(path));
            return -1;
        }
        if (alone && strcmp(k->string, alone) != 0 && strcmp(k->string, "uniqueItems") != 0 &&
            !(strcmp(alone, "enum") == 0 &&
              (!strcmp(k->string, "type") || !strcmp(k->string, "const")))) {
            jc_fail(c, "'%s' combined with '%s' at %s is not supported", alone, k->string,
                    at(path));
            return -1;
        }
    }
    return 0;
}

/* A non-negative integer keyword into *out (unchanged when absent). */
static int get_count(jc *c, const cJSON *s, const char *key, const char *path, long *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(s, key);
    if (!v) return 0;
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 1e6 ||
        v->valuedouble != floor(v->valuedouble)) {
        jc_fail(c, "%s at %s must be an integer in [0, 1000000]", key, at(path));
        return -1;
    }
    *out = (long)v->valuedouble;
    return 0;
}

static int get_bounds(jc *c, const cJSON *s, const char *kmin, const char *kmax, const char *path,
                      jg_node *n) {
    if (get_count(c, s, kmin, path, &n->lo) || get_count(c, s, kmax, path, &n->hi)) return -1;
    if (n->hi >= 0 && n->lo > n->hi) {
        jc_fail(c, "%s (%ld) exceeds %s (%ld) at %s", kmin, n->lo, kmax, n->hi, at(path));
        return -1;
    }
    return 0;
}

static int compile(jc *c, const cJSON *s, const char *path, int depth);

static void sub_path(char *out, const char *path, const char *a, const char *b) {
    snprintf(out, JC_PATH, "%s/%s%s%s", path, a, b ? "/" : "", b ? b : "");
}

/* Unlike a value, a property name is matched byte for byte as written, so
 * it may not need escaping. */
static int plain_name(const char *s) {
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p < 0x20 || *p == '"' || *p == '\\') return 0;
    return 1;
}

static int compile_object(jc *c, const cJSON *s, const char *path, int depth) {
    int i = node_new(c, JG_N_OBJECT);
    if (i < 0) return i;
    char sub[JC_PATH];
    const cJSON *props = cJSON_GetObjectItemCaseSensitive(s, "properties");
    if (props && !cJSON_IsObject(props))
        return jc_fail(c, "properties at %s must be an object", at(path));
    if (cJSON_GetArraySize(props) > JG_MAX_PROPS)
        return jc_fail(c, "more than %d properties at %s", JG_MAX_PROPS, at(path));
    for (const cJSON *p = props ? props->child : NULL; p; p = p->next) {
        if (!plain_name(p->string))
            return jc_fail(c, "property name at %s has a quote, backslash or control character",
                           at(path));
        sub_path(sub, path, "properties", p->string);
        int kid = compile(c, p, sub, depth + 1);
        if (kid < 0 || node_add_kid(c, i, kid) || node_add_str(c, i, p->string, strlen(p->string)))
            return JG_NONE;
    }
    const cJSON *req = cJSON_GetObjectItemCaseSensitive(s, "required");
    if (req && !cJSON_IsArray(req))
        return jc_fail(c, "required at %s must be an array of strings", at(path));
    for (const cJSON *r = req ? req->child : NULL; r; r = r->next) {
        jg_node *n = &c->g->nodes[i];
        int k = 0;
        while (cJSON_IsString(r) && k < n->n_strs && strcmp(n->strs[k], r->valuestring) != 0) k++;
        if (!cJSON_IsString(r) || k == n->n_strs)
            return jc_fail(c, "required at %s names %s%s%s, which is not in properties", at(path),
                           cJSON_IsString(r) ? "'" : "a non-string",
                           cJSON_IsString(r) ? r->valuestring : "", cJSON_IsString(r) ? "'" : "");
        n->required |= 1ULL << k;
    }
    const cJSON *add = cJSON_GetObjectItemCaseSensitive(s, "additionalProperties");
    int extra;
    if (!add || cJSON_IsTrue(add)) {
        extra = any_node(c);
    } else if (cJSON_IsFalse(add)) {
        extra = JG_NONE;
    } else {
        sub_path(sub, path, "additionalProperties", NULL);
        if ((extra = compile(c, add, sub, depth + 1)) < 0) return JG_NONE;
    }
    if (c->failed) return JG_NONE;
    c->g->nodes[i].extra = extra;
    return i;
}

static int compile_array(jc *c, const cJSON *s, const char *path, int depth) {
    int i = node_new(c, JG_N_ARRAY);
    if (i < 0 || get_bounds(c, s, "minItems", "maxItems", path, &c->g->nodes[i])) return JG_NONE;
    const cJSON *items = cJSON_GetObjectItemCaseSensitive(s, "items");
    int kid;
    if (!items || cJSON_IsTrue(items)) {
        kid = any_node(c);
    } else if (cJSON_IsArray(items)) {
        return jc_fail(c, "items as a list (tuple validation) at %s is not supported", at(path));
    } else if (cJSON_IsFalse(items)) {
        return jc_fail(c, "items: false at %s is not supported", at(path));
    } else {
        char sub[JC_PATH];
        sub_path(sub, path, "items", NULL);
        kid = compile(c, items, sub, depth + 1);
    }
    if (kid < 0) return JG_NONE;
    c->g->nodes[i].extra = kid;
    return i;
}

static const char *const numeric_bounds[] = {"minimum", "maximum", "exclusiveMinimum",
                                             "exclusiveMaximum", NULL};

/* The first numeric bound keyword s has, or NULL. */
static const char *numeric_bound(const cJSON *s) {
    for (int k = 0; numeric_bounds[k]; k++)
        if (cJSON_GetObjectItemCaseSensitive(s, numeric_bounds[k])) return numeric_bounds[k];
    return NULL;
}

/* An integer node with minimum / maximum / exclusive* as inclusive bounds. */
static int compile_integer(jc *c, const cJSON *s, const char *path) {
    int i = node_new(c, JG_N_INTEGER);
    if (i < 0) return i;
    jg_node *n = &c->g->nodes[i];
    for (int k = 0; numeric_bounds[k]; k++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(s, numeric_bounds[k]);
        if (!v) continue;
        if (!cJSON_IsNumber(v) || fabs(v->valuedouble) >= 1e15)
            return jc_fail(c, "%s at %s must be a number of magnitude below 1e15",
                           numeric_bounds[k], at(path));
        double x = v->valuedouble;
        int64_t b = k == 0   ? (int64_t)ceil(x)
                    : k == 1 ? (int64_t)floor(x)
                    : k == 2 ? (int64_t)floor(x) + 1
                             : (int64_t)ceil(x) - 1;
        if (k % 2 == 0 && (!n->has_min || b > n->min)) {
            n->min = b;
            n->has_min = 1;
        }
        if (k % 2 == 1 && (!n->has_max || b < n->max)) {
            n->max = b;
            n->has_max = 1;
        }
    }
    if (n->has_min && n->has_max && n->min > n->max)
        return jc_fail(c, "no integer lies within the bounds at %s", at(path));
    return i;
}

static int compile_type(jc *c, const cJSON *s, const char *type, const char *path, int depth) {
    if (!strcmp(type, "object")) return compile_object(c, s, path, depth);
    if (!strcmp(type, "array")) return compile_array(c, s, path, depth);
    if (!strcmp(type, "string")) {
        int i = node_new(c, JG_N_STRING);
        if (i < 0 || get_bounds(c, s, "minLength", "maxLength", path, &c->g->nodes[i]))
            return JG_NONE;
        return i;
    }
    if (!strcmp(type, "number")) {
        const char *k = numeric_bound(s);
        if (k)
            return jc_fail(c, "'%s' on type number at %s is not supported (only on integer)", k,
                           at(path));
        return node_new(c, JG_N_NUMBER);
    }
    if (!strcmp(type, "integer")) return compile_integer(c, s, path);
    if (!strcmp(type, "boolean")) {
        static const char *const b[] = {"true", "false"};
        return literals_node(c, b, 2);
    }
    if (!strcmp(type, "null")) {
        static const char *const n[] = {"null"};
        return literals_node(c, n, 1);
    }
    return jc_fail(c, "unknown type '%s' at %s", type, at(path));
}

/* Whether JSON value v is of the named type. */
static int value_is(const cJSON *v, const char *type) {
    if (!strcmp(type, "string")) return cJSON_IsString(v);
    if (!strcmp(type, "number")) return cJSON_IsNumber(v);
    if (!strcmp(type, "integer"))
        return cJSON_IsNumber(v) && v->valuedouble == floor(v->valuedouble) &&
               fabs(v->valuedouble) < 1e15;
    if (!strcmp(type, "boolean")) return cJSON_IsBool(v);
    if (!strcmp(type, "null")) return cJSON_IsNull(v);
    if (!strcmp(type, "object")) return cJSON_IsObject(v);
    if (!strcmp(type, "array")) return cJSON_IsArray(v);
    return 0;
}

static int value_fits_type(const cJSON *v, const cJSON *type) {
    if (!type) return 1;
    if (cJSON_IsString(type)) return value_is(v, type->valuestring);
    for (const cJSON *t = type->child; t; t = t->next)
        if (cJSON_IsString(t) && value_is(v, t->valuestring)) return 1;
    return 0;
}

static int add_literal(jc *c, int i, const cJSON *v, const char *path) {
    if (c->g->nodes[i].n_strs >= JG_MAX_LITERALS)
        return jc_fail(c, "more than %d enum values at %s", JG_MAX_LITERALS, at(path)), -1;
    char *text = cJSON_PrintUnformatted(v);
    if (!text) return jc_fail(c, "out of memory compiling the schema"), -1;
    int rc = node_add_str(c, i, text, strlen(text));
    cJSON_free(text);
    return rc;
}

/* enum / const (with an optional type that filters the values). */
static int compile_literals(jc *c, const cJSON *s, const char *path) {
    if (check_keywords(c, s, path, "enum")) return JG_NONE;
    const cJSON *en = cJSON_GetObjectItemCaseSensitive(s, "enum");
    const cJSON *cn = cJSON_GetObjectItemCaseSensitive(s, "const");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(s, "type");
    if (en && cn) return jc_fail(c, "enum combined with const at %s is not supported", at(path));
    if (en && !cJSON_IsArray(en)) return jc_fail(c, "enum at %s must be an array", at(path));
    int i = node_new(c, JG_N_LITERALS);
    if (i < 0) return i;
    if (cn) {
        if (value_fits_type(cn, type) && add_literal(c, i, cn, path)) return JG_NONE;
    } else {
        for (const cJSON *v = en->child; v; v = v->next)
            if (value_fits_type(v, type) && add_literal(c, i, v, path)) return JG_NONE;
    }
    if (c->g->nodes[i].n_strs == 0)
        return jc_fail(c, "no value of enum/const at %s is allowed (empty, or none of the type)",
                       at(path));
    return i;
}

/* ---- $ref, combinators ---- */

/* The JSON value "#/$defs/<name>" (or definitions, or "#") points at. */
static const cJSON *ref_target(jc *c, const char *ref, const char *path) {
    if (!strcmp(ref, "#")) return c->root;
    static const char *const prefixes[] = {"#/$defs/", "#/definitions/"};
    for (int k = 0; k < 2; k++) {
        size_t pl = strlen(prefixes[k]);
        if (strncmp(ref, prefixes[k], pl) != 0) continue;
        const char *name = ref + pl;
        if (strpbrk(name, "/~%")) break;
        const cJSON *defs =
            cJSON_GetObjectItemCaseSensitive(c->root, k == 0 ? "$defs" : "definitions");
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(defs, name);
        if (!t) {
            jc_fail(c, "$ref '%s' at %s names no definition", ref, at(path));
            return NULL;
        }
        return t;
    }
    jc_fail(c,
            "$ref '%s' at %s: only \"#\", \"#/$defs/<name>\" and \"#/definitions/<name>\" are "
            "supported",
            ref, at(path));
    return NULL;
}

/* An alias node for JSON value t, compiled once however often it is referenced. */
static int compile_ref_target(jc *c, const cJSON *t, const char *path, int depth) {
    for (int k = 0; k < c->n_refs; k++)
        if (c->ref_json[k] == t) return c->ref_node[k];
    if (c->n_refs == JC_MAX_REFS)
        return jc_fail(c, "more than %d distinct $ref targets", JC_MAX_REFS);
    int a = node_new(c, JG_N_ALIAS);
    if (a < 0) return a;
    c->ref_json[c->n_refs] = t;
    c->ref_node[c->n_refs++] = a;
    int x = compile(c, t, path, depth + 1);
    if (x < 0) return JG_NONE;
    c->g->nodes[a].extra = x;
    return a;
}

static int compile_anyof(jc *c, const cJSON *s, const char *key, const char *path, int depth) {
    if (check_keywords(c, s, path, key)) return JG_NONE;
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(s, key);
    if (!cJSON_IsArray(list) || cJSON_GetArraySize(list) == 0)
        return jc_fail(c, "%s at %s must be a non-empty array of schemas", key, at(path));
    if (!strcmp(key, "allOf")) {
        if (cJSON_GetArraySize(list) != 1)
            return jc_fail(c, "allOf with more than one schema at %s is not supported", at(path));
        char sub[JC_PATH];
        sub_path(sub, path, "allOf", "0");
        return compile(c, list->child, sub, depth + 1);
    }
    int i = node_new(c, JG_N_ANYOF);
    int k = 0;
    for (const cJSON *v = list->child; i >= 0 && v; v = v->next, k++) {
        char sub[JC_PATH], idx[16];
        snprintf(idx, sizeof idx, "%d", k);
        sub_path(sub, path, key, idx);
        int kid = compile(c, v, sub, depth + 1);
        if (kid < 0 || node_add_kid(c, i, kid)) return JG_NONE;
    }
    if (i >= 0 && !strcmp(key, "oneOf")) c->oneofs[c->n_oneofs++] = i;
    return i;
}

/* "type": a name, or a list of names (anyOf of each). */
static int compile_typed(jc *c, const cJSON *s, const cJSON *type, const char *path, int depth) {
    if (cJSON_IsString(type)) return compile_type(c, s, type->valuestring, path, depth);
    if (!cJSON_IsArray(type) || cJSON_GetArraySize(type) == 0)
        return jc_fail(c, "type at %s must be a string or a non-empty array of strings", at(path));
    int i = node_new(c, JG_N_ANYOF);
    for (const cJSON *t = type->child; i >= 0 && t; t = t->next) {
        if (!cJSON_IsString(t))
            return jc_fail(c, "type at %s must be a string or a non-empty array of strings",
                           at(path));
        for (const cJSON *u = type->child; u != t; u = u->next)
            if (!strcmp(u->valuestring, t->valuestring))
                return jc_fail(c, "type at %s lists '%s' twice", at(path), t->valuestring);
        int kid = compile_type(c, s, t->valuestring, path, depth);
        if (kid < 0 || node_add_kid(c, i, kid)) return JG_NONE;
    }
    return i;
}

static int has(const cJSON *s, const char *key) {
    return cJSON_GetObjectItemCaseSensitive(s, key) != NULL;
}

static int compile(jc *c, const cJSON *s, const char *path, int depth) {
    if (c->failed) return JG_NONE;
    if (depth > JG_MAX_NESTING)
        return jc_fail(c, "the schema nests deeper than %d levels at %s", JG_MAX_NESTING, at(path));
    if (cJSON_IsTrue(s)) return any_node(c);
    if (cJSON_IsFalse(s)) return jc_fail(c, "the schema false (no value allowed) at %s", at(path));
    if (!cJSON_IsObject(s)) return jc_fail(c, "the schema at %s is not an object", at(path));
    if (check_keywords(c, s, path, NULL)) return JG_NONE;
    const cJSON *ref = cJSON_GetObjectItemCaseSensitive(s, "$ref");
    if (ref) {
        if (check_keywords(c, s, path, "$ref")) return JG_NONE;
        if (!cJSON_IsString(ref)) return jc_fail(c, "$ref at %s must be a string", at(path));
        const cJSON *t = ref_target(c, ref->valuestring, path);
        return t ? compile_ref_target(c, t, ref->valuestring, depth) : JG_NONE;
    }
    static const char *const combinators[] = {"anyOf", "oneOf", "allOf"};
    for (int k = 0; k < 3; k++)
        if (has(s, combinators[k])) return compile_anyof(c, s, combinators[k], path, depth);
    if (has(s, "enum") || has(s, "const")) return compile_literals(c, s, path);
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(s, "type");
    if (type) return compile_typed(c, s, type, path, depth);
    if (has(s, "properties") || has(s, "required") || has(s, "additionalProperties"))
        return compile_object(c, s, path, depth);
    if (has(s, "items") || has(s, "minItems") || has(s, "maxItems"))
        return compile_array(c, s, path, depth);
    if (has(s, "minLength") || has(s, "maxLength"))
        return compile_type(c, s, "string", path, depth);
    if (numeric_bound(s))
        return jc_fail(c, "'%s' at %s needs \"type\": \"integer\"", numeric_bound(s), at(path));
    return any_node(c);
}

/* ---- after compiling: aliases away, cycles, oneOf ---- */

static int resolve(jc *c, int i) {
    for (int steps = 0; i >= 0 && c->g->nodes[i].kind == JG_N_ALIAS; steps++) {
        if (steps > c->g->n_nodes)
            return jc_fail(c, "circular $ref (a definition that is only itself)");
        i = c->g->nodes[i].extra;
    }
    return i;
}

/* anyOf -> anyOf cycles expand forever without consuming a byte. */
static int anyof_cycle(const jg_schema *g, int i, uint8_t *color) {
    if (color[i] == 1) return 1;
    if (color[i] == 2 || g->nodes[i].kind != JG_N_ANYOF) return 0;
    color[i] = 1;
    for (int k = 0; k < g->nodes[i].n_kids; k++)
        if (anyof_cycle(g, g->nodes[i].kids[k], color)) return 1;
    color[i] = 2;
    return 0;
}

/* The bytes a value of node i can start with (anyOf cycles refused before). */
static void first_bytes(const jg_schema *g, int i, uint8_t set[256]) {
    const jg_node *n = &g->nodes[i];
    switch (n->kind) {
    case JG_N_OBJECT: set['{'] = 1; break;
    case JG_N_ARRAY: set['['] = 1; break;
    case JG_N_STRING: set['"'] = 1; break;
    case JG_N_NUMBER:
    case JG_N_INTEGER:
        set['-'] = 1;
        for (int d = '0'; d <= '9'; d++) set[d] = 1;
        break;
    case JG_N_LITERALS:
        for (int k = 0; k < n->n_strs; k++) set[(uint8_t)n->strs[k][0]] = 1;
        break;
    case JG_N_ANYOF:
        for (int k = 0; k < n->n_kids; k++) first_bytes(g, n->kids[k], set);
        break;
    case JG_N_ALIAS: break;
    }
}

static int check_oneof(jc *c, int i) {
    const jg_node *n = &c->g->nodes[i];
    uint8_t seen[256] = {0};
    for (int k = 0; k < n->n_kids; k++) {
        uint8_t set[256] = {0};
        first_bytes(c->g, n->kids[k], set);
        for (int b = 0; b < 256; b++) {
            if (set[b] && seen[b]) {
                jc_fail(c,
                        "oneOf whose branches can start alike (branch %d and an earlier one "
                        "both start with '%c') is not supported; use anyOf",
                        k, b);
                return -1;
            }
            seen[b] |= set[b];
        }
    }
    return 0;
}

static int finish(jc *c) {
    jg_schema *g = c->g;
    for (int i = 0; i < g->n_nodes; i++) {
        jg_node *n = &g->nodes[i];
        if (n->kind == JG_N_ALIAS) continue;
        for (int k = 0; k < n->n_kids; k++) n->kids[k] = resolve(c, n->kids[k]);
        if (n->extra != JG_NONE) n->extra = resolve(c, n->extra);
    }
    g->root = resolve(c, 0);
    if (c->failed) return -1;
    uint8_t *color = calloc((size_t)g->n_nodes, 1);
    if (!color) return jc_fail(c, "out of memory compiling the schema"), -1;
    int cyc = 0;
    for (int i = 0; i < g->n_nodes && !cyc; i++) cyc = anyof_cycle(g, i, color);
    free(color);
    if (cyc) return jc_fail(c, "a $ref cycle through anyOf/oneOf that never reaches a value"), -1;
    for (int k = 0; k < c->n_oneofs; k++)
        if (check_oneof(c, c->oneofs[k])) return -1;
    return 0;
}

static jc *jc_new(char *err, size_t errlen) {
    jc *c = calloc(1, sizeof *c);
    jg_schema *g = calloc(1, sizeof *g);
    if (!c || !g) {
        free(c);
        free(g);
        snprintf(err, errlen, "out of memory compiling the schema");
        return NULL;
    }
    c->g = g;
    c->any = JG_NONE;
    c->err = err;
    c->errlen = errlen;
    return c;
}

static jg_schema *jc_end(jc *c) {
    jg_schema *g = c->g;
    if (c->failed || finish(c) != 0) {
        jg_schema_free(g);
        g = NULL;
    }
    free(c);
    return g;
}

jg_schema *jg_compile(const char *text, size_t len, char *err, size_t errlen) {
    if (len > JG_MAX_SCHEMA_BYTES) {
        snprintf(err, errlen, "the schema is too large (%zu bytes, at most %d)", len,
                 JG_MAX_SCHEMA_BYTES);
        return NULL;
    }
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!root) {
        snprintf(err, errlen, "the schema is not valid JSON (near byte %ld)",
                 end ? (long)(end - text) : 0L);
        return NULL;
    }
    jc *c = jc_new(err, errlen);
    if (!c) {
        cJSON_Delete(root);
        return NULL;
    }
    c->root = root;
    int a = node_new(c, JG_N_ALIAS); /* node 0: "#" */
    if (a == 0) {
        c->ref_json[0] = root;
        c->ref_node[0] = 0;
        c->n_refs = 1;
        int x = compile(c, root, "", 0);
        if (x >= 0) c->g->nodes[0].extra = x;
    }
    jg_schema *g = jc_end(c);
    cJSON_Delete(root);
    return g;
}

jg_schema *jg_compile_any_object(char *err, size_t errlen) {
    jc *c = jc_new(err, errlen);
    if (!c) return NULL;
    int o = node_new(c, JG_N_OBJECT); /* node 0 */
    int a = any_node(c);
    if (o == 0 && a >= 0) c->g->nodes[0].extra = a;
    return jc_end(c);
}

void jg_schema_free(jg_schema *g) {
    if (!g) return;
    for (int i = 0; i < g->n_nodes; i++) {
        jg_node *n = &g->nodes[i];
        for (int k = 0; k < n->n_strs; k++) free(n->strs[k]);
        free(n->strs);
        free(n->lens);
        free(n->kids);
    }
    free(g->nodes);
    free(g);
}
