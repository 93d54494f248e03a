/*
 * test_config.c - the JSON configuration: defaults, a full file that
 * survives a round trip through config_to_json, merging and command-line
 * overrides, every kind of error with a message that names the key's path,
 * cross-field rules, and the num_blocks "auto" arithmetic. The example files
 * in configs/ must load and validate, and configs/default.json must say
 * exactly what config_defaults says.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/config.h"
#include "server/server_config.h"
#include "tests/common/test_util.h"

static char err[1024];

/* The engine's and the server's settings bound as infer-server binds them. */
typedef struct {
    engine_config eng;
    server_settings net;
    config_binding bind[2];
    config_bindings b;
} server_cfg;

static void server_cfg_init(server_cfg *c) {
    c->bind[0] = (config_binding){&config_engine_table, &c->eng};
    c->bind[1] = (config_binding){&server_config_table, &c->net};
    c->b = (config_bindings){c->bind, 2, NULL};
    config_defaults(&c->b);
}

/* Field by field, so a mismatch names the field. */
static int same_config(const server_cfg *a, const server_cfg *b, int skip_api_key) {
    int ok = 1;
#define SAME(f)                                                                                    \
    if (a->f != b->f) {                                                                            \
        fprintf(stderr, "  field %s differs\n", #f);                                               \
        ok = 0;                                                                                    \
    }
#define SAME_STR(f)                                                                                \
    if (strcmp(a->f, b->f) != 0) {                                                                 \
        fprintf(stderr, "  field %s differs: '%s' vs '%s'\n", #f, a->f, b->f);                     \
        ok = 0;                                                                                    \
    }
    SAME_STR(eng.model_path);
    SAME(eng.kv_dtype);
    SAME(eng.model_max_length);
    SAME(eng.n_threads);
    SAME(eng.numerics);
    SAME(eng.batch_max_tokens);
    SAME(eng.batch_max_seqs);
    SAME(eng.batching);
    SAME(eng.max_waiting);
    SAME(eng.num_blocks);
    SAME(eng.kv_memory_mb);
    SAME(eng.num_blocks_cpu);
    SAME(eng.block_size);
    SAME(eng.watermark);
    SAME_STR(eng.swap_path);
    SAME(eng.preemption_mode);
    SAME(net.n_listen);
    for (int i = 0; i < a->net.n_listen && i < b->net.n_listen; i++) SAME_STR(net.listen[i]);
    SAME_STR(net.http_listen);
    SAME(net.max_message_bytes);
    if (!skip_api_key) SAME_STR(net.api_key);
    SAME(net.max_stop_strings);
    SAME(net.request_timeout_ms);
    SAME(net.drain_timeout_ms);
#undef SAME
#undef SAME_STR
    return ok;
}

static void test_defaults_are_documented_values_and_valid(void) {
    server_cfg c;
    server_cfg_init(&c);
    CHECK(strcmp(c.eng.model_path, "") == 0);
    CHECK(c.eng.kv_dtype == KV_F16);
    CHECK(c.eng.model_max_length == 0);
    CHECK(c.eng.n_threads == 0);
    CHECK(c.eng.numerics == BE_NUMERICS_EXACT);
    CHECK(c.eng.batch_max_tokens == 512);
    CHECK(c.eng.batch_max_seqs == 64);
    CHECK(c.eng.batching == ENGINE_BATCH_CONTINUOUS);
    CHECK(c.eng.max_waiting == 1024);
    CHECK(c.eng.num_blocks == CFG_NUM_BLOCKS_AUTO);
    CHECK(c.eng.kv_memory_mb == 256);
    CHECK(c.eng.num_blocks_cpu == 0);
    CHECK(c.eng.block_size == 16);
    CHECK(c.eng.watermark == 0.01);
    CHECK(strcmp(c.eng.swap_path, "") == 0);
    CHECK(c.eng.preemption_mode == ENGINE_PREEMPT_AUTO);
    CHECK(c.net.n_listen == 1 && strcmp(c.net.listen[0], "tcp://127.0.0.1:8700") == 0);
    CHECK(strcmp(c.net.http_listen, "http://127.0.0.1:8080") == 0);
    CHECK(c.net.max_message_bytes == 4 * 1024 * 1024);
    CHECK(strcmp(c.net.api_key, "") == 0);
    CHECK(c.net.max_stop_strings == 16);
    CHECK(c.net.request_timeout_ms == 0);
    CHECK(c.net.drain_timeout_ms == 30000);
    CHECKF(config_validate(&c.b, err, sizeof err) == 0, "%s", err);

    char *json = NULL;
    CHECK(config_to_json(&c.b, &json) == 0 && json);
    if (json) {
        CHECK(strstr(json, "\"num_blocks\":\t\"auto\"") != NULL);
        CHECK(strstr(json, "\"dtype\":\t\"f16\"") != NULL);
        server_cfg back;
        server_cfg_init(&back);
        back.eng.block_size = 64; /* must be overwritten by the load */
        CHECKF(config_load_string(&back.b, json, err, sizeof err) == 0, "%s", err);
        CHECK(same_config(&c, &back, 0));
        free(json);
    }
}

static const char *full_file =
    "{\n"
    "  \"model_loading_config\": {\"model_path\": \"/models/m.gguf\", \"dtype\": \"f32\",\n"
    "                           \"model_max_length\": 4096, \"n_threads\": 6,\n"
    "                           \"numerics\": \"fast\"},\n"
    "  \"batcher_config\": {\"batch_max_tokens\": 2048, \"batch_max_seqs\": 128,\n"
    "                     \"policy\": \"static\", \"max_waiting\": 77},\n"
    "  \"cache_config\": {\"num_blocks\": 4000, \"kv_memory_mb\": 1.5, \"num_blocks_cpu\": 900,\n"
    "                   \"block_size\": 32, \"watermark\": 0.125, \"swap_path\": "
    "\"/tmp/kv.swap\",\n"
    "                   \"preemption_mode\": \"swap\"},\n"
    "  \"server\": {\"listen\": [\"tcp://0.0.0.0:9000\", \"ipc:///tmp/engine.sock\",\n"
    "                         \"tcp://[::1]:9001\"],\n"
    "             \"http_listen\": \"http://localhost:8081\", \"max_message_bytes\": 65536,\n"
    "             \"api_key\": \"s3cret-Key\", \"max_stop_strings\": 4,\n"
    "             \"request_timeout_ms\": 120000, \"drain_timeout_ms\": 0}\n"
    "}\n";

static void check_full_values(const server_cfg *c) {
    CHECK(strcmp(c->eng.model_path, "/models/m.gguf") == 0);
    CHECK(c->eng.kv_dtype == KV_F32);
    CHECK(c->eng.model_max_length == 4096);
    CHECK(c->eng.n_threads == 6);
    CHECK(c->eng.numerics == BE_NUMERICS_FAST);
    CHECK(c->eng.batch_max_tokens == 2048);
    CHECK(c->eng.batch_max_seqs == 128);
    CHECK(c->eng.batching == ENGINE_BATCH_STATIC);
    CHECK(c->eng.max_waiting == 77);
    CHECK(c->eng.num_blocks == 4000);
    CHECK(c->eng.kv_memory_mb == 1.5);
    CHECK(c->eng.num_blocks_cpu == 900);
    CHECK(c->eng.block_size == 32);
    CHECK(c->eng.watermark == 0.125);
    CHECK(strcmp(c->eng.swap_path, "/tmp/kv.swap") == 0);
    CHECK(c->eng.preemption_mode == ENGINE_PREEMPT_SWAP);
    CHECK(c->net.n_listen == 3);
    CHECK(strcmp(c->net.listen[0], "tcp://0.0.0.0:9000") == 0);
    CHECK(strcmp(c->net.listen[1], "ipc:///tmp/engine.sock") == 0);
    CHECK(strcmp(c->net.listen[2], "tcp://[::1]:9001") == 0);
    CHECK(strcmp(c->net.http_listen, "http://localhost:8081") == 0);
    CHECK(c->net.max_message_bytes == 65536);
    CHECK(c->net.max_stop_strings == 4);
    CHECK(c->net.request_timeout_ms == 120000);
    CHECK(c->net.drain_timeout_ms == 0);
}

static int write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    fputs(text, f);
    return fclose(f);
}

static void test_full_file_round_trips_through_to_json(void) {
    char path[] = "/tmp/test_config_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd < 0) return;
    close(fd);
    CHECK(write_file(path, full_file) == 0);

    server_cfg c;
    server_cfg_init(&c);
    CHECKF(config_load_file(&c.b, path, err, sizeof err) == 0, "%s", err);
    check_full_values(&c);
    CHECK(strcmp(c.net.api_key, "s3cret-Key") == 0);
    CHECKF(config_validate(&c.b, err, sizeof err) == 0, "%s", err);

    char *json = NULL;
    CHECK(config_to_json(&c.b, &json) == 0 && json);
    if (json) {
        CHECKF(strstr(json, "s3cret") == NULL, "the API key must not reach the log");
        CHECK(strstr(json, "<redacted>") != NULL);
        server_cfg back;
        server_cfg_init(&back);
        CHECKF(config_load_string(&back.b, json, err, sizeof err) == 0, "%s", err);
        CHECK(same_config(&c, &back, 1));
        check_full_values(&back);
        free(json);
    }
    unlink(path);
}

static void test_file_merges_over_current_values(void) {
    server_cfg c;
    server_cfg_init(&c);
    c.eng.n_threads = 3; /* as if set earlier */
    CHECK(config_load_string(&c.b, "{\"cache_config\": {\"block_size\": 8}}", err, sizeof err) ==
          0);
    CHECK(c.eng.block_size == 8);
    CHECK(c.eng.n_threads == 3);
    CHECK(c.eng.batch_max_tokens == 512);
    /* A second load replaces the listen list as a whole. */
    CHECK(config_load_string(&c.b, "{\"server\": {\"listen\": []}}", err, sizeof err) == 0);
    CHECK(c.net.n_listen == 0);
    CHECK(config_load_string(&c.b, "{}", err, sizeof err) == 0);
    CHECK(config_load_string(&c.b, "\xEF\xBB\xBF{\"server\": {}}", err, sizeof err) == 0);
}

/* Load json over defaults, expect failure with each of the substrings in the
 * message, and the config untouched. */
static void expect_load_error(const char *json, const char *want1, const char *want2) {
    server_cfg c, before;
    server_cfg_init(&c);
    before = c;
    err[0] = '\0';
    int rc = config_load_string(&c.b, json, err, sizeof err);
    CHECKF(rc == -1, "accepted: %s", json);
    CHECKF(want1 == NULL || strstr(err, want1), "message '%s' lacks '%s'", err, want1);
    CHECKF(want2 == NULL || strstr(err, want2), "message '%s' lacks '%s'", err, want2);
    CHECKF(memcmp(&c, &before, sizeof c) == 0, "failed load changed the config: %s", json);
}

static void test_malformed_json_reports_line_and_column(void) {
    expect_load_error("{\n  \"cache_config\": {\n    \"block_size\": 16,\n  }\n}",
                      "line 3, column 21", "malformed JSON (trailing comma)");
    expect_load_error("{\"server\": {\"listen\": [\"tcp://a:1\",\n ]}}", "line 1, column 35",
                      "trailing comma");
    expect_load_error("{\"server\": {\"listen\": [\"tcp://a:1\"}}", "line 1, column 35",
                      "near '}}'");
    expect_load_error("{} trailing", "line 1, column 4", "near 'trailing'");
    expect_load_error("", "empty input", NULL);
    expect_load_error("  \n ", "empty input", NULL);
    expect_load_error("{\"cache_config\": {", "line 1, column 19: malformed JSON (unexpected end)",
                      NULL);
    expect_load_error("{\n\"a\" 1}", "line 2, column 5", "near '1}'");
}

static void test_unknown_keys_are_errors_with_suggestions(void) {
    expect_load_error("{\"cache_config\": {\"num_block\": 4}}",
                      "unknown key 'cache_config.num_block' (did you mean 'num_blocks'?)", NULL);
    expect_load_error("{\"cache_confg\": {}}",
                      "unknown key 'cache_confg' (did you mean 'cache_config'?)", NULL);
    expect_load_error("{\"batcher_config\": {\"batch_max_tokesn\": 4}}",
                      "(did you mean 'batch_max_tokens'?)", NULL);
    /* Right key, wrong section: the full path is suggested. */
    expect_load_error(
        "{\"batcher_config\": {\"block_size\": 16}}",
        "unknown key 'batcher_config.block_size' (did you mean 'cache_config.block_size'?)", NULL);
    expect_load_error("{\"num_blocks\": 16}", "(did you mean 'cache_config.num_blocks'?)", NULL);
    /* Nothing close: no suggestion. */
    server_cfg c;
    server_cfg_init(&c);
    CHECK(config_load_string(&c.b, "{\"cache_config\": {\"zebra\": 1}}", err, sizeof err) == -1);
    CHECK(strstr(err, "unknown key 'cache_config.zebra'") && !strstr(err, "did you mean"));
    expect_load_error("{\"cache_config\": {\"block_size\": 16, \"block_size\": 32}}",
                      "duplicate key 'cache_config.block_size'", NULL);
    expect_load_error("{\"server\": {}, \"server\": {}}", "duplicate key 'server'", NULL);
}

static void test_wrong_types_name_the_key(void) {
    expect_load_error("{\"batcher_config\": {\"batch_max_tokens\": \"abc\"}}",
                      "batcher_config.batch_max_tokens: expected an integer, got \"abc\"", NULL);
    expect_load_error("{\"batcher_config\": {\"batch_max_seqs\": 1.5}}",
                      "batcher_config.batch_max_seqs: expected an integer, got 1.5", NULL);
    expect_load_error("{\"model_loading_config\": {\"n_threads\": true}}",
                      "model_loading_config.n_threads: expected an integer, got true", NULL);
    expect_load_error("{\"cache_config\": {\"watermark\": \"0.1\"}}",
                      "cache_config.watermark: expected a number, got \"0.1\"", NULL);
    expect_load_error("{\"model_loading_config\": {\"model_path\": 5}}",
                      "model_loading_config.model_path: expected a string, got 5", NULL);
    expect_load_error("{\"cache_config\": {\"swap_path\": null}}",
                      "cache_config.swap_path: expected a string, got null", NULL);
    expect_load_error("{\"model_loading_config\": {\"dtype\": 16}}",
                      "model_loading_config.dtype: expected a string", NULL);
    expect_load_error("{\"server\": {\"listen\": \"tcp://127.0.0.1:1\"}}",
                      "server.listen: expected an array of strings", NULL);
    expect_load_error("{\"server\": {\"listen\": [\"tcp://127.0.0.1:1\", 7]}}",
                      "server.listen[1]: expected a string, got 7", NULL);
    expect_load_error("{\"cache_config\": 16}", "cache_config: expected an object, got 16", NULL);
    expect_load_error("[1, 2]", "expected an object at the top level", NULL);
}

static void test_bad_values_name_the_key_and_the_rule(void) {
    expect_load_error("{\"cache_config\": {\"block_size\": 24}}",
                      "cache_config.block_size: must be a power of two between 1 and 256, got 24",
                      NULL);
    expect_load_error("{\"cache_config\": {\"block_size\": 512}}", "got 512", NULL);
    expect_load_error("{\"cache_config\": {\"block_size\": 0}}", "power of two", NULL);
    expect_load_error("{\"cache_config\": {\"watermark\": 0.7}}",
                      "cache_config.watermark: must be between 0 and 0.5, got 0.7", NULL);
    expect_load_error("{\"cache_config\": {\"watermark\": -0.1}}", "cache_config.watermark", NULL);
    expect_load_error("{\"cache_config\": {\"kv_memory_mb\": 0}}",
                      "cache_config.kv_memory_mb: must be greater than 0", NULL);
    expect_load_error("{\"cache_config\": {\"num_blocks\": 0}}",
                      "cache_config.num_blocks: must be \"auto\" or an integer", "got 0");
    expect_load_error("{\"cache_config\": {\"num_blocks\": -1}}", "cache_config.num_blocks",
                      "got -1");
    expect_load_error("{\"cache_config\": {\"num_blocks\": \"lots\"}}", "cache_config.num_blocks",
                      "got \"lots\"");
    expect_load_error("{\"cache_config\": {\"num_blocks\": 2.5}}", "cache_config.num_blocks", NULL);
    expect_load_error("{\"cache_config\": {\"num_blocks_cpu\": -3}}",
                      "cache_config.num_blocks_cpu: must be between 0 and", "got -3");
    expect_load_error("{\"batcher_config\": {\"batch_max_tokens\": 0}}",
                      "batcher_config.batch_max_tokens: must be between 1 and", NULL);
    expect_load_error("{\"batcher_config\": {\"batch_max_tokens\": 1e20}}",
                      "batcher_config.batch_max_tokens: must be between", NULL);
    expect_load_error("{\"batcher_config\": {\"max_waiting\": 0}}", "batcher_config.max_waiting",
                      NULL);
    expect_load_error("{\"model_loading_config\": {\"model_max_length\": -1}}",
                      "model_loading_config.model_max_length", NULL);
    expect_load_error("{\"model_loading_config\": {\"n_threads\": 5000}}",
                      "model_loading_config.n_threads", NULL);
    expect_load_error("{\"model_loading_config\": {\"dtype\": \"bf16\"}}",
                      "model_loading_config.dtype: must be one of \"f32\", \"f16\", got \"bf16\"",
                      NULL);
    expect_load_error("{\"model_loading_config\": {\"numerics\": \"approximate\"}}",
                      "model_loading_config.numerics: must be one of \"exact\", \"fast\", got "
                      "\"approximate\"",
                      NULL);
    expect_load_error("{\"batcher_config\": {\"policy\": \"greedy\"}}",
                      "batcher_config.policy: must be one of", "\"continuous\"");
    expect_load_error("{\"cache_config\": {\"preemption_mode\": \"evict\"}}",
                      "cache_config.preemption_mode: must be one of", "\"recompute\"");
    expect_load_error("{\"server\": {\"max_message_bytes\": 10}}", "server.max_message_bytes",
                      NULL);
    expect_load_error("{\"server\": {\"max_stop_strings\": -1}}", "server.max_stop_strings", NULL);
    expect_load_error("{\"server\": {\"request_timeout_ms\": -5}}", "server.request_timeout_ms",
                      NULL);
    expect_load_error("{\"server\": {\"drain_timeout_ms\": 99999999}}", "server.drain_timeout_ms",
                      NULL);

    char longpath[1200 + 64];
    strcpy(longpath, "{\"model_loading_config\": {\"model_path\": \"");
    size_t n = strlen(longpath);
    memset(longpath + n, 'a', 1100);
    strcpy(longpath + n + 1100, "\"}}");
    expect_load_error(longpath, "model_loading_config.model_path: longer than 1023 bytes", NULL);

    expect_load_error("{\"server\": {\"listen\": [\"udp://1.2.3.4:5\"]}}",
                      "server.listen[0]: expected \"tcp://host:port\" or \"ipc:///path\"",
                      "got \"udp://1.2.3.4:5\"");
    expect_load_error("{\"server\": {\"listen\": [\"tcp://a:1\", \"tcp://host:70000\"]}}",
                      "server.listen[1]", NULL);
    expect_load_error("{\"server\": {\"listen\": [\"tcp://hostonly\"]}}", "server.listen[0]", NULL);
    expect_load_error("{\"server\": {\"listen\": [\"tcp://a:1\", \"tcp://a:1\"]}}",
                      "server.listen[1]: \"tcp://a:1\" is listed twice", NULL);
    expect_load_error("{\"server\": {\"listen\": [\"tcp://a:1\",\"tcp://a:2\",\"tcp://a:3\","
                      "\"tcp://a:4\",\"tcp://a:5\",\"tcp://a:6\",\"tcp://a:7\",\"tcp://a:8\","
                      "\"tcp://a:9\"]}}",
                      "server.listen: must list at most 8 addresses, got 9", NULL);
    expect_load_error("{\"server\": {\"http_listen\": \"tcp://127.0.0.1:80\"}}",
                      "server.http_listen: expected \"http://host:port\"", NULL);

    server_cfg c;
    server_cfg_init(&c);
    CHECK(config_load_string(&c.b, "{\"server\": {\"api_key\": \"has space\"}}", err, sizeof err) ==
          -1);
    CHECK(strstr(err, "server.api_key: must be printable ASCII"));
    CHECKF(strstr(err, "has space") == NULL, "the key must not be echoed: %s", err);

    /* The message from a file starts with the file's name. */
    CHECK(config_load_file(&c.b, "/nonexistent/dir/engine.json", err, sizeof err) == -1);
    CHECK(strstr(err, "/nonexistent/dir/engine.json: cannot open"));
}

static void expect_invalid(const server_cfg *c, const char *want) {
    err[0] = '\0';
    CHECKF(config_validate(&c->b, err, sizeof err) == -1, "accepted; wanted '%s'", want);
    CHECKF(strstr(err, want), "message '%s' lacks '%s'", err, want);
}

static void test_validate_checks_cross_field_rules(void) {
    server_cfg c;
    server_cfg_init(&c);
    c.eng.batch_max_tokens = 32;
    c.eng.batch_max_seqs = 64;
    expect_invalid(
        &c, "batcher_config.batch_max_seqs: must be at most batcher_config.batch_max_tokens (32)");
    c.eng.batch_max_seqs = 32;
    CHECKF(config_validate(&c.b, err, sizeof err) == 0, "%s", err);

    server_cfg_init(&c);
    strcpy(c.eng.swap_path, "/tmp/swap");
    expect_invalid(&c, "cache_config.swap_path: requires cache_config.num_blocks_cpu > 0");
    c.eng.num_blocks_cpu = 64;
    CHECKF(config_validate(&c.b, err, sizeof err) == 0, "%s", err);

    server_cfg_init(&c);
    c.eng.preemption_mode = ENGINE_PREEMPT_SWAP;
    expect_invalid(
        &c, "cache_config.preemption_mode: \"swap\" requires cache_config.num_blocks_cpu > 0");
    c.eng.num_blocks_cpu = 1;
    CHECKF(config_validate(&c.b, err, sizeof err) == 0, "%s", err);

    server_cfg_init(&c);
    c.eng.num_blocks = 8;
    c.eng.model_max_length = 2048;
    expect_invalid(&c, "cache_config.num_blocks: 8 blocks of 16 tokens hold 128 tokens");
    c.eng.num_blocks = 128;
    CHECKF(config_validate(&c.b, err, sizeof err) == 0, "%s", err);

    /* Values put into the struct directly get the per-key rules too. */
    server_cfg_init(&c);
    c.eng.block_size = 24;
    expect_invalid(&c, "cache_config.block_size: must be a power of two between 1 and 256, got 24");
    server_cfg_init(&c);
    c.eng.watermark = 0.9;
    expect_invalid(&c, "cache_config.watermark");
    server_cfg_init(&c);
    c.eng.num_blocks = 0;
    expect_invalid(&c, "cache_config.num_blocks");
    server_cfg_init(&c);
    c.net.n_listen = 9;
    expect_invalid(&c, "server.listen");
    server_cfg_init(&c);
    c.eng.kv_dtype = (kv_dtype)7;
    expect_invalid(&c, "model_loading_config.dtype");
}

static void test_set_overrides_single_keys(void) {
    server_cfg c;
    server_cfg_init(&c);
    CHECK(config_load_string(&c.b, "{\"cache_config\": {\"num_blocks\": 100}}", err, sizeof err) ==
          0);
    CHECK(c.eng.num_blocks == 100);
    /* Flags come after the file and win. */
    CHECKF(config_set(&c.b, "cache_config.num_blocks", "auto", err, sizeof err) == 0, "%s", err);
    CHECK(c.eng.num_blocks == CFG_NUM_BLOCKS_AUTO);
    CHECK(config_set(&c.b, "cache_config.num_blocks", "300", err, sizeof err) == 0);
    CHECK(c.eng.num_blocks == 300);
    CHECK(config_set(&c.b, "cache_config.watermark", "0.2", err, sizeof err) == 0);
    CHECK(c.eng.watermark == 0.2);
    CHECK(config_set(&c.b, "cache_config.kv_memory_mb", "1024", err, sizeof err) == 0);
    CHECK(c.eng.kv_memory_mb == 1024);
    CHECK(config_set(&c.b, "model_loading_config.model_path", "/m/x y.gguf", err, sizeof err) == 0);
    CHECK(strcmp(c.eng.model_path, "/m/x y.gguf") == 0);
    CHECK(config_set(&c.b, "model_loading_config.dtype", "f32", err, sizeof err) == 0);
    CHECK(c.eng.kv_dtype == KV_F32);
    CHECK(config_set(&c.b, "batcher_config.policy", "static", err, sizeof err) == 0);
    CHECK(c.eng.batching == ENGINE_BATCH_STATIC);
    CHECK(config_set(&c.b, "cache_config.preemption_mode", "recompute", err, sizeof err) == 0);
    CHECK(c.eng.preemption_mode == ENGINE_PREEMPT_RECOMPUTE);
    /* A string key takes the text as is, even when it looks like a number. */
    CHECK(config_set(&c.b, "cache_config.swap_path", "123", err, sizeof err) == 0);
    CHECK(strcmp(c.eng.swap_path, "123") == 0);

    CHECK(config_set(&c.b, "server.listen", "tcp://127.0.0.1:1, ipc:///tmp/e.sock", err,
                     sizeof err) == 0);
    CHECK(c.net.n_listen == 2 && strcmp(c.net.listen[1], "ipc:///tmp/e.sock") == 0);
    CHECK(config_set(&c.b, "server.listen", "[\"tcp://h:2\"]", err, sizeof err) == 0);
    CHECK(c.net.n_listen == 1 && strcmp(c.net.listen[0], "tcp://h:2") == 0);
    CHECK(config_set(&c.b, "server.listen", "", err, sizeof err) == 0);
    CHECK(c.net.n_listen == 0);
    CHECK(config_set(&c.b, "server.http_listen", "", err, sizeof err) == 0);
    CHECK(c.net.http_listen[0] == '\0');

    server_cfg before = c;
    CHECK(config_set(&c.b, "batcher_config.batch_max_tokens", "abc", err, sizeof err) == -1);
    CHECK(strstr(err, "batcher_config.batch_max_tokens: expected an integer, got \"abc\""));
    CHECK(config_set(&c.b, "batcher_config.batch_max_tokens", "512abc", err, sizeof err) == -1);
    CHECK(strstr(err, "expected an integer, got \"512abc\""));
    CHECK(config_set(&c.b, "batcher_config.batch_max_tokens", "", err, sizeof err) == -1);
    CHECK(config_set(&c.b, "cache_config.block_size", "24", err, sizeof err) == -1);
    CHECK(strstr(err, "cache_config.block_size: must be a power of two between 1 and 256, got 24"));
    CHECK(config_set(&c.b, "cache_config.num_blocks", "autoo", err, sizeof err) == -1);
    CHECK(strstr(err, "cache_config.num_blocks") && strstr(err, "got \"autoo\""));
    CHECK(config_set(&c.b, "cache_config.num_block", "5", err, sizeof err) == -1);
    CHECK(strstr(err, "unknown key 'cache_config.num_block' (did you mean 'num_blocks'?)"));
    CHECK(config_set(&c.b, "cache_confg.num_blocks", "5", err, sizeof err) == -1);
    CHECK(strstr(err, "unknown key 'cache_confg.num_blocks' (did you mean 'cache_config'?)"));
    CHECK(config_set(&c.b, "block_size", "16", err, sizeof err) == -1);
    CHECK(strstr(err, "did you mean 'cache_config.block_size'?"));
    CHECK(config_set(&c.b, "cache_config", "16", err, sizeof err) == -1);
    CHECK(strstr(err, "'cache_config' is a section"));
    CHECK(config_set(&c.b, "server.listen", "[\"tcp://h:2\"", err, sizeof err) == -1);
    CHECK(strstr(err, "server.listen"));
    CHECK(config_set(&c.b, "server.listen", "tcp://a:1,,tcp://b:2", err, sizeof err) == -1);
    CHECK(strstr(err, "server.listen[1]"));
    CHECK(config_set(&c.b, "model_loading_config.dtype", "q8", err, sizeof err) == -1);
    CHECKF(memcmp(&c, &before, sizeof c) == 0, "failed overrides changed the config");
}

static void test_env_api_key_overrides_file(void) {
    server_cfg c;
    server_cfg_init(&c);
    CHECK(config_load_string(&c.b, "{\"server\": {\"api_key\": \"from-file\"}}", err, sizeof err) ==
          0);
    unsetenv("ENGINE_API_KEY");
    CHECK(config_apply_env(&c.b, err, sizeof err) == 0);
    CHECK(strcmp(c.net.api_key, "from-file") == 0);
    setenv("ENGINE_API_KEY", "from-env", 1);
    CHECK(config_apply_env(&c.b, err, sizeof err) == 0);
    CHECK(strcmp(c.net.api_key, "from-env") == 0);
    setenv("ENGINE_API_KEY", "bad key", 1);
    CHECK(config_apply_env(&c.b, err, sizeof err) == -1);
    CHECK(strstr(err, "ENGINE_API_KEY") && !strstr(err, "bad key"));
    CHECK(strcmp(c.net.api_key, "from-env") == 0);
    unsetenv("ENGINE_API_KEY");
}

static void test_auto_num_blocks_from_memory_budget(void) {
    server_cfg c;
    server_cfg_init(&c);
    /* SmolLM2-135M: 30 layers, 3 KV heads x 64. One f16 block of 16 tokens:
     * 30 * 2 * 16 * 192 * 2 = 368640 bytes; 256 MiB / that = 728.2 -> 728. */
    CHECK(config_resolve_num_blocks(&c.eng, 30, 192, err, sizeof err) == 728);
    c.eng.kv_dtype = KV_F32; /* twice the bytes: 364.09 -> 364 */
    CHECK(config_resolve_num_blocks(&c.eng, 30, 192, err, sizeof err) == 364);
    c.eng.kv_dtype = KV_F16;
    c.eng.block_size = 32;
    CHECK(config_resolve_num_blocks(&c.eng, 30, 192, err, sizeof err) == 364);

    /* An exact fit: 2 * 2 * 16 * 64 * 2 = 8192 bytes, 1 MiB = 128 blocks. */
    server_cfg_init(&c);
    c.eng.kv_memory_mb = 1;
    CHECK(config_resolve_num_blocks(&c.eng, 2, 64, err, sizeof err) == 128);
    c.eng.kv_memory_mb = 1.0 - 1.0 / 1048576; /* one byte short */
    CHECK(config_resolve_num_blocks(&c.eng, 2, 64, err, sizeof err) == 127);
    c.eng.kv_memory_mb = 0.001; /* below one block: still one */
    CHECK(config_resolve_num_blocks(&c.eng, 2, 64, err, sizeof err) == 1);

    /* An explicit count is used as is. */
    c.eng.num_blocks = 42;
    CHECK(config_resolve_num_blocks(&c.eng, 30, 192, err, sizeof err) == 42);

    server_cfg_init(&c);
    CHECK(config_resolve_num_blocks(&c.eng, 0, 192, err, sizeof err) == -1);
    CHECK(strstr(err, "n_layer 0"));
    c.eng.kv_memory_mb = 16777216; /* 16 TiB of 4-byte blocks is far beyond the limit */
    c.eng.block_size = 1;
    CHECK(config_resolve_num_blocks(&c.eng, 1, 1, err, sizeof err) == -1);
    CHECK(strstr(err, "cache_config.kv_memory_mb"));
}

static void test_example_files_load_and_validate(void) {
    server_cfg c, d;
    server_cfg_init(&c);
    server_cfg_init(&d);
    CHECKF(config_load_file(&c.b, tu_src_path("configs/default.json"), err, sizeof err) == 0, "%s",
           err);
    CHECKF(same_config(&c, &d, 0), "configs/default.json must spell out the defaults");
    CHECKF(config_validate(&c.b, err, sizeof err) == 0, "%s", err);

    server_cfg_init(&c);
    CHECKF(config_load_file(&c.b, tu_src_path("configs/small-pool.json"), err, sizeof err) == 0,
           "%s", err);
    CHECKF(config_validate(&c.b, err, sizeof err) == 0, "%s", err);
    CHECK(c.eng.num_blocks > 0 && c.eng.num_blocks_cpu > 0);
}

/* infer-generate binds the engine's table alone: a server section (as in
 * configs/default.json) is accepted and ignored, in a file and in --set,
 * and the printout holds the engine's sections only. Unskipped, the same
 * section is an unknown key. */
static void test_engine_only_binding_skips_the_server_section(void) {
    static const char *const skip[] = {SERVER_CONFIG_SECTION, NULL};
    engine_config e, d;
    config_binding bind = {&config_engine_table, &e};
    config_bindings b = {&bind, 1, skip};
    config_defaults(&b);
    config_engine_defaults(&d);
    CHECKF(config_load_file(&b, tu_src_path("configs/default.json"), err, sizeof err) == 0, "%s",
           err);
    CHECK(memcmp(&e, &d, sizeof e) == 0);
    CHECKF(config_load_string(&b, "{\"server\": {\"listen\": 5, \"zebra\": 1}}", err, sizeof err) ==
               0,
           "%s", err);
    CHECK(config_set(&b, "server.api_key", "x", err, sizeof err) == 0);
    CHECK(memcmp(&e, &d, sizeof e) == 0);
    CHECK(config_load_string(&b, "{\"server\": 5}", err, sizeof err) == -1);
    CHECK(strstr(err, "server: expected an object, got 5"));
    char *json = NULL;
    CHECK(config_to_json(&b, &json) == 0 && json);
    if (json) {
        CHECK(strstr(json, "\"cache_config\"") && !strstr(json, "\"server\""));
        free(json);
    }
    b.skip = NULL;
    CHECK(config_load_string(&b, "{\"server\": {}}", err, sizeof err) == -1);
    CHECK(strstr(err, "unknown key 'server'"));
    CHECK(config_set(&b, "server.api_key", "x", err, sizeof err) == -1);
    CHECK(strstr(err, "unknown key 'server.api_key'"));
}

/* Both tables print their sections in binding order, as one file. */
static void test_to_json_prints_sections_in_binding_order(void) {
    server_cfg c;
    server_cfg_init(&c);
    char *json = NULL;
    CHECK(config_to_json(&c.b, &json) == 0 && json);
    if (!json) return;
    const char *m = strstr(json, "\"model_loading_config\"");
    const char *bc = strstr(json, "\"batcher_config\"");
    const char *cc = strstr(json, "\"cache_config\"");
    const char *sv = strstr(json, "\"server\"");
    CHECK(m && bc && cc && sv && m < bc && bc < cc && cc < sv);
    free(json);
}

static void test_engine_options_mapping(void) {
    server_cfg c;
    server_cfg_init(&c);
    const char *js =
        "{\"batcher_config\": {\"policy\": \"static\", \"batch_max_tokens\": 777,"
        " \"batch_max_seqs\": 9, \"max_waiting\": 5},"
        " \"cache_config\": {\"block_size\": 32, \"num_blocks_cpu\": 40,"
        " \"watermark\": 0.25, \"preemption_mode\": \"swap\", \"swap_path\": \"/tmp/s\"},"
        " \"model_loading_config\": {\"dtype\": \"f32\", \"model_max_length\": 1000}}";
    CHECKF(config_load_string(&c.b, js, err, sizeof err) == 0, "%s", err);
    engine_options o;
    config_engine_options(&c.eng, 123, &o);
    CHECK(o.batching == ENGINE_BATCH_STATIC && o.batch_max_tokens == 777 && o.batch_max_seqs == 9);
    CHECK(o.max_waiting == 5 && o.num_blocks == 123 && o.num_blocks_cpu == 40);
    CHECK(o.block_size == 32 && o.watermark == 0.25 && o.preempt_mode == ENGINE_PREEMPT_SWAP);
    CHECK(o.swap_path && strcmp(o.swap_path, "/tmp/s") == 0);
    CHECK(o.kv_type == KV_F32 && o.max_context == 1000);
    server_cfg_init(&c);
    config_engine_options(&c.eng, 10, &o);
    CHECK(o.batching == ENGINE_BATCH_CONTINUOUS && o.swap_path == NULL &&
          o.preempt_mode == ENGINE_PREEMPT_AUTO);
}

static engine_config PC;
static const config_binding PBIND[] = {{&config_engine_table, &PC}};
static const config_bindings PB = {PBIND, 1, NULL};

/* cache_config.enable_prefix_caching, the first boolean key: on by default,
 * read from JSON true / false and from --set text, refused as anything else
 * with a message naming the key, printed back as a JSON boolean, carried
 * into the engine options. */
static void test_prefix_caching_default_is_on(void) {
    config_defaults(&PB);
    CHECK(PC.enable_prefix_caching == 1);
    engine_options o;
    config_engine_options(&PC, 16, &o);
    CHECK(o.enable_prefix_caching == 1);
}

static void test_prefix_caching_json_and_set_values(void) {
    config_defaults(&PB);
    CHECK(config_load_string(&PB, "{\"cache_config\": {\"enable_prefix_caching\": false}}", err,
                             sizeof err) == 0);
    CHECK(PC.enable_prefix_caching == 0);
    engine_options o;
    config_engine_options(&PC, 16, &o);
    CHECK(o.enable_prefix_caching == 0);
    CHECK(config_set(&PB, "cache_config.enable_prefix_caching", "true", err, sizeof err) == 0);
    CHECK(PC.enable_prefix_caching == 1);
    char *json = NULL;
    CHECK(config_to_json(&PB, &json) == 0 && json);
    CHECKF(json && strstr(json, "\"enable_prefix_caching\":\ttrue"), "%s", json ? json : "");
    free(json);
}

static void test_prefix_caching_other_values_are_refused(void) {
    const char *bad[] = {"1", "yes", "\"true\"", "null"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        config_defaults(&PB);
        CHECK(config_set(&PB, "cache_config.enable_prefix_caching", bad[i], err, sizeof err) != 0);
        CHECKF(strstr(err, "cache_config.enable_prefix_caching") && strstr(err, "true or false"),
               "%s: %s", bad[i], err);
        CHECK(PC.enable_prefix_caching == 1); /* a failed set changes nothing */
    }
    CHECK(config_load_string(&PB, "{\"cache_config\": {\"enable_prefix_caching\": 0}}", err,
                             sizeof err) != 0);
    CHECKF(strstr(err, "true or false"), "%s", err);
}

int main(void) {
    test_defaults_are_documented_values_and_valid();
    test_engine_options_mapping();
    test_full_file_round_trips_through_to_json();
    test_file_merges_over_current_values();
    test_malformed_json_reports_line_and_column();
    test_unknown_keys_are_errors_with_suggestions();
    test_wrong_types_name_the_key();
    test_bad_values_name_the_key_and_the_rule();
    test_validate_checks_cross_field_rules();
    test_set_overrides_single_keys();
    test_env_api_key_overrides_file();
    test_auto_num_blocks_from_memory_budget();
    test_example_files_load_and_validate();
    test_engine_only_binding_skips_the_server_section();
    test_to_json_prints_sections_in_binding_order();
    test_prefix_caching_default_is_on();
    test_prefix_caching_json_and_set_values();
    test_prefix_caching_other_values_are_refused();
    return tu_finish("test_config");
}
