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

#include "apps/app_start.h"
#include "apps/cli_args.h"
#include "base/clock.h"
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
#include "server/server_config.h"

#define PROG "infer-server"
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
"                           default: " APP_DEFAULT_MODEL ")\n"
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
"      --frame-timeout MS   time a started RPC frame may take to arrive completely,\n"
"                           and the longest stall of an HTTP body\n"
"                           (server.frame_timeout_ms, default %d)\n"
"      --print-config       print the effective config as JSON and exit\n"
"  -h, --help               this text\n"
"      --version            print the version\n"
"\n"
"Query it with: build/infer-cli generate \"Hello\"  |  curl http://127.0.0.1:8080/health\n",
            RPC_DEFAULT_FRAME_TIMEOUT_MS);
    // clang-format on
}

typedef struct {
    app_config_args ca;
    const char *listen[MAX_CLI_LISTEN];
    int n_listen;
    const char *tls_cert, *tls_ca;
    engine_config cfg;
    server_settings net;
} args;

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

static int add_listen(args *a, const char *v) {
    if (a->n_listen == MAX_CLI_LISTEN)
        return cli_bad_arg(PROG, "--listen: at most %d addresses", MAX_CLI_LISTEN);
    if (strncmp(v, "tcp://", 6) != 0 && strncmp(v, "ipc://", 6) != 0 &&
        strncmp(v, "tls+tcp://", 10) != 0)
        return cli_bad_arg(PROG,
                           "--listen: expected tcp://host:port, ipc:///path or "
                           "tls+tcp://host:port, got '%s'",
                           v);
    a->listen[a->n_listen++] = v;
    return -1;
}

/* One option; -1 to go on, or an exit code. */
static int parse_option(args *a, int c, const char *v, char **argv) {
    app_config_args *ca = &a->ca;
    switch (c) {
    case 'm': app_config_flag(ca, "--model", "model_loading_config.model_path", v); break;
    case 't': app_config_flag(ca, "--threads", "model_loading_config.n_threads", v); break;
    case OPT_HTTP: app_config_flag(ca, "--http", "server.http_listen", v); break;
    case OPT_NUMERICS: app_config_flag(ca, "--numerics", "model_loading_config.numerics", v); break;
    case OPT_API_KEY:
        /* "--api-key $KEY" with KEY unset must not start a server open to all */
        if (!*v)
            return cli_bad_arg(PROG, "--api-key: the key is empty (an unset variable?); give a "
                                     "key, or leave the flag out to run without one");
        app_config_flag(ca, "--api-key", "server.api_key", v);
        break;
    case OPT_CONFIG: ca->config_file = v; break;
    case OPT_SET: return app_config_set_arg(ca, v);
    case OPT_LISTEN: return add_listen(a, v);
    case OPT_TLS_CERT: a->tls_cert = v; break;
    case OPT_TLS_CA: a->tls_ca = v; break;
    case OPT_FRAME_TIMEOUT:
        app_config_flag(ca, "--frame-timeout", "server.frame_timeout_ms", v);
        break;
    case OPT_PRINT_CONFIG: ca->print_config = 1; break;
    case 'h': usage(stdout); return 0;
    case OPT_VERSION: printf("infer-server %s\n", ENGINE_VERSION); return 0;
    default: return app_bad_option(PROG, c, argv);
    }
    return -1;
}

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
    int rc = app_config_args_init(&a->ca, PROG, argc);
    if (rc >= 0) return rc;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":m:t:h", longopts, NULL)) != -1)
        if ((rc = parse_option(a, c, optarg, argv)) >= 0) return rc;
    if (optind < argc) return cli_bad_arg(PROG, "unexpected argument '%s'", argv[optind]);
    config_binding net = {&server_config_table, &a->net};
    if ((rc = app_resolve_config(&a->ca, &a->cfg, &net)) >= 0) return rc;
    for (int i = 0; i < a->n_listen; i++)
        if (strncmp(a->listen[i], "tls+tcp://", 10) == 0 && !a->tls_cert)
            return cli_bad_arg(PROG, "--listen %s: a TLS listener needs --tls-cert", a->listen[i]);
    if (a->ca.print_config) return app_print_config(&a->ca, &a->cfg, &net);
    return -1;
}

static void banner(const srv *s, const engine_options *eo, const engine_limits *lim,
                   const char *const *urls, int n_urls) {
    const engine_config *c = &s->cfg;
    const server_settings *n = &s->net;
    const llm_hparams *hp = llm_model_hparams(s->model);
    const char *fam = s->chat_template ? chat_template_family(s->chat_template) : NULL;
    fprintf(stderr, "infer-server %s\n", ENGINE_VERSION);
    fprintf(stderr,
            "model:     %s (%s, %d layers, vocab %d, context %d), weights %.1f MiB, "
            "chat template %s\n           %s\n",
            hp->name[0] ? hp->name : c->model_path, hp->arch, hp->n_layer, hp->n_vocab,
            lim->context_length, (double)llm_model_weight_bytes(s->model) / (1024.0 * 1024.0),
            fam ? fam : "none", c->model_path);
    app_print_engine_banner(eo, lim);
    char timeout[32];
    if (n->request_timeout_ms > 0)
        snprintf(timeout, sizeof timeout, "%d ms", n->request_timeout_ms);
    else snprintf(timeout, sizeof timeout, "none");
    fprintf(stderr,
            "limits:    %d waiting at most, messages %d bytes, %d stop strings, request timeout "
            "%s, drain %d ms, api key %s; %d threads, %s numerics\n",
            eo->max_waiting, n->max_message_bytes, n->max_stop_strings, timeout,
            n->drain_timeout_ms, n->api_key[0] ? "required" : "off", s->be->n_threads,
            be_numerics_name(c->numerics));
    for (int i = 0; i < n_urls; i++) fprintf(stderr, "listening: rpc  %s\n", urls[i]);
    if (n->http_listen[0]) fprintf(stderr, "listening: http %s\n", n->http_listen);
    if (n_urls == 0 && !n->http_listen[0])
        fprintf(stderr, "listening: nothing (no server.listen, no server.http_listen)\n");
}

