/* test_cli_args.c - strict command-line value parsing (apps/cli_args.h)
 * and the start-up rules the programs share (apps/app_start.h): where the
 * default model is found, unique swap file names. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "apps/app_start.h"
#include "apps/cli_args.h"
#include "tests/common/test_util.h"

/* The default model from any directory: ENGINE_MODEL first, else next to
 * the executable or in the repository above its build directory. */
static void test_default_model(void) {
    char out[1024];
    setenv("ENGINE_MODEL", "/some/where.gguf", 1);
    app_default_model("/x/build/infer-server", out, sizeof out);
    CHECKF(!strcmp(out, "/some/where.gguf"), "ENGINE_MODEL ignored: %s", out);
    unsetenv("ENGINE_MODEL");

    char root[] = "/tmp/test_cli_args_XXXXXX";
    CHECK(mkdtemp(root) != NULL);
    char dir[256], model[512], exe[512], cwd[1024];
    snprintf(dir, sizeof dir, "%s/models", root);
    CHECK(mkdir(dir, 0700) == 0);
    snprintf(model, sizeof model, "%s/%s", root, APP_DEFAULT_MODEL);
    FILE *f = fopen(model, "w");
    CHECK(f != NULL);
    if (f) fclose(f);
    snprintf(exe, sizeof exe, "%s/build/infer-generate", root);
    snprintf(dir, sizeof dir, "%s/build", root);
    CHECK(mkdir(dir, 0700) == 0);
    CHECK(getcwd(cwd, sizeof cwd) != NULL);
    CHECK(chdir("/") == 0); /* a directory without models/ */
    app_default_model(exe, out, sizeof out);
    snprintf(dir, sizeof dir, "%s/%s", root, APP_DEFAULT_MODEL);
    CHECKF(!strcmp(out, dir), "from the build dir: '%s', want '%s'", out, dir);
    snprintf(exe, sizeof exe, "/nonexistent/bin/infer-generate");
    app_default_model(exe, out, sizeof out);
    CHECKF(!strcmp(out, APP_DEFAULT_MODEL), "no model anywhere: '%s'", out);
    CHECK(chdir(cwd) == 0);
    unlink(model);
    snprintf(dir, sizeof dir, "%s/models", root);
    rmdir(dir);
    snprintf(dir, sizeof dir, "%s/build", root);
    rmdir(dir);
    rmdir(root);
}

/* A swap_path ending in XXXXXX becomes a name of this process's own, so
 * two servers started from one config never share a swap file. */
static void test_unique_swap_path(void) {
    char got[2][1024];
    for (int i = 0; i < 2; i++) {
        app_config_args a;
        CHECK(app_config_args_init(&a, "test_cli_args", 4) < 0);
        app_config_flag(&a, "--num-blocks-cpu", "cache_config.num_blocks_cpu", "8");
        app_config_flag(&a, "--swap-path", "cache_config.swap_path", "/tmp/test-kv.swap.XXXXXX");
        app_config_flag(&a, "-m", "model_loading_config.model_path", "m.gguf");
        engine_config c;
        CHECK(app_resolve_config(&a, &c, NULL) < 0);
        snprintf(got[i], sizeof got[i], "%s", c.swap_path);
        CHECKF(strncmp(got[i], "/tmp/test-kv.swap.", 18) == 0 && !strstr(got[i], "XXXXXX"),
               "swap path '%s'", got[i]);
        CHECKF(access(got[i], F_OK) != 0, "%s left behind", got[i]);
        app_config_args_free(&a);
    }
    CHECKF(strcmp(got[0], got[1]) != 0, "two resolves share '%s'", got[0]);
}

/* A program that runs no server refuses server settings on its command
 * line (a config file's server section it skips: one file serves all). */
static void test_server_keys_refused(void) {
    app_config_args a;
    CHECK(app_config_args_init(&a, "infer-generate", 4) < 0);
    CHECK(app_config_set_arg(&a, "server.api_key=k") < 0);
    engine_config c;
    CHECK(app_resolve_config(&a, &c, NULL) == 2);
    app_config_args_free(&a);
}

int main(void) {
    int i = 7;
    CHECK(cli_parse_int("42", 0, 100, &i) == 0 && i == 42);
    CHECK(cli_parse_int("-3", -5, 5, &i) == 0 && i == -3);
    i = 7;
    CHECK(cli_parse_int("101", 0, 100, &i) == -1 && i == 7);
    CHECK(cli_parse_int("", 0, 100, &i) == -1);
    CHECK(cli_parse_int("12x", 0, 100, &i) == -1);
    CHECK(cli_parse_int("1.5", 0, 100, &i) == -1);
    CHECK(cli_parse_int("99999999999999999999", 0, 2000000000, &i) == -1 && i == 7);
    uint64_t u = 1;
    CHECK(cli_parse_u64("18446744073709551615", &u) == 0 && u == UINT64_MAX);
    u = 1;
    CHECK(cli_parse_u64("18446744073709551616", &u) == -1 && u == 1);
    CHECK(cli_parse_u64("-1", &u) == -1 && cli_parse_u64("+1", &u) == -1);
    CHECK(cli_parse_u64("7 ", &u) == -1 && u == 1);
    float f = 0;
    CHECK(cli_parse_float("0.25", &f) == 0 && f == 0.25f);
    CHECK(cli_parse_float("1e3", &f) == 0 && f == 1000.0f);
    f = 2;
    CHECK(cli_parse_float("inf", &f) == -1 && cli_parse_float("nan", &f) == -1);
    CHECK(cli_parse_float("1e99", &f) == -1 && cli_parse_float("0.5q", &f) == -1 && f == 2);
    CHECK(cli_bad_arg("test_cli_args", "expected message: %d", 1) == 2);
    /* not started by that name: the name itself */
    CHECK(!strcmp(cli_invoked_path("infer-generate"), "infer-generate"));
    CHECK(!strcmp(cli_invoked_path("test_cli_args"), program_invocation_name));
    test_default_model();
    test_unique_swap_path();
    test_server_keys_refused();
    return tu_finish("test_cli_args");
}
