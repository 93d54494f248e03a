/*
 * test_config_prefix_caching.c - cache_config.enable_prefix_caching, the
 * first boolean key: on by default, read from JSON true / false and from
 * --set text, refused as anything else with a message naming the key,
 * printed back as a JSON boolean, and carried into the engine options.
 */
#include <string.h>

#include "engine/config.h"
#include "tests/common/test_util.h"

static engine_config C;
static const config_binding BIND[] = {{&config_engine_table, &C}};
static const config_bindings B = {BIND, 1, NULL};

static void test_default_is_on(void) {
    config_defaults(&B);
    CHECK(C.enable_prefix_caching == 1);
    engine_options o;
    config_engine_options(&C, 16, &o);
    CHECK(o.enable_prefix_caching == 1);
}

static void test_json_and_set_values(void) {
    char err[256] = "";
    config_defaults(&B);
    CHECK(config_load_string(&B, "{\"cache_config\": {\"enable_prefix_caching\": false}}", err,
                             sizeof err) == 0);
    CHECK(C.enable_prefix_caching == 0);
    engine_options o;
    config_engine_options(&C, 16, &o);
    CHECK(o.enable_prefix_caching == 0);
    CHECK(config_set(&B, "cache_config.enable_prefix_caching", "true", err, sizeof err) == 0);
    CHECK(C.enable_prefix_caching == 1);
    char *json = NULL;
    CHECK(config_to_json(&B, &json) == 0 && json);
    CHECKF(json && strstr(json, "\"enable_prefix_caching\":\ttrue"), "%s", json ? json : "");
    free(json);
}

static void test_other_values_are_refused(void) {
    const char *bad[] = {"1", "yes", "\"true\"", "null"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char err[256] = "";
        config_defaults(&B);
        CHECK(config_set(&B, "cache_config.enable_prefix_caching", bad[i], err, sizeof err) != 0);
        CHECKF(strstr(err, "cache_config.enable_prefix_caching") && strstr(err, "true or false"),
               "%s: %s", bad[i], err);
        CHECK(C.enable_prefix_caching == 1); /* a failed set changes nothing */
    }
    char err[256] = "";
    CHECK(config_load_string(&B, "{\"cache_config\": {\"enable_prefix_caching\": 0}}", err,
                             sizeof err) != 0);
    CHECKF(strstr(err, "true or false"), "%s", err);
}

int main(void) {
    test_default_is_on();
    test_json_and_set_values();
    test_other_values_are_refused();
    return tu_finish("test_config_prefix_caching");
}
