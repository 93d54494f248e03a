/* app_start.c - see app_start.h. */
#include "apps/app_start.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "apps/cli_args.h"
#include "server/server_config.h"

int app_config_args_init(app_config_args *a, const char *prog, int argc) {
    memset(a, 0, sizeof *a);
    a->prog = prog;
    a->ov = calloc((size_t)argc + 1, sizeof *a->ov);
    a->set_copies = calloc((size_t)argc + 1, sizeof *a->set_copies);
    if (!a->ov || !a->set_copies) {
        fprintf(stderr, "%s: out of memory\n", prog);
        return 1;
    }
    return -1;
}

void app_config_args_free(app_config_args *a) {
    for (int i = 0; i < a->n_set_copies; i++) free(a->set_copies[i]);
    free(a->set_copies);
    free(a->ov);
    a->set_copies = NULL;
    a->ov = NULL;
    a->n_set_copies = a->n_ov = 0;
}

void app_config_flag(app_config_args *a, const char *flag, const char *key, const char *value) {
    a->ov[a->n_ov++] = (app_override){flag, key, value};
}

int app_config_set_arg(app_config_args *a, const char *arg) {
    const char *eq = strchr(arg, '=');
    if (!eq || eq == arg)
        return cli_bad_arg(
            a->prog, "--set: expected KEY=VALUE (e.g. cache_config.block_size=32), got '%s'", arg);
    char *copy = strdup(arg);
    if (!copy) {
        fprintf(stderr, "%s: out of memory\n", a->prog);
        return 1;
    }
    copy[eq - arg] = 0;
    a->set_copies[a->n_set_copies++] = copy;
    a->ov[a->n_ov++] = (app_override){NULL, copy, copy + (eq - arg) + 1};
    return -1;
}

/* The tables a program binds: the engine's, and the server's when it runs
 * one; without a server the server section is skipped. bind has room for 2. */
static config_bindings app_bindings(engine_config *c, const config_binding *server,
                                    config_binding *bind) {
    static const char *const no_server[] = {SERVER_CONFIG_SECTION, NULL};
    bind[0] = (config_binding){&config_engine_table, c};
    if (!server) return (config_bindings){bind, 1, no_server};
    bind[1] = *server;
    return (config_bindings){bind, 2, NULL};
}

void app_default_model(const char *exe, char *out, size_t cap) {
    const char *env = getenv("ENGINE_MODEL");
    if (env && *env) {
        snprintf(out, cap, "%s", env);
        return;
    }
    snprintf(out, cap, "%s", APP_DEFAULT_MODEL);
    if (access(out, R_OK) == 0) return;
    char self[PATH_MAX];
    if (!exe) {
        ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
        if (n <= 0) return;
        self[n] = 0;
        exe = self;
    }
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", exe);
    char *slash = strrchr(dir, '/');
    if (!slash) return;
    *slash = 0;
    /* build/infer-server: build/, then the repository above it */
    for (int up = 0; up < 2; up++) {
        char cand[PATH_MAX + 64];
        snprintf(cand, sizeof cand, "%s/%s", dir, APP_DEFAULT_MODEL);
        if (access(cand, R_OK) == 0) {
            snprintf(out, cap, "%s", cand);
            return;
        }
        slash = strrchr(dir, '/');
        if (!slash || slash == dir) return;
        *slash = 0;
    }
}

/* cache_config.swap_path ending in XXXXXX: a name of this process's own
 * (mkstemp), so two programs started from one config never share (and
 * truncate) one swap file. The file is removed again at once: the KV pool
 * creates it when the engine starts and removes it when it stops, and a
 * program that fails before that leaves nothing behind. -1, or 2. */
static int unique_swap_path(const char *prog, engine_config *c) {
    size_t n = strlen(c->swap_path);
    if (n < 6 || strcmp(c->swap_path + n - 6, "XXXXXX") != 0) return -1;
    int fd = mkstemp(c->swap_path);
    if (fd < 0) {
        fprintf(stderr, "%s: cache_config.swap_path: cannot create a file from '%s': %s\n", prog,
                c->swap_path, strerror(errno));
        return 2;
    }
    close(fd);
    unlink(c->swap_path);
    return -1;
}

int app_resolve_config(const app_config_args *a, engine_config *c, const config_binding *server) {
    char err[1024];
    config_binding bind[2];
    config_bindings b = app_bindings(c, server, bind);
    config_defaults(&b);
    if (a->config_file && config_load_file(&b, a->config_file, err, sizeof err) != 0)
        return cli_bad_arg(a->prog, "--config: %s", err);
    if (config_apply_env(&b, err, sizeof err) != 0) return cli_bad_arg(a->prog, "%s", err);
    for (int i = 0; i < a->n_ov; i++) {
        const app_override *o = &a->ov[i];
        size_t sl = strlen(SERVER_CONFIG_SECTION);
        if (!server && strncmp(o->key, SERVER_CONFIG_SECTION, sl) == 0 && o->key[sl] == '.')
            return cli_bad_arg(a->prog,
                               "--set %s: server settings belong to infer-server; %s runs no "
                               "server",
                               o->key, a->prog);
        if (config_set(&b, o->key, o->value, err, sizeof err) != 0) {
            if (o->flag) return cli_bad_arg(a->prog, "%s: %s", o->flag, err);
            return cli_bad_arg(a->prog, "--set %s: %s", o->key, err);
        }
    }
    if (!c->model_path[0]) app_default_model(NULL, c->model_path, sizeof c->model_path);
    if (config_validate(&b, err, sizeof err) != 0) return cli_bad_arg(a->prog, "%s", err);
    return a->print_config ? -1 : unique_swap_path(a->prog, c);
}

