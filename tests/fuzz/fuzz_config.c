/*
 * fuzz_config.c - the configuration loader (engine/config.h) on arbitrary
 * JSON text, through config_load_string over the defaults.
 *
 * Checks: a refused text leaves the config unchanged and says why; an
 * accepted one is validated as a whole (either answer is fine) and printed
 * with config_to_json, and that printout, loaded over the defaults, must be
 * accepted and print the same (the printer writes the file format).
 */
#include <string.h>

#include "engine/config.h"
#include "tests/fuzz/fuzz.h"

static void fresh(engine_config *c) {
    memset(c, 0, sizeof *c); /* padding too, so configs compare with memcmp */
    config_defaults(c);
}

/* The printout of c loads over the defaults and prints identically. */
static void check_printout(const engine_config *c) {
    char *text, *again, err[512];
    FUZZ_CHECK(config_to_json(c, &text) == 0);
    engine_config back;
    fresh(&back);
    int rc = config_load_string(&back, text, err, sizeof err);
    if (rc != 0) fprintf(stderr, "printout refused: %s\n%s\n", err, text);
    FUZZ_CHECK(rc == 0);
    FUZZ_CHECK(config_to_json(&back, &again) == 0);
    FUZZ_CHECK(strcmp(text, again) == 0);
    free(text);
    free(again);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *json = malloc(size + 1);
    if (!json) return 0;
    memcpy(json, data, size);
    json[size] = 0;
    engine_config c, before;
    char err[512] = "";
    fresh(&c);
    memcpy(&before, &c, sizeof c);
    if (config_load_string(&c, json, err, sizeof err) != 0) {
        FUZZ_CHECK(memcmp(&c, &before, sizeof c) == 0);
        FUZZ_CHECK(err[0] != 0 && memchr(err, 0, sizeof err) != NULL);
    } else {
        (void)config_validate(&c, err, sizeof err);
        check_printout(&c);
    }
    free(json);
    return 0;
}
