/*
 * test_json_grammar.c - the schema compiler and the byte-level matcher:
 * strings the schema allows are accepted and complete, strings it forbids
 * are refused at the first wrong byte, unsupported or malformed schemas are
 * refused naming the keyword, hostile schemas hit the bounds, and random
 * walks through the matcher (any allowed byte at each step) always end in
 * JSON that parses and validates (tests/common/schema_check.c, written from
 * the keywords' definitions).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json_grammar.h"
#include "tests/common/schema_check.h"
#include "tests/common/test_util.h"

/* 1 when the whole text is accepted and forms a complete value. */
static int matches(const char *schema, const char *text) {
    char err[256];
    jg_schema *g = schema ? jg_compile(schema, strlen(schema), err, sizeof err)
                          : jg_compile_any_object(err, sizeof err);
    if (!g) {
        fprintf(stderr, "compile %s: %s\n", schema, err);
        return -1;
    }
    jg_matcher *m = jg_matcher_new(g);
    int ok = jg_matcher_feed(m, text, strlen(text)) == 0 && jg_matcher_accepting(m);
    jg_matcher_free(m);
    jg_schema_free(g);
    return ok;
}

static void test_accept_reject(void) {
    const char *person = "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\","
                         "\"maxLength\":5},\"age\":{\"type\":\"integer\"},\"tags\":{\"type\":"
                         "\"array\",\"items\":{\"enum\":[\"a\",\"b\",1]},\"maxItems\":2}},"
                         "\"required\":[\"name\"],\"additionalProperties\":false}";
    CHECK(matches(person, "{\"name\":\"bob\"}") == 1);
    CHECK(matches(person, "{ \"age\": -12 ,\n  \"name\":\"\xc3\xa9t\xc3\xa9\"}") == 1);
    CHECK(matches(person, "{\"name\":\"x\",\"tags\":[\"a\",1]}") == 1);
    CHECK(matches(person, "{\"name\":\"x\",\"tags\":[\"a\",1,\"b\"]}") == 0); /* maxItems */
    CHECK(matches(person, "{\"age\":3}") == 0);                               /* required */
    CHECK(matches(person, "{\"name\":\"abcdef\"}") == 0);                     /* maxLength */
    CHECK(matches(person, "{\"name\":\"x\",\"other\":1}") == 0);              /* additional */
    CHECK(matches(person, "{\"name\":\"x\",\"name\":\"y\"}") == 0);           /* twice */
    CHECK(matches(person, "{\"name\":\"x\",\"age\":1.5}") == 0);              /* integer */
    CHECK(matches(person, "{\"name\":\"x\",\"age\":01}") == 0);               /* leading 0 */
    CHECK(matches(person, "{\"name\":\"x\"") == 0);                           /* incomplete */
    CHECK(matches(person, "{\"name\":\"x\"} ") == 0);                         /* trailing */
    CHECK(matches(person, "{\"name\":\"\\u0041\"}") == 0);                    /* \u not produced */
    CHECK(matches(person, "{\"name\":\"\\n\\\"\"}") == 1);
    CHECK(matches(person, "{\"name\":\"\xed\xa0\x80\"}") == 0); /* surrogate */
    CHECK(matches(person, "{\"name\":\"a\x01\"}") == 0);        /* control */
    CHECK(matches(NULL, "{}") == 1);
    CHECK(matches(NULL, "{\"a\":[1,{\"b\":null}],\"c\":true,\"d\":-0.5e+3}") == 1);
    CHECK(matches(NULL, "[1]") == 0);
    CHECK(matches(NULL, "{\"a\":tru}") == 0);
    CHECK(matches("{\"type\":\"number\"}", "12.5E-3") == 1);
    CHECK(matches("{\"type\":\"number\"}", "12.") == 0);
    CHECK(matches("{\"type\":[\"string\",\"null\"]}", "null") == 1);
    CHECK(matches("{\"type\":[\"string\",\"null\"]}", "\"n\"") == 1);
    CHECK(matches("{\"type\":[\"string\",\"null\"]}", "0") == 0);
    CHECK(matches("{\"const\":{\"k\":[1,2]}}", "{\"k\":[1,2]}") == 1);
    CHECK(matches("{\"enum\":[1,12,\"x\"]}", "12") == 1);
    CHECK(matches("{\"enum\":[1,12,\"x\"]}", "1") == 1);
    CHECK(matches("{\"enum\":[1,12,\"x\"]}", "13") == 0);
    CHECK(matches("{\"type\":\"string\",\"minLength\":2}", "\"a\"") == 0);
    const char *range = "{\"type\":\"integer\",\"minimum\":-5,\"exclusiveMaximum\":120}";
    CHECK(matches(range, "-5") == 1 && matches(range, "0") == 1 && matches(range, "119") == 1);
    CHECK(matches(range, "-6") == 0 && matches(range, "120") == 0 && matches(range, "-0") == 1);
    CHECK(matches(range, "1000") == 0 && matches(range, "-10") == 0);
    const char *tight = "{\"type\":\"integer\",\"minimum\":37,\"maximum\":41}";
    CHECK(matches(tight, "37") == 1 && matches(tight, "41") == 1 && matches(tight, "3") == 0);
    CHECK(matches(tight, "42") == 0 && matches(tight, "-1") == 0);
    CHECK(matches("{\"type\":\"array\",\"minItems\":1}", "[]") == 0);
    CHECK(matches("{\"anyOf\":[{\"type\":\"integer\"},{\"type\":\"object\",\"properties\":"
                  "{\"a\":{\"type\":\"boolean\"}},\"additionalProperties\":false}]}",
                  "{\"a\":false}") == 1);
    const char *tree = "{\"$defs\":{\"node\":{\"type\":\"object\",\"properties\":{\"v\":{\"type\":"
                       "\"integer\"},\"kids\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/$defs/"
                       "node\"}}},\"required\":[\"v\"],\"additionalProperties\":false}},"
                       "\"$ref\":\"#/$defs/node\"}";
    CHECK(matches(tree, "{\"v\":1,\"kids\":[{\"v\":2},{\"v\":3,\"kids\":[]}]}") == 1);
    CHECK(matches(tree, "{\"v\":1,\"kids\":[{\"w\":2}]}") == 0);
}

