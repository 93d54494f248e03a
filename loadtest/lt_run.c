/*
 * lt_run.c - the loadtest program: options, dispatcher, workers, monitor,
 * and the result files.
 *
 * Threads and what they own:
 *   - the main thread parses options, then acts as the dispatcher: it
 *     releases requests (appends a slot to run.slots) at their scheduled
 *     time (trace / --rate) or whenever fewer than N are outstanding
 *     (--concurrency), and ends the run (drain, cancel, join).
 *   - workers (at most --max-inflight) take released slots in order and
 *     run one request each at a time; a slot belongs to its worker until
 *     it is marked done, then to the main thread.
 *   - the monitor samples the timeline (and the server's stats) and draws
 *     the progress line.
 * run.mu guards the slot list and the counters; a running slot's cancel
 * flag and RPC call handle are the only fields other threads touch.
 */
#include "loadtest/lt_run.h"
#include "base/clock.h"

#include "clients/c/infer_client.h"
#include "loadtest/lt_http.h"
#include "loadtest/lt_metrics.h"
#include "loadtest/lt_workload.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- options ------------------------------------------------------------ */

typedef enum { MODE_TRACE, MODE_RATE, MODE_CONCURRENCY } run_mode;

#define LT_MAX_URLS INFER_MAX_ENDPOINTS

typedef struct {
    const char *url; /* urls[0]: the target as printed */
    lt_url u;        /* us[0]: every URL has its kind */
    const char *urls[LT_MAX_URLS];
    lt_url us[LT_MAX_URLS];
    size_t n_urls;
    double heartbeat; /* RPC: the client's heartbeat interval; 0 = its default */
    const char *trace_path;
    double rate, burstiness;
    int concurrency;
    long long num_requests; /* 0 = default */
    double duration;        /* 0 = none */
    double drain_timeout, request_timeout, time_scale, sample_interval;
    int max_inflight;
    uint64_t seed;
    int prompt_len, max_tokens; /* max_tokens: -1 = not overridden */
    int default_max_tokens;
    int ignore_eos;
    int has_temperature;
    double temperature;
    lt_slo slo;
    int has_slo;
    const char *out_dir, *api_key, *model;
    int quiet, fail_on_error, allow_remote;
    run_mode mode;
} opts_t;

static const char *USAGE =
    "usage: loadtest --url URL (--trace FILE | --rate R | --concurrency N) [options]\n"
    "\n"
    "target:\n"
    "  --url URL              tcp://HOST:PORT or ipc://PATH (infer-server RPC) or\n"
    "                         http://HOST:PORT[/PATH] (SSE: /v1/completions by default,\n"
    "                         or /generate); repeat it for several servers of one kind:\n"
    "                         RPC goes through the C client's balancing, HTTP to the\n"
    "                         URL with the fewest requests in flight\n"
    "  --heartbeat S          RPC with several URLs: Health every S s (default 5)\n"
    "  --api-key K            RPC key / HTTP Authorization: Bearer K\n"
    "  --model NAME           \"model\" field of HTTP requests (vLLM/TGI want one;\n"
    "                         infer-server: its model id or none)\n"
    "  --allow-remote         allow targets that are not loopback addresses\n"
    "traffic:\n"
    "  --trace FILE.jsonl     requests (and arrival times t) from a trace\n"
    "  --time-scale X         send trace request i at t_i * X (default 1)\n"
    "  --rate R               open loop: R requests/s, gamma-distributed gaps\n"
    "  --burstiness B         gamma shape (1 = Poisson, default 1)\n"
    "  --concurrency N        closed loop: N requests in flight\n"
    "  --prompt-len N         synthetic prompt tokens without a trace (default 128)\n"
    "  --max-tokens M         max tokens of every request (default 128 / the trace's)\n"
    "  --ignore-eos           ignore_eos on every request\n"
    "  --temperature T        temperature of every request\n"
    "  --seed S               arrivals and synthetic prompts (default 0)\n"
    "bounds:\n"
    "  -n, --num-requests N   requests to send (default: the trace's length, else 100)\n"
    "  --duration S           stop sending after S seconds\n"
    "  --drain-timeout S      after --duration, wait S s for requests in flight (30)\n"
    "  --request-timeout S    per-request timeout (300)\n"
    "  --max-inflight N       open-loop concurrency cap (1024)\n"
    "report:\n"
    "  --slo ttft=MS,tpot=MS  goodput: requests/s meeting both (either part optional)\n"
    "  --out DIR              write responses.json, summary.json, timeline.json\n"
    "  --sample-interval S    timeline sampling period (0.5)\n"
    "  --quiet                no progress line\n"
    "  --fail-on-error        exit 1 when any request failed\n";

static int usage_err(const char *fmt, ...) {
    va_list ap;
    fputs("loadtest: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    /* argv[0] as typed (build/loadtest): the program is not on PATH */
    fprintf(stderr, "\n(%s --help for the options)\n",
            program_invocation_name && *program_invocation_name ? program_invocation_name
                                                                : "loadtest");
    return 2;
}

static int num_arg(const char *name, const char *s, double min, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end || errno || !isfinite(v) || v < min) {
        usage_err("%s: expected a number >= %g, got \"%s\"", name, min, s);
        return -1;
    }
    *out = v;
    return 0;
}

static int int_arg(const char *name, const char *s, long long min, long long max, long long *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end || errno || v < min || v > max) {
        usage_err("%s: expected an integer in [%lld, %lld], got \"%s\"", name, min, max, s);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_slo(const char *s, lt_slo *slo) {
    memset(slo, 0, sizeof *slo);
    char buf[256];
    snprintf(buf, sizeof buf, "%s", s);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        double v;
        char *eq = strchr(tok, '=');
        if (!eq) return usage_err("--slo: expected ttft=MS,tpot=MS, got \"%s\"", s), -1;
        *eq = 0;
        if (num_arg("--slo", eq + 1, 0, &v)) return -1;
        if (!strcmp(tok, "ttft")) slo->has_ttft = 1, slo->ttft_ms = v;
        else if (!strcmp(tok, "tpot")) slo->has_tpot = 1, slo->tpot_ms = v;
        else return usage_err("--slo: unknown part \"%s\" (ttft, tpot)", tok), -1;
    }
    if (!slo->has_ttft && !slo->has_tpot)
        return usage_err("--slo: give ttft=MS and/or tpot=MS"), -1;
    return 0;
}

enum {
    O_URL = 256,
    O_HEARTBEAT,
    O_API_KEY,
    O_MODEL,
    O_ALLOW_REMOTE,
    O_TRACE,
    O_TIME_SCALE,
    O_RATE,
    O_BURST,
    O_CONC,
    O_PROMPT_LEN,
    O_MAX_TOKENS,
    O_IGNORE_EOS,
    O_TEMP,
    O_SEED,
    O_DURATION,
    O_DRAIN,
    O_REQ_TIMEOUT,
    O_MAX_INFLIGHT,
    O_SLO,
    O_OUT,
    O_SAMPLE,
    O_QUIET,
    O_FAIL,
    O_HELP
};

