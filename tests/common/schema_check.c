/*
 * schema_check.c - see schema_check.h. A direct reading of the keywords'
 * definitions (JSON Schema 2020-12), recursive over value and schema.
 */
#include "tests/common/schema_check.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

static const cJSON *kw(const cJSON *s, const char *k) {
    return cJSON_GetObjectItemCaseSensitive(s, k);
}

static int is_type(const cJSON *v, const char *t) {
    if (!strcmp(t, "object")) return cJSON_IsObject(v);
    if (!strcmp(t, "array")) return cJSON_IsArray(v);
    if (!strcmp(t, "string")) return cJSON_IsString(v);
    if (!strcmp(t, "number")) return cJSON_IsNumber(v);
    if (!strcmp(t, "integer")) return cJSON_IsNumber(v) && v->valuedouble == floor(v->valuedouble);
    if (!strcmp(t, "boolean")) return cJSON_IsBool(v);
    if (!strcmp(t, "null")) return cJSON_IsNull(v);
    return 0;
}

static long utf8_len(const char *s) {
    long n = 0;
    for (; *s; s++) n += ((unsigned char)*s & 0xc0) != 0x80;
    return n;
}

static int valid(const cJSON *v, const cJSON *s, const cJSON *root, int depth, char *why, int wl);

static int count_ok(const cJSON *s, const char *lo, const char *hi, long n) {
    const cJSON *a = kw(s, lo), *b = kw(s, hi);
    return (!a || n >= a->valuedouble) && (!b || n <= b->valuedouble);
}

static int valid_object(const cJSON *v, const cJSON *s, const cJSON *root, int depth, char *why,
                        int wl) {
    const cJSON *props = kw(s, "properties"), *add = kw(s, "additionalProperties");
    for (const cJSON *r = kw(s, "required") ? kw(s, "required")->child : NULL; r; r = r->next)
        if (!kw(v, r->valuestring)) return snprintf(why, wl, "missing '%s'", r->valuestring), 0;
    for (const cJSON *m = v->child; m; m = m->next) {
        const cJSON *ps = props ? kw(props, m->string) : NULL;
        if (ps) {
            if (!valid(m, ps, root, depth + 1, why, wl)) return 0;
        } else if (add && cJSON_IsFalse(add)) {
            return snprintf(why, wl, "additional property '%s'", m->string), 0;
        } else if (add && cJSON_IsObject(add) && !valid(m, add, root, depth + 1, why, wl)) {
            return 0;
        }
    }
    return 1;
}

static int valid_array(const cJSON *v, const cJSON *s, const cJSON *root, int depth, char *why,
                       int wl) {
    if (!count_ok(s, "minItems", "maxItems", cJSON_GetArraySize(v)))
        return snprintf(why, wl, "item count"), 0;
    const cJSON *items = kw(s, "items");
    if (items && cJSON_IsObject(items))
        for (const cJSON *e = v->child; e; e = e->next)
            if (!valid(e, items, root, depth + 1, why, wl)) return 0;
    return 1;
}

static int valid_combinators(const cJSON *v, const cJSON *s, const cJSON *root, int depth,
                             char *why, int wl) {
    const cJSON *c;
    if ((c = kw(s, "anyOf"))) {
        int any = 0;
        for (const cJSON *b = c->child; b && !any; b = b->next)
            any = valid(v, b, root, depth + 1, why, wl);
        if (!any) return snprintf(why, wl, "no anyOf branch"), 0;
    }
    if ((c = kw(s, "oneOf"))) {
        int n = 0;
        for (const cJSON *b = c->child; b; b = b->next) n += valid(v, b, root, depth + 1, why, wl);
        if (n != 1) return snprintf(why, wl, "%d oneOf branches match", n), 0;
    }
    if ((c = kw(s, "allOf")))
        for (const cJSON *b = c->child; b; b = b->next)
            if (!valid(v, b, root, depth + 1, why, wl)) return 0;
    return 1;
}

static int valid(const cJSON *v, const cJSON *s, const cJSON *root, int depth, char *why, int wl) {
    if (depth > 200) return snprintf(why, wl, "too deep"), 0;
    if (cJSON_IsTrue(s)) return 1;
    if (!cJSON_IsObject(s)) return snprintf(why, wl, "bad schema"), 0;
    const cJSON *ref = kw(s, "$ref");
    if (ref) {
        const char *r = ref->valuestring;
        const cJSON *t = NULL;
        if (!strcmp(r, "#")) t = root;
        else if (!strncmp(r, "#/$defs/", 8)) t = kw(kw(root, "$defs"), r + 8);
        else if (!strncmp(r, "#/definitions/", 14)) t = kw(kw(root, "definitions"), r + 14);
        if (!t || !valid(v, t, root, depth + 1, why, wl)) return 0;
    }
    const cJSON *type = kw(s, "type");
    if (cJSON_IsString(type) && !is_type(v, type->valuestring))
        return snprintf(why, wl, "not of type %s", type->valuestring), 0;
    if (cJSON_IsArray(type)) {
        int ok = 0;
        for (const cJSON *t = type->child; t; t = t->next) ok |= is_type(v, t->valuestring);
        if (!ok) return snprintf(why, wl, "none of the types"), 0;
    }
    const cJSON *e = kw(s, "enum"), *c = kw(s, "const");
    if (c && !cJSON_Compare(v, c, 1)) return snprintf(why, wl, "not the const"), 0;
    if (e) {
        int ok = 0;
        for (const cJSON *x = e->child; x && !ok; x = x->next) ok = cJSON_Compare(v, x, 1);
        if (!ok) return snprintf(why, wl, "not in enum"), 0;
    }
    if (cJSON_IsNumber(v)) {
        const cJSON *b;
        double x = v->valuedouble;
        if (((b = kw(s, "minimum")) && x < b->valuedouble) ||
            ((b = kw(s, "maximum")) && x > b->valuedouble) ||
            ((b = kw(s, "exclusiveMinimum")) && x <= b->valuedouble) ||
            ((b = kw(s, "exclusiveMaximum")) && x >= b->valuedouble))
            return snprintf(why, wl, "%g out of bounds", x), 0;
    }
    if (cJSON_IsString(v) && !count_ok(s, "minLength", "maxLength", utf8_len(v->valuestring)))
        return snprintf(why, wl, "string length"), 0;
    if (cJSON_IsObject(v) && !valid_object(v, s, root, depth, why, wl)) return 0;
    if (cJSON_IsArray(v) && !valid_array(v, s, root, depth, why, wl)) return 0;
    return valid_combinators(v, s, root, depth, why, wl);
}

int sc_validate(const char *schema, const char *text, char *why, int whylen) {
    char dummy[8];
    if (!why) {
        why = dummy;
        whylen = sizeof dummy;
    }
    cJSON *s = cJSON_Parse(schema);
    cJSON *v = cJSON_ParseWithOpts(text, NULL, 1);
    int ok = 0;
    if (!s) snprintf(why, whylen, "schema does not parse");
    else if (!v) snprintf(why, whylen, "output does not parse");
    else ok = valid(v, s, s, 0, why, whylen);
    cJSON_Delete(s);
    cJSON_Delete(v);
    return ok;
}