static void test_done_and_prefix(void) {
    char err[256];
    jg_schema *g = jg_compile("{\"type\":\"integer\"}", 18, err, sizeof err);
    CHECK(g != NULL);
    jg_matcher *m = jg_matcher_new(g);
    CHECK(jg_matcher_feed(m, "-", 1) == 0 && !jg_matcher_accepting(m));
    CHECK(jg_matcher_feed(m, "x", 1) == -1); /* state unchanged on refusal */
    CHECK(jg_matcher_feed(m, "42", 2) == 0 && jg_matcher_accepting(m) && !jg_matcher_done(m));
    CHECK(jg_matcher_can_feed(m, "1", 1) && !jg_matcher_can_feed(m, ".", 1));
    jg_matcher_free(m);
    jg_schema_free(g);
    g = jg_compile_any_object(err, sizeof err);
    m = jg_matcher_new(g);
    CHECK(jg_matcher_feed(m, "{ }", 3) == 0 && jg_matcher_done(m));
    jg_matcher_reset(m);
    CHECK(!jg_matcher_accepting(m) && jg_matcher_can_feed(m, "{", 1) &&
          !jg_matcher_can_feed(m, " ", 1));
    /* whitespace runs are bounded */
    char ws[64] = "{";
    memset(ws + 1, ' ', JG_MAX_WS);
    CHECK(jg_matcher_feed(m, ws, strlen(ws)) == 0 && !jg_matcher_can_feed(m, " ", 1));
    jg_matcher_free(m);
    jg_schema_free(g);
}

static int refused_with(const char *schema, const char *needle) {
    char err[256] = "";
    jg_schema *g = jg_compile(schema, strlen(schema), err, sizeof err);
    jg_schema_free(g);
    if (g) fprintf(stderr, "accepted: %s\n", schema);
    else if (!strstr(err, needle)) fprintf(stderr, "message '%s' lacks '%s'\n", err, needle);
    return !g && strstr(err, needle) != NULL;
}