static const struct option LONG_OPTS[] = {{"url", 1, 0, O_URL},
                                          {"heartbeat", 1, 0, O_HEARTBEAT},
                                          {"api-key", 1, 0, O_API_KEY},
                                          {"model", 1, 0, O_MODEL},
                                          {"allow-remote", 0, 0, O_ALLOW_REMOTE},
                                          {"trace", 1, 0, O_TRACE},
                                          {"time-scale", 1, 0, O_TIME_SCALE},
                                          {"rate", 1, 0, O_RATE},
                                          {"burstiness", 1, 0, O_BURST},
                                          {"concurrency", 1, 0, O_CONC},
                                          {"prompt-len", 1, 0, O_PROMPT_LEN},
                                          {"max-tokens", 1, 0, O_MAX_TOKENS},
                                          {"ignore-eos", 0, 0, O_IGNORE_EOS},
                                          {"temperature", 1, 0, O_TEMP},
                                          {"seed", 1, 0, O_SEED},
                                          {"num-requests", 1, 0, 'n'},
                                          {"duration", 1, 0, O_DURATION},
                                          {"drain-timeout", 1, 0, O_DRAIN},
                                          {"request-timeout", 1, 0, O_REQ_TIMEOUT},
                                          {"max-inflight", 1, 0, O_MAX_INFLIGHT},
                                          {"slo", 1, 0, O_SLO},
                                          {"out", 1, 0, O_OUT},
                                          {"sample-interval", 1, 0, O_SAMPLE},
                                          {"quiet", 0, 0, O_QUIET},
                                          {"fail-on-error", 0, 0, O_FAIL},
                                          {"help", 0, 0, O_HELP},
                                          {0, 0, 0, 0}};

static void opts_defaults(opts_t *o) {
    memset(o, 0, sizeof *o);
    o->burstiness = 1;
    o->drain_timeout = 30;
    o->request_timeout = 300;
    o->time_scale = 1;
    o->sample_interval = 0.5;
    o->max_inflight = 1024;
    o->prompt_len = 128;
    o->max_tokens = -1;
    o->default_max_tokens = 128;
    o->ignore_eos = -1;
}

/* Apply one option (getopt code c, value arg); word is the option as typed.
 * 0 ok, 2 usage error. */
static int apply_opt(opts_t *o, int c, const char *arg, const char *word, int *has_rate) {
    long long iv;
    double dv;
    switch (c) {
    case O_URL:
        if (o->n_urls == LT_MAX_URLS) return usage_err("at most %d --url", LT_MAX_URLS);
        o->urls[o->n_urls++] = arg;
        o->url = o->urls[0];
        break;
    case O_HEARTBEAT:
        if (num_arg("--heartbeat", arg, 0, &o->heartbeat)) return 2;
        if (o->heartbeat <= 0) return usage_err("--heartbeat must be > 0");
        break;
    case O_API_KEY: o->api_key = arg; break;
    case O_MODEL: o->model = arg; break;
    case O_ALLOW_REMOTE: o->allow_remote = 1; break;
    case O_TRACE: o->trace_path = arg; break;
    case O_TIME_SCALE:
        if (num_arg("--time-scale", arg, 0, &o->time_scale)) return 2;
        break;
    case O_RATE:
        if (num_arg("--rate", arg, 0, &o->rate)) return 2;
        if (o->rate <= 0) return usage_err("--rate must be > 0");
        *has_rate = 1;
        break;
    case O_BURST:
        if (num_arg("--burstiness", arg, 0, &o->burstiness)) return 2;
        if (o->burstiness <= 0) return usage_err("--burstiness must be > 0");
        break;
    case O_CONC:
        if (int_arg("--concurrency", arg, 1, 100000, &iv)) return 2;
        o->concurrency = (int)iv;
        break;
    case O_PROMPT_LEN:
        if (int_arg("--prompt-len", arg, 1, 1000000, &iv)) return 2;
        o->prompt_len = (int)iv;
        break;
    case O_MAX_TOKENS:
        if (int_arg("--max-tokens", arg, 1, 1000000, &iv)) return 2;
        o->max_tokens = (int)iv;
        break;
    case O_IGNORE_EOS: o->ignore_eos = 1; break;
    case O_TEMP:
        if (num_arg("--temperature", arg, 0, &o->temperature)) return 2;
        o->has_temperature = 1;
        break;
    case O_SEED:
        if (int_arg("--seed", arg, 0, INT64_MAX, &iv)) return 2;
        o->seed = (uint64_t)iv;
        break;
    case 'n':
        if (int_arg("--num-requests", arg, 1, 100000000, &iv)) return 2;
        o->num_requests = iv;
        break;
    case O_DURATION:
        if (num_arg("--duration", arg, 0, &o->duration)) return 2;
        if (o->duration <= 0) return usage_err("--duration must be > 0");
        break;
    case O_DRAIN:
        if (num_arg("--drain-timeout", arg, 0, &o->drain_timeout)) return 2;
        break;
    case O_REQ_TIMEOUT:
        if (num_arg("--request-timeout", arg, 0, &o->request_timeout)) return 2;
        if (o->request_timeout <= 0) return usage_err("--request-timeout must be > 0");
        break;
    case O_MAX_INFLIGHT:
        if (int_arg("--max-inflight", arg, 1, 100000, &iv)) return 2;
        o->max_inflight = (int)iv;
        break;
    case O_SLO:
        if (parse_slo(arg, &o->slo)) return 2;
        o->has_slo = 1;
        break;
    case O_OUT: o->out_dir = arg; break;
    case O_SAMPLE:
        if (num_arg("--sample-interval", arg, 0.01, &dv)) return 2;
        o->sample_interval = dv;
        break;
    case O_QUIET: o->quiet = 1; break;
    case O_FAIL: o->fail_on_error = 1; break;
    default: return usage_err("unknown option %s", word);
    }
    return 0;
}

/* After all options: the target is allowed and exactly one traffic mode is
 * chosen. 0 ok, 2 usage error. */
static int check_opts(opts_t *o, int has_rate) {
    if (!o->n_urls) return usage_err("--url is required");
    char err[512];
    for (size_t i = 0; i < o->n_urls; i++) {
        lt_url *u = &o->us[i];
        if (lt_url_parse(o->urls[i], u, err, sizeof err)) return usage_err("%s", err);
        if (u->host[0] && !o->allow_remote && !lt_host_is_loopback(u->host))
            return usage_err("%s is not a loopback address; only loopback targets are allowed "
                             "here (--allow-remote overrides)",
                             u->host);
        if (u->kind != o->us[0].kind)
            return usage_err("--url %s: all URLs must be RPC or all HTTP", o->urls[i]);
    }
    o->u = o->us[0];
    if (has_rate && o->concurrency) return usage_err("give --rate or --concurrency, not both");
    if (has_rate) o->mode = MODE_RATE;
    else if (o->concurrency) o->mode = MODE_CONCURRENCY;
    else if (o->trace_path) o->mode = MODE_TRACE;
    else return usage_err("give --trace, --rate or --concurrency");
    return 0;
}