/* The model, tokenizer, backend and engine of s (from s->cfg). -1 to go on,
 * or an exit code. */
static int start_engine(srv *s, engine_options *eo, engine_limits *lim) {
    const engine_config *cfg = &s->cfg;
    char err[1024];
    fprintf(stderr, "infer-server: loading %s\n", cfg->model_path);
    app_open_opts oo = {cfg->model_path, cfg->n_threads, cfg->numerics, 1, NULL, NULL, NULL};
    app_runtime rt;
    int rc = app_open(PROG, &oo, &rt);
    if (rc >= 0) return rc;
    s->model = rt.model;
    s->tok = rt.tok;
    s->be = rt.be;
    s->chat_template = llm_model_chat_template(s->model);
    if ((rc = app_engine_options(PROG, cfg, s->model, eo, lim)) >= 0) return rc;
    if (engine_create(s->model, s->be, s->tok, eo, &s->eng, err, sizeof err) != 0) {
        fprintf(stderr, "infer-server: cannot start the engine: %s\n", err);
        return 1;
    }
    return -1;
}

/* RPC listeners (--listen replaces server.listen) and HTTP; the banner
 * once they are bound. -1 to go on, or an exit code. */
static int start_listeners(srv *s, const args *a, const engine_options *eo,
                           const engine_limits *lim, rpc_server **rs, int *http_started) {
    const server_settings *net = &s->net;
    char err[1024];
    const char *urls[MAX_CLI_LISTEN + SERVER_MAX_LISTEN];
    int n_urls = 0;
    if (a->n_listen)
        for (int i = 0; i < a->n_listen; i++) urls[n_urls++] = a->listen[i];
    else
        for (int i = 0; i < net->n_listen; i++) urls[n_urls++] = net->listen[i];
    rpc_tls_opts tls = {.cert_key_file = a->tls_cert, .ca_file = a->tls_ca};
    rpc_conn_opts co;
    rpc_conn_opts_default(&co);
    co.max_frame = (size_t)net->max_message_bytes;
    co.frame_timeout_ms = net->frame_timeout_ms;
    co.first_frame_timeout_ms = net->handshake_timeout_ms;
    co.idle_timeout_ms = net->rpc_idle_timeout_ms > 0 ? net->rpc_idle_timeout_ms : -1;
    if (n_urls > 0 && rpc_server_start(s, urls, n_urls, &tls, &co, rs, err, sizeof err) != 0) {
        fprintf(stderr, "infer-server: %s\n", err);
        return 1;
    }
    if (n_urls > 0) rpc_server_set_max_connections(*rs, net->max_connections);
    if (net->http_listen[0]) {
        if (srv_http_start(s, net->http_listen, err, sizeof err) != 0) {
            fprintf(stderr, "infer-server: HTTP: %s\n", err);
            return 1;
        }
        *http_started = 1;
    }
    const char *bound[MAX_CLI_LISTEN + SERVER_MAX_LISTEN];
    for (int i = 0; i < n_urls; i++) bound[i] = rpc_server_url(*rs, i);
    banner(s, eo, lim, bound, n_urls);
    return -1;
}

/* Serve until a signal, then drain: new calls are refused while the calls
 * in flight get up to server.drain_timeout_ms (a second signal cuts that
 * short); what is left is cancelled. */
static void serve_and_drain(srv *s, sigset_t *sigs, rpc_server *rs) {
    int sig = 0;
    while (sigwait(sigs, &sig) != 0) {
    }
    int n_active = atomic_load(&s->active_calls);
    fprintf(stderr, "infer-server: %s: draining (%d call%s in flight, up to %d ms)\n",
            sig == SIGTERM ? "SIGTERM" : "SIGINT", n_active, n_active == 1 ? "" : "s",
            s->net.drain_timeout_ms);
    atomic_store(&s->draining, 1);
    double until = clock_now_ms() + s->net.drain_timeout_ms;
    int forced = 0;
    while (atomic_load(&s->active_calls) > 0) {
        double left = until - clock_now_ms();
        if (left <= 0) break;
        if (left > 50) left = 50;
        struct timespec ts = {0, (long)(left * 1e6)};
        if (sigtimedwait(sigs, NULL, &ts) > 0) {
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
}

int main(int argc, char **argv) {
    args a = {0};
    int rc = parse_args(argc, argv, &a);
    if (rc >= 0) {
        app_config_args_free(&a.ca);
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
        app_config_args_free(&a.ca);
        return 1;
    }
    s->cfg = a.cfg;
    s->net = a.net;
    atomic_init(&s->draining, 0);
    atomic_init(&s->active_calls, 0);
    atomic_init(&s->connections, 0);
    rpc_server *rs = NULL;
    int http_started = 0;
    engine_options eo;
    engine_limits lim;
    rc = start_engine(s, &eo, &lim);
    if (rc < 0) rc = start_listeners(s, &a, &eo, &lim, &rs, &http_started);
    if (rc < 0) {
        fprintf(stderr, "infer-server: ready\n");
        serve_and_drain(s, &sigs, rs);
        rc = 0;
    }
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
    free((char *)s->chat_template);
    app_runtime rt = {s->model, s->tok, s->be};
    app_close(&rt);
    free(s);
    app_config_args_free(&a.ca);
    return rc;
}
