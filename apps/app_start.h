/*
 * app_start.h - the start-up the programs share (infer-server,
 * infer-generate, infer-bench): the configuration from defaults, a
 * --config file, the environment and flags; the model, its tokenizer and
 * the CPU backend; engine options sized against the model; the banner lines
 * that describe the KV cache and the batching budgets.
 *
 * Messages go to stderr prefixed with the program's name; functions return
 * -1 to go on or the exit code the program should return (1 start-up
 * failure, 2 bad arguments or config), as cli_bad_arg does.
 * Thread-safety: for main() before any thread starts.
 */
#ifndef APPS_APP_START_H
#define APPS_APP_START_H

#include "core/backend/backend.h"
#include "core/model.h"
#include "core/tokenizer.h"
#include "engine/config.h"
#include "engine/engine.h"

#define APP_DEFAULT_MODEL "models/SmolLM2-135M-Instruct.Q4_1.gguf"
/* What a user is told when the model file is not there. */
#define APP_MODEL_HINT                                                                             \
    "fetch the default model with tools/fetch-model (run from the repository root), "              \
    "or pass -m PATH (or set ENGINE_MODEL=PATH)"

#ifndef ENGINE_VERSION
#define ENGINE_VERSION "0.1.0"
#endif

/* A command-line setting of one config key, applied with config_set after
 * the --config file, in command-line order. */
typedef struct {
    const char *flag; /* "--block-size", or NULL for --set */
    const char *key;  /* dotted key */
    const char *value;
} app_override;

/* The config part of a program's arguments. */
typedef struct {
    const char *prog;
    const char *config_file;
    app_override *ov;
    int n_ov;
    char **set_copies; /* --set arguments, split at '=' */
    int n_set_copies;
    int print_config;
} app_config_args;

/* Room for argc overrides. -1, or 1 (out of memory). */
int app_config_args_init(app_config_args *a, const char *prog, int argc);
void app_config_args_free(app_config_args *a);
/* A shortcut flag that sets one key. */
void app_config_flag(app_config_args *a, const char *flag, const char *key, const char *value);
/* --set KEY=VALUE. */
int app_config_set_arg(app_config_args *a, const char *arg);
/* The model to load when the config names none: $ENGINE_MODEL when set,
 * else the first APP_DEFAULT_MODEL that exists relative to the current
 * directory, to the executable's directory or to its parent (the
 * repository, for build/infer-server), else APP_DEFAULT_MODEL as is (the
 * load then fails with APP_MODEL_HINT). exe is the program's own path
 * (/proc/self/exe; NULL to look it up). */
void app_default_model(const char *exe, char *out, size_t cap);

/* defaults < --config < the environment < overrides in order, the default
 * model path (app_default_model) when none is set, then config_validate. The engine's sections
 * go to c; server binds the server's table (server/server_config.h) for the
 * program that runs one, and is NULL in the others, which accept and ignore
 * a server section (one config file serves every program). */
int app_resolve_config(const app_config_args *a, engine_config *c, const config_binding *server);
/* --print-config: the effective config (the same bindings) as JSON on
 * stdout; returns 0 or 1. */
int app_print_config(const app_config_args *a, engine_config *c, const config_binding *server);

/* getopt_long's ':' (missing value) and '?' (unknown option) as messages;
 * returns 2. */
int app_bad_option(const char *prog, int c, char **argv);

/* The model, its tokenizer and the CPU backend. */
typedef struct {
    llm_model *model;
    llm_tokenizer *tok; /* NULL when not asked for */
    backend *be;
} app_runtime;

typedef struct {
    const char *model_path;
    int n_threads; /* 0 = all cores */
    be_numerics numerics;
    int with_tokenizer;
    llm_progress_fn progress;           /* may be NULL */
    void (*progress_abort)(void *user); /* may be NULL: loading failed, before the message */
    void *progress_user;
} app_open_opts;

/* Load and create; on failure prints why and frees what was made. */
int app_open(const char *prog, const app_open_opts *o, app_runtime *rt);
void app_close(app_runtime *rt);

/* The config's engine options with the device block count resolved
 * against the model, and their limits. */
int app_engine_options(const char *prog, const engine_config *c, const llm_model *m,
                       engine_options *eo, engine_limits *lim);

/* "kv cache: ..." and "batching: ..." banner lines. */
void app_print_engine_banner(const engine_options *eo, const engine_limits *lim);

#endif