/* 0 ok, 2 usage error, 3 --help. */
static int parse_opts(int argc, char **argv, opts_t *o) {
    opts_defaults(o);
    int has_rate = 0;
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":n:h", LONG_OPTS, NULL)) != -1) {
        if (c == 'h' || c == O_HELP) {
            fputs(USAGE, stdout);
            return 3;
        }
        if (c == ':') return usage_err("%s needs a value", argv[optind - 1]);
        int rc = apply_opt(o, c, optarg, argv[optind - 1], &has_rate);
        if (rc) return rc;
    }
    if (optind < argc) return usage_err("unexpected argument \"%s\"", argv[optind]);
    return check_opts(o, has_rate);
}

/* ---- run state ---------------------------------------------------------- */

typedef struct {
    size_t index;
    const lt_request *spec; /* trace entry or run.defaults */
    char *prompt;           /* the text sent (owned) */
    lt_record rec;
    char *text;
    size_t text_len, text_cap;
    int done;
    atomic_int cancel;
    infer_call *call; /* RPC, guarded by run.mu */
    int endpoint;     /* HTTP: index of the URL it went to; RPC: -1 (the client chose) */
    int pending_tokens_counted;
    char finish_reason[24];
    int usage_in, usage_out; /* -1 = not reported */
    struct run_s *run;
} slot_t;

typedef struct {
    double t;
    long inflight, completed, failed;
    long long output_tokens;
    lt_server_gauges g;
} sample_t;

typedef struct run_s {
    opts_t *o;
    lt_trace trace;
    lt_request defaults;
    lt_clock clock;
    double t0;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    slot_t **slots;
    size_t n_slots, cap_slots, next_take;
    pthread_t *workers;
    int nworkers, max_workers, idle, stop_workers;
    int abort_pending; /* released slots not yet taken end as failed */
    long inflight, completed, failed;
    atomic_llong out_tokens;
    size_t inflight_waits; /* releases that found every worker busy at --max-inflight */
    infer_client *rpc;
    infer_client *rpc_stats[LT_MAX_URLS]; /* one per URL: each server's gauges */
    /* HTTP: requests per URL (guarded by mu): in flight now, sent, failed */
    long ep_inflight[LT_MAX_URLS], ep_sent[LT_MAX_URLS], ep_failed[LT_MAX_URLS];
    size_t ep_rr; /* round-robin start among ties */
    sample_t *samples;
    size_t n_samples, cap_samples;
    atomic_int monitor_stop;
    int tty;
    long long n_total; /* requests to send; INT64_MAX: until --duration */
    int have_server_stats;
} run_t;

/* SIGINT/SIGTERM: stop sending and drain. A signal handler can only talk
 * through a static flag. */
static volatile sig_atomic_t g_interrupted;
static void on_signal(int sig) {
    (void)sig;
    g_interrupted = 1;
}

static double now_s(run_t *r) { return lt_clock_now(&r->clock); }

static void sleep_s(double s) {
    if (s <= 0) return;
    struct timespec ts = {(time_t)s, (long)((s - floor(s)) * 1e9)};
    nanosleep(&ts, NULL);
}

static void text_append(slot_t *s, const char *p, size_t n) {
    if (!n) return;
    if (s->text_len + n + 1 > s->text_cap) {
        size_t cap = s->text_cap ? s->text_cap * 2 : 256;
        while (cap < s->text_len + n + 1) cap *= 2;
        char *q = realloc(s->text, cap);
        if (!q) return; /* text is informative only */
        s->text = q;
        s->text_cap = cap;
    }
    memcpy(s->text + s->text_len, p, n);
    s->text_len += n;
    s->text[s->text_len] = 0;
}

/* ---- one request: RPC --------------------------------------------------- */

static int rpc_on_chunk(const infer_chunk *ch, void *user) {
    slot_t *s = user;
    text_append(s, ch->text, ch->text_len);
    if (ch->finish_reason) {
        snprintf(s->finish_reason, sizeof s->finish_reason, "%s", ch->finish_reason);
        if (ch->has_usage) {
            s->usage_in = ch->usage.prompt_tokens;
            s->usage_out = ch->usage.completion_tokens;
        }
        return 0;
    }
    /* One chunk per sampled token (several when token ids say so). */
    int n = ch->n_token_ids > 0 ? (int)ch->n_token_ids : 1;
    lt_record_tokens(&s->rec, &s->run->clock, n);
    atomic_fetch_add(&s->run->out_tokens, n);
    return 0;
}

static void run_rpc(run_t *r, slot_t *s, const lt_request *q, int max_tokens, char *err,
                    size_t errlen, int *failed) {
    infer_gen_params p;
    infer_gen_params_init(&p);
    p.prompt = s->prompt;
    p.max_tokens = max_tokens;
    if (q->has_min_tokens) p.min_tokens = q->min_tokens;
    if (r->o->has_temperature) p.temperature = (float)r->o->temperature;
    else if (q->has_temperature) p.temperature = (float)q->temperature;
    if (q->has_top_k) p.top_k = q->top_k;
    if (q->has_top_p) p.top_p = (float)q->top_p;
    if (q->has_seed) p.has_seed = 1, p.seed = q->seed;
    int ie = r->o->ignore_eos >= 0 ? r->o->ignore_eos : q->ignore_eos;
    if (ie >= 0) p.ignore_eos = ie;
    p.stop = (const char *const *)q->stop;
    p.n_stop = q->n_stop;
    infer_status st = {0};
    infer_call *call = NULL;
    int deadline_ms = (int)fmin(r->o->request_timeout * 1000.0, 2e9);
    int rc = infer_stream_start(r->rpc, &p, deadline_ms, rpc_on_chunk, s, &call, &st);
    if (rc == INFER_OK) {
        pthread_mutex_lock(&r->mu);
        s->call = call;
        if (atomic_load(&s->cancel)) infer_call_cancel(call);
        pthread_mutex_unlock(&r->mu);
        rc = infer_call_wait(call, &st);
        pthread_mutex_lock(&r->mu);
        s->call = NULL;
        pthread_mutex_unlock(&r->mu);
        infer_call_free(call);
    }
    *failed = rc != INFER_OK;
    if (!*failed) return;
    if (atomic_load(&s->cancel))
        snprintf(err, errlen, "timeout: still running at the end of --drain-timeout");
    else if (rc == INFER_DEADLINE_EXCEEDED)
        snprintf(err, errlen, "timeout: no end within --request-timeout %g s (%s)",
                 r->o->request_timeout, st.message);
    else snprintf(err, errlen, "%s: %s", infer_status_name(rc), st.message);
}

/* ---- one request: HTTP -------------------------------------------------- */

static double http_now(void *user) { return now_s(((slot_t *)user)->run); }

static void http_on_tokens(void *user, double when, int n, const char *text, size_t len) {
    slot_t *s = user;
    text_append(s, text, len);
    lt_record_tokens_at(&s->rec, when, n);
    atomic_fetch_add(&s->run->out_tokens, n);
}