static void test_refusals(void) {
    CHECK(refused_with("{\"type\":\"string\",\"pattern\":\"a+\"}", "'pattern' at the root"));
    CHECK(refused_with("{\"properties\":{\"x\":{\"type\":\"integer\",\"multipleOf\":2}}}",
                       "'multipleOf' at /properties/x"));
    CHECK(refused_with("{\"type\":\"strin\"}", "unknown type 'strin'"));
    CHECK(refused_with("{\"type\":\"object\",\"required\":[\"a\"]}", "'a', which is not in"));
    CHECK(refused_with("{\"$ref\":\"http://x/y\"}", "$ref 'http://x/y'"));
    CHECK(refused_with("{\"$ref\":\"#/$defs/nope\"}", "names no definition"));
    CHECK(refused_with("{\"$ref\":\"#\"}", "circular"));
    CHECK(refused_with("{\"$defs\":{\"a\":{\"anyOf\":[{\"$ref\":\"#/$defs/a\"},{\"type\":"
                       "\"null\"}]}},\"$ref\":\"#/$defs/a\"}",
                       "cycle"));
    CHECK(refused_with("{\"oneOf\":[{\"type\":\"integer\"},{\"type\":\"number\"}]}", "use anyOf"));
    CHECK(refused_with("{\"type\":\"array\",\"minItems\":3,\"maxItems\":2}", "exceeds"));
    CHECK(refused_with("{\"enum\":[]}", "enum"));
    CHECK(refused_with("{\"type\":\"string\",\"enum\":[1]}", "none of the type"));
    CHECK(refused_with("{\"type\":", "not valid JSON"));
    CHECK(refused_with("false", "false"));
    CHECK(refused_with("[1]", "not an object"));
    CHECK(refused_with("{\"allOf\":[{},{}]}", "allOf"));
    CHECK(refused_with("{\"properties\":{\"a\\\"b\":{}}}", "quote"));
    CHECK(refused_with("{\"type\":\"string\",\"format\":\"date\"}", "'format'"));
    CHECK(refused_with("{\"type\":\"number\",\"minimum\":0}", "only on integer"));
    CHECK(refused_with("{\"maximum\":3}", "needs \"type\": \"integer\""));
    CHECK(refused_with("{\"type\":\"integer\",\"minimum\":3,\"maximum\":2.5}", "no integer"));
    /* hostile: deep nesting, many nodes, huge text */
    char *deep = malloc(20000);
    strcpy(deep, "");
    for (int i = 0; i < 100; i++) strcat(deep, "{\"items\":");
    strcat(deep, "{}");
    for (int i = 0; i < 100; i++) strcat(deep, "}");
    CHECK(refused_with(deep, "nests deeper"));
    free(deep);
    char *big = malloc(200000), *p = big;
    p += sprintf(p, "{\"anyOf\":[{}");
    for (int i = 0; i < 4100; i++) p += sprintf(p, ",{\"enum\":[1]}");
    strcpy(p, "]}");
    CHECK(refused_with(big, "more than 4096 nodes"));
    p = big + sprintf(big, "{\"description\":\"");
    memset(p, 'x', 70000);
    strcpy(p + 70000, "\"}");
    CHECK(refused_with(big, "too large"));
    free(big);
}

/* A random walk: at each byte pick one the matcher allows (structure bytes
 * more often, so it ends), stop when done or, once accepting, by chance. */
