/*
 * main.c - `infer-server`: load the model, start the engine, serve the RPC
 * API (rpc_server.c) and HTTP (http.c) until SIGTERM/SIGINT, then drain.
 *
 * Configuration: defaults < --config FILE < ENGINE_API_KEY < flags, in
 * command-line order (docs/config.md); --listen replaces server.listen.
 * Shutdown: the first SIGTERM/SIGINT stops new calls (UNAVAILABLE) and
 * lets the calls in flight finish for up to server.drain_timeout_ms; what
 * is still running then is cancelled; the process exits 0. A second signal
 * cancels at once.
 * Exit codes: 0 clean stop, 1 start-up failure (model, address), 2 bad
 * arguments or config.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "apps/cli_args.h"
#include "core/backend/backend.h"
#include "core/chat.h"
#include "core/gguf.h"
#include "core/model.h"
#include "core/tokenizer.h"
#include "engine/config.h"
#include "engine/engine.h"
#include "rpc/rpc.h"
#include "server/rpc_server.h"
#include "server/server.h"

#ifndef ENGINE_VERSION
#define ENGINE_VERSION "0.1.0"
#endif

#define DEFAULT_MODEL "models/SmolLM2-135M-Instruct.Q4_1.gguf"
#define MAX_CLI_LISTEN 16

static void usage(FILE *f) {
    // clang-format off
    fprintf(f,
"usage: infer-server [options]\n"
"\n"
"Serve a model over RPC (nng + protobuf, docs/protocol.md) and HTTP\n"
"(docs/http.md) until SIGTERM or SIGINT, then drain and exit 0.\n"
"\n"
"  -m, --model PATH         GGUF model file (model_loading_config.model_path;\n"
"                           default: " DEFAULT_MODEL ")\n"
"      --config FILE        JSON config (docs/config.md); flags override it\n"
"      --set KEY=VALUE      set one config key, e.g. --set cache_config.num_blocks=512;\n"
"                           repeatable, applied in order\n"
"      --listen URL         RPC address: tcp://host:port, ipc:///path or\n"
"                           tls+tcp://host:port; repeatable; replaces server.listen\n"
"                           (default tcp://127.0.0.1:8700)\n"
"      --http URL           HTTP address http://host:port, \"\" for none\n"
"                           (server.http_listen; default http://127.0.0.1:8080)\n"
"  -t, --threads N          CPU threads for the forward pass (0 = all cores)\n"
"      --numerics exact|fast  matmul arithmetic (model_loading_config.numerics;\n"
"                           default exact = llama.cpp's results bit for bit)\n"
"      --api-key KEY        require this shared secret on every call\n"
"                           (server.api_key; or ENGINE_API_KEY in the environment)\n"
"      --tls-cert FILE      PEM certificate + private key for tls+tcp:// listeners\n"
"      --tls-ca FILE        PEM CA bundle: require client certificates it signed\n"
"      --frame-timeout MS   time a started frame may take to arrive completely\n"
"                           (default %d)\n"
"      --print-config       print the effective config as JSON and exit\n"
"  -h, --help               this text\n"
"      --version            print the version\n"
"\n"
"Query it with: infer-cli generate \"Hello\"  |  curl http://127.0.0.1:8080/health\n",
            RPC_DEFAULT_FRAME_TIMEOUT_MS);
    // clang-format on
}

typedef struct {
    const char *flag; /* NULL for --set */
    const char *key;
    const char *value;
} cfg_override;

typedef struct {
    const char *config_file;
    cfg_override *ov;
    int n_ov;
    char **set_copies;
    int n_set_copies;
    const char *listen[MAX_CLI_LISTEN];
    int n_listen;
    const char *tls_cert, *tls_ca;
    int frame_timeout_ms;
    int print_config;
    engine_config cfg;
} args;

static void free_args(args *a) {
    for (int i = 0; i < a->n_set_copies; i++) free(a->set_copies[i]);
    free(a->set_copies);
    free(a->ov);
}