static char *http_body(run_t *r, slot_t *s, const lt_request *q, int max_tokens) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    if (r->o->model) cJSON_AddStringToObject(o, "model", r->o->model);
    cJSON_AddStringToObject(o, "prompt", s->prompt);
    cJSON_AddNumberToObject(o, "max_tokens", max_tokens);
    if (q->has_min_tokens) cJSON_AddNumberToObject(o, "min_tokens", q->min_tokens);
    if (r->o->has_temperature) cJSON_AddNumberToObject(o, "temperature", r->o->temperature);
    else if (q->has_temperature) cJSON_AddNumberToObject(o, "temperature", q->temperature);
    if (q->has_top_k) cJSON_AddNumberToObject(o, "top_k", q->top_k);
    if (q->has_top_p) cJSON_AddNumberToObject(o, "top_p", q->top_p);
    if (q->has_seed) cJSON_AddNumberToObject(o, "seed", (double)q->seed);
    int ie = r->o->ignore_eos >= 0 ? r->o->ignore_eos : q->ignore_eos;
    if (ie >= 0) cJSON_AddBoolToObject(o, "ignore_eos", ie);
    if (q->n_stop) {
        cJSON *a = cJSON_AddArrayToObject(o, "stop");
        for (size_t i = 0; i < q->n_stop; i++)
            cJSON_AddItemToArray(a, cJSON_CreateString(q->stop[i]));
    }
    cJSON_AddBoolToObject(o, "stream", 1);
    cJSON *so = cJSON_AddObjectToObject(o, "stream_options");
    cJSON_AddBoolToObject(so, "include_usage", 1);
    char *txt = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return txt;
}

/* HTTP with several base URLs: the one with the fewest requests in flight
 * from this run, ties round robin (a server that answers faster frees its
 * share sooner and takes more). Counts the request there; mu not held. */
static int http_pick(run_t *r) {
    size_t n = r->o->n_urls;
    pthread_mutex_lock(&r->mu);
    size_t best = r->ep_rr % n;
    for (size_t k = 1; k < n; k++) {
        size_t i = (r->ep_rr + k) % n;
        if (r->ep_inflight[i] < r->ep_inflight[best]) best = i;
    }
    r->ep_rr = best + 1;
    r->ep_inflight[best]++;
    r->ep_sent[best]++;
    pthread_mutex_unlock(&r->mu);
    return (int)best;
}

static void http_done(run_t *r, int ep, int failed) {
    pthread_mutex_lock(&r->mu);
    r->ep_inflight[ep]--;
    r->ep_failed[ep] += failed;
    pthread_mutex_unlock(&r->mu);
}

static void run_http(run_t *r, slot_t *s, const lt_request *q, int max_tokens, char *err,
                     size_t errlen, int *failed) {
    char *body = http_body(r, s, q, max_tokens);
    if (!body) {
        snprintf(err, errlen, "out of memory");
        *failed = 1;
        return;
    }
    lt_sse_result res = {0};
    res.on_tokens = http_on_tokens;
    res.user = s;
    res.now = http_now;
    s->endpoint = http_pick(r);
    int rc = lt_http_stream(&r->o->us[s->endpoint], r->o->api_key, body,
                            now_s(r) + r->o->request_timeout, &s->cancel, &res, err, errlen);
    http_done(r, s->endpoint, rc != 0);
    cJSON_free(body);
    snprintf(s->finish_reason, sizeof s->finish_reason, "%s", res.finish_reason);
    s->usage_in = res.prompt_tokens;
    s->usage_out = res.completion_tokens;
    *failed = rc != 0;
    if (*failed && atomic_load(&s->cancel))
        snprintf(err, errlen, "timeout: still running at the end of --drain-timeout");
    else if (*failed && !strncmp(err, "timeout", 7)) {
        size_t l = strlen(err);
        snprintf(err + l, errlen - l, ": no end within --request-timeout %g s",
                 r->o->request_timeout);
    }
}

/* ---- workers ------------------------------------------------------------ */