static int random_walk(jg_matcher *m, uint64_t *rng, char *out, int cap) {
    static const char alphabet[] = "{}[],:\" \n\\-0123456789.eE+abcdefghijklmnopqrstuvwxyz_tfnul";
    static const char *const multi[] = {
        "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80", "\\n", "true", "false", "null"};
    int len = 0;
    jg_matcher_reset(m);
    while (len < cap - 8) {
        if (jg_matcher_done(m)) break;
        *rng = *rng * 6364136223846793005ULL + 1442695040888963407ULL;
        uint32_t r = (uint32_t)(*rng >> 33);
        if (jg_matcher_accepting(m) && r % 4 == 0) break;
        const char *pick[96];
        size_t plen[96];
        int n = 0;
        for (const char *a = alphabet; *a; a++)
            if (jg_matcher_can_feed(m, a, 1)) pick[n] = a, plen[n++] = 1;
        for (size_t k = 0; k < sizeof multi / sizeof *multi; k++)
            if (jg_matcher_can_feed(m, multi[k], strlen(multi[k])))
                pick[n] = multi[k], plen[n++] = strlen(multi[k]);
        if (n == 0) { /* a dead end: never allowed */
            out[len] = 0;
            fprintf(stderr, "dead end after: %s\n", out);
            return -1;
        }
        int c = (int)((r >> 3) % (uint32_t)n);
        for (int k = 0; k < n && (len > 40 || r % 3 == 0); k++)
            if (plen[k] == 1 && strchr("}]\"", *pick[k])) c = k; /* prefer closing */
        if (jg_matcher_feed(m, pick[c], plen[c]) != 0) return -1;
        memcpy(out + len, pick[c], plen[c]);
        len += (int)plen[c];
    }
    out[len] = 0;
    return jg_matcher_accepting(m) ? len : -2;
}

static void test_random_walks(void) {
    static const char *const schemas[] = {
        NULL,
        "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\",\"maxLength\":8},"
        "\"n\":{\"type\":\"number\"},\"ok\":{\"type\":\"boolean\"},\"l\":{\"type\":\"array\","
        "\"items\":{\"type\":\"integer\"},\"minItems\":1,\"maxItems\":3}},\"required\":[\"name\","
        "\"l\"],\"additionalProperties\":false}",
        "{\"type\":\"array\",\"items\":{\"anyOf\":[{\"type\":\"null\"},{\"enum\":[\"red\","
        "\"green\","
        "3]},{\"type\":\"object\",\"properties\":{\"k\":{\"const\":\"v\"}},\"required\":[\"k\"]}]}"
        "}",
        "{\"$defs\":{\"t\":{\"type\":\"object\",\"properties\":{\"v\":{\"type\":[\"integer\","
        "\"null\"]},"
        "\"kids\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/$defs/t\"},\"maxItems\":2}},"
        "\"required\":[\"v\",\"kids\"],\"additionalProperties\":false}},\"$ref\":\"#/$defs/t\"}",
        "{\"oneOf\":[{\"type\":\"string\",\"minLength\":3},{\"type\":\"integer\"},{\"type\":"
        "\"null\"}]}",
        "{\"type\":\"array\",\"items\":{\"type\":\"integer\",\"minimum\":-30,\"maximum\":7}}",
        "{\"type\":\"array\",\"items\":{\"type\":\"integer\",\"exclusiveMinimum\":999,"
        "\"maximum\":1002}}",
        "{\"type\":\"object\",\"additionalProperties\":{\"type\":\"string\"},\"properties\":{\"a\":"
        "{\"type\":\"integer\"},\"ab\":{\"type\":\"boolean\"}}}",
    };
    char err[256], buf[4096], why[128];
    for (size_t s = 0; s < sizeof schemas / sizeof *schemas; s++) {
        const char *txt = schemas[s] ? schemas[s] : "{\"type\":\"object\"}";
        jg_schema *g = schemas[s] ? jg_compile(txt, strlen(txt), err, sizeof err)
                                  : jg_compile_any_object(err, sizeof err);
        CHECKF(g != NULL, "schema %zu: %s", s, err);
        if (!g) continue;
        jg_matcher *m = jg_matcher_new(g);
        int complete = 0, dead = 0;
        uint64_t rng = 1234 + s;
        for (int i = 0; i < 300; i++) {
            int n = random_walk(m, &rng, buf, sizeof buf);
            if (n == -1) dead++;
            if (n < 0) continue;
            complete++;
            int ok = sc_validate(txt, buf, why, sizeof why);
            CHECKF(ok, "schema %zu: '%s' does not validate: %s", s, buf, why);
            if (!ok) break;
        }
        CHECKF(dead == 0, "schema %zu: %d walks reached a state with no allowed byte", s, dead);
        CHECKF(complete >= 200, "schema %zu: only %d of 300 walks completed", s, complete);
        jg_matcher_free(m);
        jg_schema_free(g);
    }
}

int main(void) {
    test_accept_reject();
    test_done_and_prefix();
    test_refusals();
    test_random_walks();
    return tu_finish("test_json_grammar");
}