int app_print_config(const app_config_args *a, engine_config *c, const config_binding *server) {
    config_binding bind[2];
    config_bindings b = app_bindings(c, server, bind);
    char *json = NULL;
    if (config_to_json(&b, &json) != 0) {
        fprintf(stderr, "%s: out of memory\n", a->prog);
        return 1;
    }
    printf("%s\n", json);
    free(json);
    return 0;
}

int app_bad_option(const char *prog, int c, char **argv) {
    if (c == ':') return cli_bad_arg(prog, "option '%s' needs a value", argv[optind - 1]);
    if (optopt > 0 && optopt < 128) return cli_bad_arg(prog, "unknown option '-%c'", optopt);
    return cli_bad_arg(prog, "unknown option '%s'", argv[optind - 1]);
}

int app_open(const char *prog, const app_open_opts *o, app_runtime *rt) {
    char err[1024];
    memset(rt, 0, sizeof *rt);
    if (llm_model_load(o->model_path, &rt->model, o->progress, o->progress_user, err, sizeof err) !=
        0) {
        if (o->progress_abort) o->progress_abort(o->progress_user);
        fprintf(stderr, "%s: cannot load model '%s': %s\n", prog, o->model_path, err);
        if (access(o->model_path, F_OK) != 0 && errno == ENOENT)
            fprintf(stderr, "%s: %s\n", prog, APP_MODEL_HINT);
        return 1;
    }
    if (o->with_tokenizer && tok_load(llm_model_gguf(rt->model), &rt->tok, err, sizeof err) != 0) {
        fprintf(stderr, "%s: cannot load the tokenizer of '%s': %s\n", prog, o->model_path, err);
        app_close(rt);
        return 1;
    }
    be_cpu_options bo = {o->n_threads, o->numerics};
    rt->be = backend_cpu_create_opts(&bo, err, sizeof err);
    if (!rt->be) {
        fprintf(stderr, "%s: cannot create the CPU backend: %s\n", prog, err);
        app_close(rt);
        return 1;
    }
    return -1;
}

void app_close(app_runtime *rt) {
    if (rt->be) backend_free(rt->be);
    if (rt->tok) tok_free(rt->tok);
    if (rt->model) llm_model_free(rt->model);
    memset(rt, 0, sizeof *rt);
}

int app_engine_options(const char *prog, const engine_config *c, const llm_model *m,
                       engine_options *eo, engine_limits *lim) {
    char err[1024];
    const llm_hparams *hp = llm_model_hparams(m);
    int num_blocks =
        config_resolve_num_blocks(c, hp->n_layer, hp->n_head_kv * hp->head_dim, err, sizeof err);
    if (num_blocks < 0) {
        fprintf(stderr, "%s: %s\n", prog, err);
        return 2;
    }
    config_engine_options(c, num_blocks, eo);
    engine_limits_for(m, eo, lim);
    return -1;
}

static double mib(double bytes) { return bytes / (1024.0 * 1024.0); }

void app_print_engine_banner(const engine_options *eo, const engine_limits *lim) {
    const double bb = (double)lim->block_bytes;
    fprintf(stderr,
            "kv cache:  dtype %s, %d tokens per block (%.1f KiB); device %d blocks "
            "(%.1f MiB, %ld tokens)",
            eo->kv_type == KV_F16 ? "f16" : "f32", lim->block_size, bb / 1024.0, lim->num_blocks,
            mib(bb * lim->num_blocks), (long)lim->num_blocks * lim->block_size);
    if (eo->num_blocks_cpu > 0)
        fprintf(stderr, "; cpu %d blocks (%.1f MiB, %s%s)\n", eo->num_blocks_cpu,
                mib(bb * eo->num_blocks_cpu), eo->swap_path ? "file " : "RAM",
                eo->swap_path ? eo->swap_path : "");
    else fprintf(stderr, "; cpu tier none\n");
    const char *eff = eo->preempt_mode != ENGINE_PREEMPT_AUTO ? ""
                      : eo->num_blocks_cpu > 0                ? " (swap)"
                                                              : " (recompute)";
    fprintf(stderr,
            "batching:  %s, %d tokens and %d sequences per step; watermark %g (%d blocks); "
            "preemption %s%s\n",
            engine_batching_names[eo->batching], eo->batch_max_tokens, eo->batch_max_seqs,
            eo->watermark, lim->watermark_blocks, engine_preempt_names[eo->preempt_mode], eff);
}