static void finish_slot(run_t *r, slot_t *s, const char *error) {
    int before = s->rec.token_events_tokens;
    lt_record_finish(&s->rec, &r->clock, r->t0, error, s->usage_out, s->usage_in);
    snprintf(s->rec.finish_reason, sizeof s->rec.finish_reason, "%s", s->finish_reason);
    /* the server's count replaces the counted events in the live total */
    atomic_fetch_add(&r->out_tokens, (long long)s->rec.output_tokens - before);
    pthread_mutex_lock(&r->mu);
    s->done = 1;
    r->inflight--;
    if (s->rec.ok) {
        r->completed++;
        printf("request %zu done, latency %.3f s\n", s->index, s->rec.e2e_ms / 1000.0);
    } else {
        r->failed++;
        printf("request %zu failed: %s\n", s->index, s->rec.error ? s->rec.error : "?");
    }
    fflush(stdout);
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static void run_slot(run_t *r, slot_t *s) {
    const lt_request *q = s->spec;
    int max_tokens = r->o->max_tokens > 0 ? r->o->max_tokens : q->max_tokens;
    s->usage_in = s->usage_out = -1;
    if (q->prompt) {
        s->prompt = strdup(q->prompt);
        s->rec.input_tokens = lt_estimate_tokens(q->prompt);
    } else {
        s->prompt = lt_synth_prompt(r->o->seed, s->index, q->prompt_len);
        s->rec.input_tokens = q->prompt_len;
    }
    lt_record_start(&s->rec, &r->clock, r->t0);
    char err[768] = "";
    int failed = 1;
    if (!s->prompt) snprintf(err, sizeof err, "out of memory");
    else if (atomic_load(&s->cancel))
        snprintf(err, sizeof err, "timeout: not sent before the end of --drain-timeout");
    else if (r->o->u.kind == LT_TARGET_RPC) run_rpc(r, s, q, max_tokens, err, sizeof err, &failed);
    else run_http(r, s, q, max_tokens, err, sizeof err, &failed);
    finish_slot(r, s, failed ? (err[0] ? err : "failed") : NULL);
}

static void *worker_main(void *arg) {
    run_t *r = arg;
    pthread_mutex_lock(&r->mu);
    for (;;) {
        while (r->next_take == r->n_slots && !r->stop_workers) {
            r->idle++;
            pthread_cond_wait(&r->cv, &r->mu);
            r->idle--;
        }
        if (r->next_take == r->n_slots) break;
        slot_t *s = r->slots[r->next_take++];
        r->inflight++;
        if (r->abort_pending) atomic_store(&s->cancel, 1);
        pthread_mutex_unlock(&r->mu);
        run_slot(r, s);
        /* Closed loop against a dead server: without a pause every worker
         * would turn failures out as fast as connect() refuses. */
        if (r->o->mode == MODE_CONCURRENCY && !s->rec.ok && s->rec.e2e_ms < 50) sleep_s(0.05);
        pthread_mutex_lock(&r->mu);
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

/* With r->mu held. */
static int spawn_worker(run_t *r) {
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setstacksize(&a, 512 * 1024);
    int rc = pthread_create(&r->workers[r->nworkers], &a, worker_main, r);
    pthread_attr_destroy(&a);
    if (rc == 0) r->nworkers++;
    return rc;
}

/* Append a slot for request i; with r->mu held. Returns 0 or -1 (OOM). */
static int release(run_t *r, size_t i, double t_sched) {
    if (r->n_slots == r->cap_slots) {
        size_t cap = r->cap_slots ? r->cap_slots * 2 : 256;
        slot_t **p = realloc(r->slots, cap * sizeof *p);
        if (!p) return -1;
        r->slots = p;
        r->cap_slots = cap;
    }
    slot_t *s = calloc(1, sizeof *s);
    if (!s) return -1;
    s->index = i;
    s->run = r;
    s->endpoint = -1;
    s->spec = r->trace.n ? &r->trace.reqs[i % r->trace.n] : &r->defaults;
    lt_record_init(&s->rec, t_sched);
    atomic_init(&s->cancel, 0);
    r->slots[r->n_slots++] = s;
    size_t pending = r->n_slots - r->next_take;
    if (pending > (size_t)r->idle) {
        if (r->nworkers < r->max_workers) spawn_worker(r);
        else if (r->o->mode != MODE_CONCURRENCY) r->inflight_waits++;
    }
    pthread_cond_broadcast(&r->cv);
    return 0;
}

/* ---- monitor: timeline and progress ------------------------------------ */

/* One server's gauges (-1 = absent); 0, or -1 when it did not answer. */
static int endpoint_gauges(run_t *r, size_t i, lt_server_gauges *g) {
    g->running = g->waiting = g->swapped = g->kv_blocks_used = -1;
    if (r->o->u.kind == LT_TARGET_RPC) {
        infer_stats_t st;
        infer_status s;
        if (!r->rpc_stats[i] || infer_stats(r->rpc_stats[i], 1000, &st, &s) != INFER_OK) return -1;
        if (st.running >= 0) g->running = (double)st.running;
        if (st.waiting >= 0) g->waiting = (double)st.waiting;
        if (st.swapped >= 0) g->swapped = (double)st.swapped;
        if (st.blocks_total >= 0 && st.blocks_free >= 0)
            g->kv_blocks_used = (double)(st.blocks_total - st.blocks_free);
        return 0;
    }
    int status = 0;
    char *body = NULL, err[256];
    double timeout = r->o->sample_interval < 1.0 ? r->o->sample_interval : 1.0;
    if (lt_http_get(&r->o->us[i], "/metrics", r->o->api_key, timeout, &r->monitor_stop, &status,
                    &body, err, sizeof err) ||
        status != 200) {
        free(body);
        return -1;
    }
    lt_parse_prometheus(body, g);
    free(body);
    return 0;
}

static void gauge_add(double *sum, double v) {
    if (v >= 0) *sum = (*sum < 0 ? 0 : *sum) + v;
}

/* The servers' gauges, summed over those that answered (several URLs: the
 * timeline shows the whole fleet). */
static void server_gauges(run_t *r, lt_server_gauges *g, int *fails) {
    g->running = g->waiting = g->swapped = g->kv_blocks_used = -1;
    if (*fails >= 3) return; /* the servers have no stats for us; stop asking */
    int answered = 0;
    for (size_t i = 0; i < r->o->n_urls; i++) {
        lt_server_gauges e;
        if (endpoint_gauges(r, i, &e)) continue;
        answered = 1;
        gauge_add(&g->running, e.running);
        gauge_add(&g->waiting, e.waiting);
        gauge_add(&g->swapped, e.swapped);
        gauge_add(&g->kv_blocks_used, e.kv_blocks_used);
    }
    if (!answered) {
        (*fails)++;
        return;
    }
    *fails = 0;
    if (g->running >= 0 || g->waiting >= 0 || g->kv_blocks_used >= 0) r->have_server_stats = 1;
}

/* The progress line's "/TOTAL" and "  eta S s": from the requests left
 * at the rate they have finished so far, or from --duration. */
static void progress_total_eta(const run_t *r, double elapsed, long finished, char *total,
                               char *eta) {
    total[0] = eta[0] = 0;
    double left = -1;
    if (r->n_total != INT64_MAX) {
        snprintf(total, 32, "/%lld", r->n_total);
        if (finished > 0) left = elapsed * (double)(r->n_total - finished) / (double)finished;
    } else if (r->o->duration > 0) {
        left = r->o->duration - elapsed;
    }
    if (left >= 0) snprintf(eta, 32, "  eta %.0f s", left);
}

static void *monitor_main(void *arg) {
    run_t *r = arg;
    double next_sample = r->t0, next_progress = r->t0 + (r->tty ? 0.5 : 5.0);
    long long last_tokens = 0;
    double last_t = r->t0;
    int fails = 0;
    for (;;) {
        int stop = atomic_load(&r->monitor_stop);
        double now = now_s(r);
        if (now >= next_sample || stop) {
            sample_t smp;
            smp.t = now - r->t0;
            pthread_mutex_lock(&r->mu);
            smp.inflight = r->inflight;
            smp.completed = r->completed;
            smp.failed = r->failed;
            pthread_mutex_unlock(&r->mu);
            smp.output_tokens = atomic_load(&r->out_tokens);
            if (stop) smp.g.running = smp.g.waiting = smp.g.swapped = smp.g.kv_blocks_used = -1;
            else server_gauges(r, &smp.g, &fails);
            if (r->n_samples == r->cap_samples) {
                size_t cap = r->cap_samples ? r->cap_samples * 2 : 256;
                sample_t *p = realloc(r->samples, cap * sizeof *p);
                if (p) r->samples = p, r->cap_samples = cap;
            }
            if (r->n_samples < r->cap_samples) r->samples[r->n_samples++] = smp;
            next_sample += r->o->sample_interval;
            if (next_sample < now) next_sample = now + r->o->sample_interval;
        }
        if (!r->o->quiet && (now >= next_progress || stop)) {
            pthread_mutex_lock(&r->mu);
            size_t sent = r->next_take;
            long done = r->completed, failed = r->failed, infl = r->inflight;
            pthread_mutex_unlock(&r->mu);
            long long tok = atomic_load(&r->out_tokens);
            double tps = now > last_t ? (double)(tok - last_tokens) / (now - last_t) : 0;
            last_tokens = tok;
            last_t = now;
            char total[32], eta[32];
            progress_total_eta(r, now - r->t0, done + failed, total, eta);
            fprintf(stderr,
                    "%s[%7.1f s] sent %zu  done %ld%s  failed %ld  in flight %ld  %.1f tok/s%s%s",
                    r->tty ? "\r" : "", now - r->t0, sent, done, total, failed, infl, tps, eta,
                    r->tty ? "\033[K" : "\n");
            if (stop && r->tty) fputc('\n', stderr);
            fflush(stderr);
            next_progress = now + (r->tty ? 0.5 : 5.0);
        }
        if (stop) break;
        sleep_s(0.05);
    }
    return NULL;
}

/* ---- output -------------------------------------------------------------- */

static cJSON *num_or_null(int has, double v) {
    return has ? cJSON_CreateNumber(v) : cJSON_CreateNull();
}

/* Requests per URL. HTTP: counted here (sent, failed). RPC: the calls the
 * C client started on each endpoint (infer_endpoints; a stream that found
 * its connection closed before sending counts on both endpoints it tried),
 * failed unknown (-1). */
static void endpoint_counts(run_t *r, long *sent, long *failed) {
    size_t n = r->o->n_urls;
    if (r->o->u.kind == LT_TARGET_HTTP) {
        pthread_mutex_lock(&r->mu);
        memcpy(sent, r->ep_sent, n * sizeof *sent);
        memcpy(failed, r->ep_failed, n * sizeof *failed);
        pthread_mutex_unlock(&r->mu);
        return;
    }
    infer_endpoint_info info[LT_MAX_URLS];
    size_t got = r->rpc ? infer_endpoints(r->rpc, info, LT_MAX_URLS) : 0;
    for (size_t i = 0; i < n; i++) {
        sent[i] = i < got ? (long)info[i].calls : 0;
        failed[i] = -1;
    }
}

static cJSON *endpoints_json(run_t *r) {
    long sent[LT_MAX_URLS], failed[LT_MAX_URLS];
    endpoint_counts(r, sent, failed);
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; a && i < r->o->n_urls; i++) {
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "url", r->o->urls[i]);
        cJSON_AddNumberToObject(e, "requests", (double)sent[i]);
        cJSON_AddItemToObject(e, "failed", num_or_null(failed[i] >= 0, (double)failed[i]));
        cJSON_AddItemToArray(a, e);
    }
    return a;
}

static cJSON *dist_json(const lt_dist *d) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "count", (double)d->n);
    cJSON_AddItemToObject(o, "mean", num_or_null(d->n > 0, d->mean));
    cJSON_AddItemToObject(o, "p50", num_or_null(d->n > 0, d->p50));
    cJSON_AddItemToObject(o, "p90", num_or_null(d->n > 0, d->p90));
    cJSON_AddItemToObject(o, "p99", num_or_null(d->n > 0, d->p99));
    return o;
}

