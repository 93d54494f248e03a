/*
 * fuzz_config.c - the configuration loader (engine/config.h) on arbitrary
 * JSON text, through config_load_string over the defaults, with the tables
 * infer-server binds: the engine's and the server's.
 *
 * Checks: a refused text leaves both structs unchanged and says why; an
 * accepted one is validated as a whole (either answer is fine) and printed
 * with config_to_json, and that printout, loaded over the defaults, must be
 * accepted and print the same (the printer writes the file format).
 */
#include <string.h>

#include "engine/config.h"
#include "server/server_config.h"
#include "tests/fuzz/fuzz.h"

typedef struct {
    engine_config eng;
    server_settings net;
    config_binding bind[2];
    config_bindings b;
} both_tables;

static void fresh(both_tables *t) {
    memset(t, 0, sizeof *t); /* padding too, so the structs compare with memcmp */
    t->bind[0] = (config_binding){&config_engine_table, &t->eng};
    t->bind[1] = (config_binding){&server_config_table, &t->net};
    t->b = (config_bindings){t->bind, 2, NULL};
    config_defaults(&t->b);
}

/* The printout of t loads over the defaults and prints identically. */
static void check_printout(const both_tables *t) {
    char *text, *again, err[512];
    FUZZ_CHECK(config_to_json(&t->b, &text) == 0);
    both_tables back;
    fresh(&back);
    int rc = config_load_string(&back.b, text, err, sizeof err);
    if (rc != 0) fprintf(stderr, "printout refused: %s\n%s\n", err, text);
    FUZZ_CHECK(rc == 0);
    FUZZ_CHECK(config_to_json(&back.b, &again) == 0);
    FUZZ_CHECK(strcmp(text, again) == 0);
    free(text);
    free(again);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *json = malloc(size + 1);
    if (!json) return 0;
    memcpy(json, data, size);
    json[size] = 0;
    both_tables t;
    engine_config eng_before;
    server_settings net_before;
    char err[512] = "";
    fresh(&t);
    memcpy(&eng_before, &t.eng, sizeof eng_before);
    memcpy(&net_before, &t.net, sizeof net_before);
    if (config_load_string(&t.b, json, err, sizeof err) != 0) {
        FUZZ_CHECK(memcmp(&t.eng, &eng_before, sizeof eng_before) == 0);
        FUZZ_CHECK(memcmp(&t.net, &net_before, sizeof net_before) == 0);
        FUZZ_CHECK(err[0] != 0 && memchr(err, 0, sizeof err) != NULL);
    } else {
        (void)config_validate(&t.b, err, sizeof err);
        check_printout(&t);
    }
    free(json);
    return 0;
}