enum {
    OPT_CONFIG = 256,
    OPT_SET,
    OPT_LISTEN,
    OPT_HTTP,
    OPT_NUMERICS,
    OPT_API_KEY,
    OPT_TLS_CERT,
    OPT_TLS_CA,
    OPT_FRAME_TIMEOUT,
    OPT_PRINT_CONFIG,
    OPT_VERSION
};

/* Returns -1 to go on, or an exit code. */
static int parse_args(int argc, char **argv, args *a) {
    static const struct option longopts[] = {
        {"model", required_argument, 0, 'm'},
        {"threads", required_argument, 0, 't'},
        {"config", required_argument, 0, OPT_CONFIG},
        {"set", required_argument, 0, OPT_SET},
        {"listen", required_argument, 0, OPT_LISTEN},
        {"http", required_argument, 0, OPT_HTTP},
        {"numerics", required_argument, 0, OPT_NUMERICS},
        {"api-key", required_argument, 0, OPT_API_KEY},
        {"tls-cert", required_argument, 0, OPT_TLS_CERT},
        {"tls-ca", required_argument, 0, OPT_TLS_CA},
        {"frame-timeout", required_argument, 0, OPT_FRAME_TIMEOUT},
        {"print-config", no_argument, 0, OPT_PRINT_CONFIG},
        {"help", no_argument, 0, 'h'},
        {"version", no_argument, 0, OPT_VERSION},
        {0, 0, 0, 0},
    };
    a->ov = calloc((size_t)argc + 1, sizeof *a->ov);
    a->set_copies = calloc((size_t)argc + 1, sizeof *a->set_copies);
    if (!a->ov || !a->set_copies) {
        fprintf(stderr, "infer-server: out of memory\n");
        return 1;
    }
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":m:t:h", longopts, NULL)) != -1) {
        const char *v = optarg;
        switch (c) {
        case 'm':
            a->ov[a->n_ov++] = (cfg_override){"--model", "model_loading_config.model_path", v};
            break;
        case 't':
            a->ov[a->n_ov++] = (cfg_override){"--threads", "model_loading_config.n_threads", v};
            break;
        case OPT_HTTP: a->ov[a->n_ov++] = (cfg_override){"--http", "server.http_listen", v}; break;
        case OPT_NUMERICS:
            a->ov[a->n_ov++] = (cfg_override){"--numerics", "model_loading_config.numerics", v};
            break;
        case OPT_API_KEY:
            a->ov[a->n_ov++] = (cfg_override){"--api-key", "server.api_key", v};
            break;
        case OPT_CONFIG: a->config_file = v; break;
        case OPT_SET: {
            const char *eq = strchr(v, '=');
            if (!eq || eq == v)
                return cli_bad_arg("infer-server",
                                   "--set: expected KEY=VALUE (e.g. cache_config.block_size=32), "
                                   "got '%s'",
                                   v);
            char *copy = strdup(v);
            if (!copy) return 1;
            copy[eq - v] = 0;
            a->set_copies[a->n_set_copies++] = copy;
            a->ov[a->n_ov++] = (cfg_override){NULL, copy, copy + (eq - v) + 1};
            break;
        }
        case OPT_LISTEN:
            if (a->n_listen == MAX_CLI_LISTEN)
                return cli_bad_arg("infer-server", "--listen: at most %d addresses",
                                   MAX_CLI_LISTEN);
            if (strncmp(v, "tcp://", 6) != 0 && strncmp(v, "ipc://", 6) != 0 &&
                strncmp(v, "tls+tcp://", 10) != 0)
                return cli_bad_arg("infer-server",
                                   "--listen: expected tcp://host:port, ipc:///path or "
                                   "tls+tcp://host:port, got '%s'",
                                   v);
            a->listen[a->n_listen++] = v;
            break;
        case OPT_TLS_CERT: a->tls_cert = v; break;
        case OPT_TLS_CA: a->tls_ca = v; break;
        case OPT_FRAME_TIMEOUT:
            if (cli_parse_int(v, 1, 3600000, &a->frame_timeout_ms))
                return cli_bad_arg(
                    "infer-server",
                    "--frame-timeout: expected milliseconds in [1, 3600000], got '%s'", v);
            break;
        case OPT_PRINT_CONFIG: a->print_config = 1; break;
        case 'h': usage(stdout); return 0;
        case OPT_VERSION: printf("infer-server %s\n", ENGINE_VERSION); return 0;
        case ':': return cli_bad_arg("infer-server", "option '%s' needs a value", argv[optind - 1]);
        default:
            if (optopt > 0 && optopt < 128)
                return cli_bad_arg("infer-server", "unknown option '-%c'", optopt);
            return cli_bad_arg("infer-server", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_bad_arg("infer-server", "unexpected argument '%s'", argv[optind]);

    char err[1024];
    engine_config *cfg = &a->cfg;
    config_defaults(cfg);
    if (a->config_file && config_load_file(cfg, a->config_file, err, sizeof err) != 0)
        return cli_bad_arg("infer-server", "--config: %s", err);
    if (config_apply_env(cfg, err, sizeof err) != 0)
        return cli_bad_arg("infer-server", "ENGINE_API_KEY: %s", err);
    for (int i = 0; i < a->n_ov; i++) {
        const cfg_override *o = &a->ov[i];
        if (config_set(cfg, o->key, o->value, err, sizeof err) != 0) {
            if (o->flag) return cli_bad_arg("infer-server", "%s: %s", o->flag, err);
            return cli_bad_arg("infer-server", "--set %s: %s", o->key, err);
        }
    }
    if (!cfg->model_path[0]) snprintf(cfg->model_path, sizeof cfg->model_path, "%s", DEFAULT_MODEL);
    if (config_validate(cfg, err, sizeof err) != 0) return cli_bad_arg("infer-server", "%s", err);
    for (int i = 0; i < a->n_listen; i++)
        if (strncmp(a->listen[i], "tls+tcp://", 10) == 0 && !a->tls_cert)
            return cli_bad_arg("infer-server", "--listen %s: a TLS listener needs --tls-cert",
                               a->listen[i]);
    if (a->print_config) {
        char *json = NULL;
        if (config_to_json(cfg, &json) != 0) return 1;
        printf("%s\n", json);
        free(json);
        return 0;
    }
    return -1;
}

static double mib(double bytes) { return bytes / (1024.0 * 1024.0); }

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void banner(const srv *s, const engine_options *eo, size_t block_bytes, int n_threads,
                   const char *const *urls, int n_urls) {
    const engine_config *c = &s->cfg;
    const llm_hparams *hp = llm_model_hparams(s->model);
    int context = c->model_max_length > 0 && c->model_max_length < hp->n_ctx_train
                      ? c->model_max_length
                      : hp->n_ctx_train;
    const char *fam = s->chat_template ? chat_template_family(s->chat_template) : NULL;
    fprintf(stderr, "infer-server %s\n", ENGINE_VERSION);
    fprintf(stderr,
            "model:     %s (%s, %d layers, vocab %d, context %d), weights %.1f MiB, "
            "chat template %s\n           %s\n",
            hp->name[0] ? hp->name : c->model_path, hp->arch, hp->n_layer, hp->n_vocab, context,
            mib((double)llm_model_weight_bytes(s->model)), fam ? fam : "none", c->model_path);
    fprintf(stderr,
            "kv cache:  dtype %s, %d tokens per block (%.1f KiB); device %d blocks "
            "(%.1f MiB, %ld tokens)",
            c->kv_dtype == KV_F16 ? "f16" : "f32", eo->block_size, (double)block_bytes / 1024.0,
            eo->num_blocks, mib((double)block_bytes * eo->num_blocks),
            (long)eo->num_blocks * eo->block_size);
    if (eo->num_blocks_cpu > 0)
        fprintf(stderr, "; cpu %d blocks (%.1f MiB, %s%s)\n", eo->num_blocks_cpu,
                mib((double)block_bytes * eo->num_blocks_cpu), eo->swap_path ? "file " : "RAM",
                eo->swap_path ? eo->swap_path : "");
    else fprintf(stderr, "; cpu tier none\n");
    const char *pre = c->preemption_mode == CFG_PREEMPT_SWAP        ? "swap"
                      : c->preemption_mode == CFG_PREEMPT_RECOMPUTE ? "recompute"
                      : eo->num_blocks_cpu > 0                      ? "auto (swap)"
                                                                    : "auto (recompute)";
    fprintf(stderr,
            "budgets:   %s batching, %d tokens and %d sequences per step, %d waiting at "
            "most; watermark %g (%d blocks); preemption %s\n",
            eo->static_batching ? "static" : "continuous", eo->batch_max_tokens, eo->batch_max_seqs,
            eo->max_waiting, eo->watermark, (int)(eo->watermark * eo->num_blocks), pre);
    char timeout[32];
    if (c->request_timeout_ms > 0)
        snprintf(timeout, sizeof timeout, "%d ms", c->request_timeout_ms);
    else snprintf(timeout, sizeof timeout, "none");
    fprintf(stderr,
            "limits:    messages %d bytes, %d stop strings, request timeout %s, drain "
            "%d ms, api key %s; %d threads, %s numerics\n",
            c->max_message_bytes, c->max_stop_strings, timeout, c->drain_timeout_ms,
            c->api_key[0] ? "required" : "off", n_threads, be_numerics_name(c->numerics));
    for (int i = 0; i < n_urls; i++) fprintf(stderr, "listening: rpc  %s\n", urls[i]);
    if (c->http_listen[0]) fprintf(stderr, "listening: http %s\n", c->http_listen);
    if (n_urls == 0 && !c->http_listen[0])
        fprintf(stderr, "listening: nothing (no server.listen, no server.http_listen)\n");
}

int main(int argc, char **argv) {
    args a = {0};
    int rc = parse_args(argc, argv, &a);
    if (rc >= 0) {
        free_args(&a);
        return rc;
    }
    /* Signals go to the main thread only (sigwait below): block them before
     * any thread starts. Writes to a closed peer must not kill us. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    srv *s = calloc(1, sizeof *s);
    if (!s) {
        fprintf(stderr, "infer-server: out of memory\n");
        free_args(&a);
        return 1;
    }
    s->cfg = a.cfg;
    atomic_init(&s->draining, 0);
    atomic_init(&s->active_calls, 0);
    atomic_init(&s->connections, 0);
    const engine_config *cfg = &s->cfg;
    char err[1024];
    char *tmpl = NULL;
    rpc_server *rs = NULL;
    int http_started = 0;
    rc = 1;

    fprintf(stderr, "infer-server: loading %s\n", cfg->model_path);
    if (llm_model_load(cfg->model_path, &s->model, NULL, NULL, err, sizeof err) != 0) {
        fprintf(stderr, "infer-server: cannot load model '%s': %s\n", cfg->model_path, err);
        goto done;
    }
    if (tok_load(llm_model_gguf(s->model), &s->tok, err, sizeof err) != 0) {
        fprintf(stderr, "infer-server: cannot load the tokenizer of '%s': %s\n", cfg->model_path,
                err);
        goto done;
    }
    be_cpu_options bo = {cfg->n_threads, cfg->numerics};
    s->be = backend_cpu_create_opts(&bo, err, sizeof err);
    if (!s->be) {
        fprintf(stderr, "infer-server: cannot create the CPU backend: %s\n", err);
        goto done;
    }
    tmpl = llm_model_chat_template(s->model);
    s->chat_template = tmpl;

    const llm_hparams *hp = llm_model_hparams(s->model);
    const int kv_dim = hp->n_head_kv * hp->head_dim;
    int num_blocks = config_resolve_num_blocks(cfg, hp->n_layer, kv_dim, err, sizeof err);
    if (num_blocks < 0) {
        fprintf(stderr, "infer-server: %s\n", err);
        rc = 2;
        goto done;
    }
    engine_options eo;
    config_engine_options(cfg, num_blocks, &eo);
    size_t block_bytes = (size_t)hp->n_layer * 2 * (size_t)eo.block_size * (size_t)kv_dim *
                         (eo.kv_type == KV_F16 ? 2 : 4);
    if (engine_create(s->model, s->be, s->tok, &eo, &s->eng, err, sizeof err) != 0) {
        fprintf(stderr, "infer-server: cannot start the engine: %s\n", err);
        goto done;
    }

    /* RPC listeners: --listen replaces server.listen. */
    const char *urls[MAX_CLI_LISTEN + CFG_MAX_LISTEN];
    int n_urls = 0;
    if (a.n_listen)
        for (int i = 0; i < a.n_listen; i++) urls[n_urls++] = a.listen[i];
    else
        for (int i = 0; i < cfg->n_listen; i++) urls[n_urls++] = cfg->listen[i];
    rpc_tls_opts tls = {.cert_key_file = a.tls_cert, .ca_file = a.tls_ca};
    rpc_conn_opts co;
    rpc_conn_opts_default(&co);
    co.max_frame = (size_t)cfg->max_message_bytes;
    if (a.frame_timeout_ms > 0) co.frame_timeout_ms = a.frame_timeout_ms;
    if (n_urls > 0 && rpc_server_start(s, urls, n_urls, &tls, &co, &rs, err, sizeof err) != 0) {
        fprintf(stderr, "infer-server: %s\n", err);
        goto done;
    }
    if (cfg->http_listen[0]) {
        if (srv_http_start(s, cfg->http_listen, err, sizeof err) != 0) {
            fprintf(stderr, "infer-server: HTTP: %s\n", err);
            goto done;
        }
        http_started = 1;
    }
    const char *bound[MAX_CLI_LISTEN + CFG_MAX_LISTEN];
    for (int i = 0; i < n_urls; i++) bound[i] = rpc_server_url(rs, i);
    banner(s, &eo, block_bytes, s->be->n_threads, bound, n_urls);
    fprintf(stderr, "infer-server: ready\n");

    /* Serve until a signal. */
    int sig = 0;
    while (sigwait(&sigs, &sig) != 0) {
    }
    int n_active = atomic_load(&s->active_calls);
    fprintf(stderr, "infer-server: %s: draining (%d call%s in flight, up to %d ms)\n",
            sig == SIGTERM ? "SIGTERM" : "SIGINT", n_active, n_active == 1 ? "" : "s",
            cfg->drain_timeout_ms);
    atomic_store(&s->draining, 1);
    double until = now_ms() + cfg->drain_timeout_ms;
    int forced = 0;
    while (atomic_load(&s->active_calls) > 0) {
        double left = until - now_ms();
        if (left <= 0) break;
        if (left > 50) left = 50;
        struct timespec ts = {0, (long)(left * 1e6)};
        if (sigtimedwait(&sigs, NULL, &ts) > 0) {
            fprintf(stderr, "infer-server: second signal: cancelling the calls in flight\n");
            forced = 1;
            break;
        }
    }
    n_active = atomic_load(&s->active_calls);
    if (n_active > 0) {
        if (!forced)
            fprintf(stderr, "infer-server: drain timeout: cancelling %d call%s\n", n_active,
                    n_active == 1 ? "" : "s");
        if (rs) {
            rpc_server_cancel_all(rs);
            rpc_server_wait_idle(rs, 5000);
        }
    }
    rc = 0;
done:
    if (http_started) srv_http_stop(s);
    if (rs) rpc_server_stop(rs);
    if (s->eng) {
        engine_stats st;
        engine_get_stats(s->eng, &st);
        if (rc == 0)
            fprintf(stderr,
                    "infer-server: stopped (%ld requests, %ld prompt and %ld generated "
                    "tokens)\n",
                    st.requests_finished, st.prompt_tokens, st.generated_tokens);
        engine_destroy(s->eng);
    }
    free(tmpl);
    if (s->be) backend_free(s->be);
    if (s->tok) tok_free(s->tok);
    if (s->model) llm_model_free(s->model);
    free(s);
    free_args(&a);
    return rc;
}