static int write_json(const char *dir, const char *name, cJSON *o) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    char *txt = cJSON_Print(o);
    FILE *f = txt ? fopen(path, "w") : NULL;
    int rc = -1;
    if (f) {
        rc = fputs(txt, f) < 0 || fputc('\n', f) == EOF;
        rc |= fclose(f) != 0;
    }
    if (rc) fprintf(stderr, "loadtest: cannot write %s: %s\n", path, strerror(errno));
    cJSON_free(txt);
    return rc ? -1 : 0;
}

static const char *mode_name(run_mode m) {
    return m == MODE_TRACE ? "trace" : m == MODE_RATE ? "rate" : "concurrency";
}

static char *command_line(int argc, char **argv) {
    size_t n = 1;
    for (int i = 0; i < argc; i++) n += strlen(argv[i]) * 4 + 3;
    char *s = malloc(n), *p = s;
    if (!s) return NULL;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        int quote = !*a || strpbrk(a, " \t\n'\"\\$`*?;&|<>(){}[]!#~") != NULL;
        if (i) *p++ = ' ';
        if (!quote) {
            p = stpcpy(p, a);
            continue;
        }
        *p++ = '\'';
        for (; *a; a++) {
            if (*a == '\'') p = stpcpy(p, "'\\''");
            else *p++ = *a;
        }
        *p++ = '\'';
    }
    *p = 0;
    return s;
}

static int write_outputs(run_t *r, const lt_summary *sm, int argc, char **argv) {
    const opts_t *o = r->o;
    int rc = 0;
    cJSON *arr = cJSON_CreateArray();
    for (size_t i = 0; i < r->n_slots; i++) {
        const slot_t *s = r->slots[i];
        const lt_record *rec = &s->rec;
        cJSON *e = cJSON_CreateObject();
        cJSON_AddNumberToObject(e, "index", (double)s->index);
        if (s->endpoint >= 0) cJSON_AddStringToObject(e, "endpoint", o->urls[s->endpoint]);
        else cJSON_AddNullToObject(e, "endpoint");
        if (s->spec->id) cJSON_AddStringToObject(e, "id", s->spec->id);
        else cJSON_AddNullToObject(e, "id");
        cJSON_AddNumberToObject(e, "t_sched", rec->t_sched);
        cJSON_AddNumberToObject(e, "t_send", rec->t_send);
        cJSON_AddItemToObject(e, "ttft_ms", num_or_null(rec->has_ttft, rec->ttft_ms));
        cJSON_AddItemToObject(e, "tpot_ms", num_or_null(rec->has_tpot, rec->tpot_ms));
        cJSON_AddNumberToObject(e, "e2e_ms", rec->e2e_ms);
        cJSON *itl = cJSON_AddArrayToObject(e, "itl_ms");
        for (size_t k = 0; k < rec->n_itl; k++)
            cJSON_AddItemToArray(itl, cJSON_CreateNumber(rec->itl_ms[k]));
        cJSON_AddNumberToObject(e, "input_tokens", rec->input_tokens);
        cJSON_AddNumberToObject(e, "output_tokens", rec->output_tokens);
        if (rec->finish_reason[0]) cJSON_AddStringToObject(e, "finish_reason", rec->finish_reason);
        else cJSON_AddNullToObject(e, "finish_reason");
        if (rec->error) cJSON_AddStringToObject(e, "error", rec->error);
        else cJSON_AddNullToObject(e, "error");
        cJSON_AddStringToObject(e, "text", s->text ? s->text : "");
        cJSON_AddItemToArray(arr, e);
    }
    rc |= write_json(o->out_dir, "responses.json", arr);
    cJSON_Delete(arr);

    cJSON *su = cJSON_CreateObject();
    cJSON_AddStringToObject(su, "target", o->url);
    cJSON_AddStringToObject(su, "kind", o->u.kind == LT_TARGET_RPC ? "rpc" : "http");
    cJSON_AddItemToObject(su, "endpoints", endpoints_json(r));
    cJSON_AddStringToObject(su, "mode", mode_name(o->mode));
    if (o->trace_path) cJSON_AddStringToObject(su, "trace", o->trace_path);
    else cJSON_AddNullToObject(su, "trace");
    cJSON_AddItemToObject(su, "rate", num_or_null(o->mode == MODE_RATE, o->rate));
    cJSON_AddItemToObject(su, "burstiness", num_or_null(o->mode == MODE_RATE, o->burstiness));
    cJSON_AddItemToObject(su, "concurrency",
                          num_or_null(o->mode == MODE_CONCURRENCY, o->concurrency));
    cJSON_AddNumberToObject(su, "time_scale", o->time_scale);
    cJSON_AddNumberToObject(su, "requests_sent", (double)sm->sent);
    cJSON_AddNumberToObject(su, "requests_ok", (double)sm->ok);
    cJSON_AddNumberToObject(su, "requests_failed", (double)sm->failed);
    cJSON_AddNumberToObject(su, "duration_s", sm->duration_s);
    cJSON_AddNumberToObject(su, "request_rps", sm->request_rps);
    cJSON_AddNumberToObject(su, "input_tokens", (double)sm->input_tokens);
    cJSON_AddNumberToObject(su, "output_tokens", (double)sm->output_tokens);
    cJSON_AddNumberToObject(su, "input_tps", sm->input_tps);
    cJSON_AddNumberToObject(su, "output_tps", sm->output_tps);
    cJSON_AddItemToObject(su, "ttft_ms", dist_json(&sm->ttft_ms));
    cJSON_AddItemToObject(su, "tpot_ms", dist_json(&sm->tpot_ms));
    cJSON_AddItemToObject(su, "itl_ms", dist_json(&sm->itl_ms));
    cJSON_AddItemToObject(su, "e2e_ms", dist_json(&sm->e2e_ms));
    if (o->has_slo) {
        cJSON *slo = cJSON_AddObjectToObject(su, "slo");
        cJSON_AddItemToObject(slo, "ttft_ms", num_or_null(o->slo.has_ttft, o->slo.ttft_ms));
        cJSON_AddItemToObject(slo, "tpot_ms", num_or_null(o->slo.has_tpot, o->slo.tpot_ms));
    } else {
        cJSON_AddNullToObject(su, "slo");
    }
    cJSON_AddItemToObject(su, "goodput_rps", num_or_null(sm->has_slo, sm->goodput_rps));
    cJSON_AddItemToObject(su, "goodput_fraction", num_or_null(sm->has_slo, sm->goodput_fraction));
    cJSON_AddNumberToObject(su, "max_inflight", o->max_inflight);
    cJSON_AddNumberToObject(su, "max_inflight_waits", (double)r->inflight_waits);
    cJSON_AddNumberToObject(su, "sample_interval_s", o->sample_interval);
    char *cl = command_line(argc, argv);
    cJSON_AddStringToObject(su, "command_line", cl ? cl : "");
    free(cl);
    cJSON_AddNumberToObject(su, "seed", (double)o->seed);
    rc |= write_json(o->out_dir, "summary.json", su);
    cJSON_Delete(su);

    cJSON *tl = cJSON_CreateArray();
    for (size_t i = 0; i < r->n_samples; i++) {
        const sample_t *s = &r->samples[i];
        cJSON *e = cJSON_CreateObject();
        cJSON_AddNumberToObject(e, "t", s->t);
        cJSON_AddNumberToObject(e, "in_flight", (double)s->inflight);
        cJSON_AddNumberToObject(e, "completed", (double)s->completed);
        cJSON_AddNumberToObject(e, "failed", (double)s->failed);
        cJSON_AddNumberToObject(e, "output_tokens", (double)s->output_tokens);
        if (s->g.running >= 0) cJSON_AddNumberToObject(e, "running", s->g.running);
        if (s->g.waiting >= 0) cJSON_AddNumberToObject(e, "waiting", s->g.waiting);
        if (s->g.swapped >= 0) cJSON_AddNumberToObject(e, "swapped", s->g.swapped);
        if (s->g.kv_blocks_used >= 0)
            cJSON_AddNumberToObject(e, "kv_blocks_used", s->g.kv_blocks_used);
        cJSON_AddItemToArray(tl, e);
    }
    rc |= write_json(o->out_dir, "timeline.json", tl);
    cJSON_Delete(tl);
    return rc;
}

