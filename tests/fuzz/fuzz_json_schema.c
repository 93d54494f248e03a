/*
 * fuzz_json_schema.c - the JSON schema compiler and the byte-level matcher
 * (core/json_grammar.h) on arbitrary input.
 *
 * The input is a schema, a NUL byte, and a document. The compiler must
 * refuse or accept any schema without crashing, within its bounds. When it
 * accepts, the document's bytes are fed one at a time (a refused byte is
 * skipped); the checks are the matcher's contract: can_feed agrees with
 * feed, a refused byte leaves the state as it was, done implies accepting,
 * and whenever the bytes taken so far are accepting they parse as JSON.
 */
#include <cjson/cJSON.h>
#include <string.h>

#include "core/json_grammar.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *nul = memchr(data, 0, size);
    size_t slen = nul ? (size_t)(nul - data) : size;
    char err[256];
    jg_schema *g = slen == 0 ? jg_compile_any_object(err, sizeof err)
                             : jg_compile((const char *)data, slen, err, sizeof err);
    if (!g) return 0;
    jg_matcher *m = jg_matcher_new(g);
    FUZZ_CHECK(m != NULL);
    const uint8_t *doc = nul ? nul + 1 : data + size;
    size_t dlen = (size_t)(data + size - doc);
    char *taken = malloc(dlen + 1);
    size_t n = 0;
    for (size_t i = 0; i < dlen && taken; i++) {
        int can = jg_matcher_can_feed(m, &doc[i], 1);
        int acc_before = jg_matcher_accepting(m);
        int rc = jg_matcher_feed(m, &doc[i], 1);
        FUZZ_CHECK((rc == 0) == (can != 0));
        if (rc != 0) {
            FUZZ_CHECK(jg_matcher_accepting(m) == acc_before);
            continue;
        }
        taken[n++] = (char)doc[i];
        if (jg_matcher_done(m)) FUZZ_CHECK(jg_matcher_accepting(m));
        if (jg_matcher_accepting(m)) {
            taken[n] = 0;
            cJSON *j = cJSON_ParseWithOpts(taken, NULL, 1);
            FUZZ_CHECK(j != NULL);
            cJSON_Delete(j);
        }
    }
    free(taken);
    jg_matcher_free(m);
    jg_schema_free(g);
    return 0;
}