static void print_dist(const char *name, const lt_dist *d) {
    if (!d->n) {
        printf("  %-6s %10s %10s %10s %10s  (n=0)\n", name, "-", "-", "-", "-");
        return;
    }
    printf("  %-6s %10.2f %10.2f %10.2f %10.2f  (n=%zu)\n", name, d->mean, d->p50, d->p90, d->p99,
           d->n);
}

static void print_summary(run_t *r, const lt_summary *sm) {
    const opts_t *o = r->o;
    printf("==================== loadtest summary ====================\n");
    printf("target               %s (%s, mode %s)\n", o->url,
           o->u.kind == LT_TARGET_RPC ? "rpc" : "http", mode_name(o->mode));
    printf("requests             sent %zu, ok %zu, failed %zu\n", sm->sent, sm->ok, sm->failed);
    if (o->n_urls > 1) {
        long sent[LT_MAX_URLS], failed[LT_MAX_URLS];
        endpoint_counts(r, sent, failed);
        for (size_t i = 0; i < o->n_urls; i++) {
            printf("  endpoint           %s: %ld requests", o->urls[i], sent[i]);
            if (failed[i] >= 0) printf(", %ld failed", failed[i]);
            putchar('\n');
        }
    }
    printf("duration             %.3f s (first send -> last completion)\n", sm->duration_s);
    printf("throughput           %.2f req/s, %.1f input tok/s, %.1f output tok/s\n",
           sm->request_rps, sm->input_tps, sm->output_tps);
    printf("tokens               %lld input, %lld output\n", sm->input_tokens, sm->output_tokens);
    printf("latency (ms)         %10s %10s %10s %10s\n", "mean", "p50", "p90", "p99");
    print_dist("TTFT", &sm->ttft_ms);
    print_dist("TPOT", &sm->tpot_ms);
    print_dist("ITL", &sm->itl_ms);
    print_dist("E2E", &sm->e2e_ms);
    if (sm->has_slo) {
        char slo[128] = "";
        if (o->slo.has_ttft) snprintf(slo, sizeof slo, "ttft<=%g ms", o->slo.ttft_ms);
        if (o->slo.has_tpot)
            snprintf(slo + strlen(slo), sizeof slo - strlen(slo), "%stpot<=%g ms",
                     o->slo.has_ttft ? ", " : "", o->slo.tpot_ms);
        printf("goodput              %.2f req/s, %zu of %zu requests (%.1f%%) meet %s\n",
               sm->goodput_rps, sm->good, sm->sent, 100.0 * sm->goodput_fraction, slo);
    }
    if (r->inflight_waits)
        printf("max-inflight         %zu arrivals waited for a free slot (--max-inflight %d)\n",
               r->inflight_waits, o->max_inflight);
    /* the most frequent errors */
    if (sm->failed) {
        printf("errors:\n");
        int shown = 0;
        char **seen = calloc(r->n_slots, sizeof *seen);
        for (size_t i = 0; seen && i < r->n_slots && shown < 5; i++) {
            const char *e = r->slots[i]->rec.error;
            if (!e) continue;
            int dup = 0;
            for (int k = 0; k < shown && !dup; k++) dup = !strcmp(seen[k], e);
            if (dup) continue;
            size_t cnt = 0;
            for (size_t j = i; j < r->n_slots; j++)
                cnt += r->slots[j]->rec.error && !strcmp(r->slots[j]->rec.error, e);
            seen[shown++] = (char *)e;
            printf("  %5zu x %s\n", cnt, e);
        }
        free(seen);
    }
    fflush(stdout);
}

/* ---- the run ------------------------------------------------------------- */

static int ensure_dir(const char *dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s", dir);
    for (char *p = path + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(path, 0777) && errno != EEXIST) return -1;
        *p = '/';
    }
    if (mkdir(path, 0777) && errno != EEXIST) return -1;
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode) ? 0 : -1;
}

/* Stop sending; wait for what is in flight (bounded by drain when
 * bounded), then cancel the rest. */
static void finish_run(run_t *r, int bounded_drain) {
    double drain_end = now_s(r) + r->o->drain_timeout;
    pthread_mutex_lock(&r->mu);
    for (;;) {
        size_t done = (size_t)(r->completed + r->failed);
        if (done == r->n_slots) break;
        if (bounded_drain && now_s(r) >= drain_end) {
            r->abort_pending = 1;
            for (size_t i = 0; i < r->n_slots; i++) {
                slot_t *s = r->slots[i];
                if (s->done) continue;
                atomic_store(&s->cancel, 1);
                if (s->call) infer_call_cancel(s->call);
            }
        }
        if (g_interrupted && !bounded_drain) {
            bounded_drain = 1;
            drain_end = now_s(r) + r->o->drain_timeout;
        }
        struct timespec ts = clock_realtime_after_ms(50);
        pthread_cond_timedwait(&r->cv, &r->mu, &ts);
    }
    r->stop_workers = 1;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    for (int i = 0; i < r->nworkers; i++) pthread_join(r->workers[i], NULL);
}

/* Dispatch until the bounds say stop. */
static void dispatch(run_t *r, long long n_total) {
    const opts_t *o = r->o;
    lt_rng rng;
    lt_rng_seed(&rng, o->seed);
    double t_next = 0;
    pthread_mutex_lock(&r->mu);
    if (o->mode == MODE_CONCURRENCY)
        for (int i = 0; i < o->concurrency; i++) spawn_worker(r);
    pthread_mutex_unlock(&r->mu);
    for (long long i = 0; i < n_total && !g_interrupted; i++) {
        if (o->mode == MODE_CONCURRENCY) {
            pthread_mutex_lock(&r->mu);
            for (;;) {
                long outstanding = (long)r->n_slots - r->completed - r->failed;
                if (outstanding < o->concurrency || g_interrupted) break;
                if (o->duration > 0 && now_s(r) - r->t0 >= o->duration) break;
                struct timespec ts = clock_realtime_after_ms(50);
                pthread_cond_timedwait(&r->cv, &r->mu, &ts);
            }
            double t = now_s(r) - r->t0;
            int stop = g_interrupted || (o->duration > 0 && t >= o->duration);
            if (!stop && release(r, (size_t)i, t)) stop = 1;
            pthread_mutex_unlock(&r->mu);
            if (stop) break;
            continue;
        }
        double t_sched;
        if (o->mode == MODE_TRACE) {
            t_sched = r->trace.reqs[i].t * o->time_scale;
        } else {
            if (i > 0) t_next += lt_arrival_gap(&rng, o->rate, o->burstiness);
            t_sched = t_next;
        }
        if (o->duration > 0 && t_sched >= o->duration) {
            /* sleep out the duration: the run lasts as long as asked */
            while (!g_interrupted && now_s(r) - r->t0 < o->duration) sleep_s(0.05);
            break;
        }
        for (;;) {
            double left = r->t0 + t_sched - now_s(r);
            if (left <= 0 || g_interrupted) break;
            sleep_s(left < 0.05 ? left : 0.05);
        }
        if (g_interrupted) break;
        pthread_mutex_lock(&r->mu);
        int bad = release(r, (size_t)i, t_sched);
        pthread_mutex_unlock(&r->mu);
        if (bad) break;
    }
}

int lt_main(int argc, char **argv) {
    opts_t o;
    int rc = parse_opts(argc, argv, &o);
    if (rc == 3) return 0;
    if (rc) return rc;

    run_t *r = calloc(1, sizeof *r);
    if (!r) return 1;
    r->o = &o;
    r->clock.now = lt_clock_monotonic;
    char err[1024];
    if (o.trace_path && lt_trace_load(o.trace_path, &r->trace, err, sizeof err)) {
        fprintf(stderr, "loadtest: %s\n", err);
        free(r);
        return 2;
    }
    r->defaults.prompt_len = o.prompt_len;
    r->defaults.max_tokens = o.default_max_tokens;
    r->defaults.ignore_eos = -1;

    long long n_total = o.num_requests;
    if (o.mode == MODE_TRACE) {
        if (!n_total || n_total > (long long)r->trace.n) n_total = (long long)r->trace.n;
    } else if (!n_total) {
        n_total = o.duration > 0 ? INT64_MAX : (r->trace.n ? (long long)r->trace.n : 100);
    }

    int exit_code = 0;
    if (o.out_dir && ensure_dir(o.out_dir)) {
        fprintf(stderr, "loadtest: cannot create --out %s: %s\n", o.out_dir, strerror(errno));
        lt_trace_free(&r->trace);
        free(r);
        return 1;
    }
    if (o.u.kind == LT_TARGET_RPC) {
        infer_client_opts co = {0};
        co.api_key = o.api_key;
        co.heart_beat_interval_seconds = o.heartbeat;
        if (infer_connect_multi(o.urls, o.n_urls, &co, &r->rpc, err, sizeof err)) {
            fprintf(stderr, "loadtest: %s\n", err);
            lt_trace_free(&r->trace);
            free(r);
            return 1;
        }
        /* gauges: one client per server, no heartbeat of their own */
        co.heart_beat_interval_seconds = -1;
        for (size_t i = 0; i < o.n_urls; i++)
            if (infer_connect(o.urls[i], &co, &r->rpc_stats[i], err, sizeof err))
                r->rpc_stats[i] = NULL;
    }
    int max_workers = o.mode == MODE_CONCURRENCY ? o.concurrency : o.max_inflight;
    r->workers = calloc((size_t)max_workers + 1, sizeof *r->workers);
    r->max_workers = max_workers;
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    atomic_init(&r->out_tokens, 0);
    atomic_init(&r->monitor_stop, 0);
    r->tty = isatty(STDERR_FILENO);
    r->n_total = n_total;

    struct sigaction sa = {0}, old_int, old_term, old_pipe;
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, &old_pipe);
    g_interrupted = 0;

    r->t0 = now_s(r);
    pthread_t mon;
    int have_mon = pthread_create(&mon, NULL, monitor_main, r) == 0;
    if (r->workers) dispatch(r, n_total);
    finish_run(r, o.duration > 0 || g_interrupted);
    double total = now_s(r) - r->t0;
    atomic_store(&r->monitor_stop, 1);
    if (have_mon) pthread_join(mon, NULL);

    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    sigaction(SIGPIPE, &old_pipe, NULL);

    const lt_record **recs = calloc(r->n_slots + 1, sizeof *recs);
    lt_summary sm;
    for (size_t i = 0; recs && i < r->n_slots; i++) recs[i] = &r->slots[i]->rec;
    if (!recs || lt_summarize(recs, r->n_slots, o.has_slo ? &o.slo : NULL, &sm)) {
        fprintf(stderr, "loadtest: out of memory\n");
        exit_code = 1;
    } else {
        printf("total time: %.3f s\n", total);
        print_summary(r, &sm);
        if (o.out_dir && write_outputs(r, &sm, argc, argv)) exit_code = 1;
        if (sm.failed && o.fail_on_error) exit_code = 1;
    }
    if (g_interrupted) fprintf(stderr, "loadtest: interrupted; stopped sending and drained\n");
    free(recs);

    for (size_t i = 0; i < r->n_slots; i++) {
        slot_t *s = r->slots[i];
        lt_record_free(&s->rec);
        free(s->prompt);
        free(s->text);
        free(s);
    }
    free(r->slots);
    free(r->samples);
    free(r->workers);
    for (size_t i = 0; i < o.n_urls; i++) infer_close(r->rpc_stats[i]);
    infer_close(r->rpc);
    lt_trace_free(&r->trace);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    free(r);
    return exit_code;
}
