/*
 * infer_cli.c - `infer-cli`, a command-line client of infer-server built on
 * libinfer_client: one subcommand per RPC method (generate, stream,
 * tokenize, detokenize, health, stats, model) plus `chat`, an interactive
 * conversation that keeps the messages and streams each answer.
 *
 * Exit status: 0 on OK, 1 when the call ended with another status (printed
 * as "infer-cli: CODE: message"), 2 on a usage error.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clients/c/infer_client.h"

#define CLI_DEFAULT_URL "tcp://127.0.0.1:8700"
#define CLI_MAX_STOP 16
#define CLI_MAX_IDS 65536

typedef struct {
    const char *urls[INFER_MAX_ENDPOINTS];
    size_t n_urls;
    float heartbeat_s; /* heart_beat_interval_seconds; 0 = the library's default */
    const char *api_key;
    int timeout_ms;
    int quiet;
    int json_ids; /* print token ids */
    infer_gen_params gp;
    const char *stop[CLI_MAX_STOP];
    int chat;           /* wrap the prompt as a user message */
    const char *system; /* system message for chat / --chat */
    int32_t *prompt_ids;
    size_t n_prompt_ids;
    int add_special, parse_special, render_special; /* tokenize / detokenize */
} cli_opts;

static const char *cli_usage_main =
    "usage: infer-cli [--url URL]... [--api-key KEY] [--timeout MS] COMMAND [options] [ARGS]\n"
    "\n"
    "A client of infer-server (RPC over nng). Commands:\n"
    "  generate PROMPT...   one completion, printed when it is complete\n"
    "  stream PROMPT...     the same, printed token by token as it is sampled\n"
    "  chat                 interactive conversation (/quit, /reset, /help)\n"
    "  tokenize TEXT...     token ids of TEXT\n"
    "  detokenize ID...     text of token ids\n"
    "  health               SERVING or DRAINING (exit 0 only when SERVING)\n"
    "  stats                the server's counters (queues, KV blocks, tokens)\n"
    "  model                the loaded model\n"
    "\n"
    "Common options (before or after the command):\n"
    "  --url URL            server address (default " CLI_DEFAULT_URL "); repeat it\n"
    "                       for several servers: each call goes to the one with the\n"
    "                       fewest calls in flight, unary calls fail over (docs/clients.md)\n"
    "  --heartbeat SECONDS  Health check of each server every SECONDS (default 5;\n"
    "                       a negative value turns it off)\n"
    "  --api-key KEY        shared secret (default: $ENGINE_API_KEY)\n"
    "  --timeout MS         deadline of each call in milliseconds (default: none)\n"
    "  -h, --help           help; `infer-cli COMMAND --help` for a command's options\n";

static const char *cli_usage_sampling =
    "Generation options:\n"
    "  -n, --max-tokens N   tokens to generate (server default 128)\n"
    "  --min-tokens N       do not stop before N tokens\n"
    "  --temperature T      0 = greedy (server default 0.8)\n"
    "  --greedy             same as --temperature 0\n"
    "  --top-k K, --top-p P, --min-p P\n"
    "  --repeat-penalty F, --repeat-last-n N\n"
    "  --seed S             sampler seed (default: random per request)\n"
    "  --stop TEXT          stop string, repeatable (up to 16)\n"
    "  --ignore-eos         keep going past end-of-generation\n"
    "  --n N                completions for the prompt (generate only)\n"
    "  --ids 1,2,3          prompt as token ids instead of text\n"
    "  --chat               send the prompt as a user message (chat template)\n"
    "  --system TEXT        system message (with --chat, and in chat)\n"
    "  --no-special         do not prepend BOS to a text prompt\n"
    "  --token-ids          print the generated token ids too\n"
    "  -q, --quiet          no usage/timing line on stderr\n"
    "PROMPT \"-\" reads the prompt from standard input.\n";

static void cli_help(const char *cmd) {
    if (!cmd) {
        fputs(cli_usage_main, stdout);
    } else if (!strcmp(cmd, "generate") || !strcmp(cmd, "stream")) {
        printf("usage: infer-cli %s [options] PROMPT...\n\n%s\n", cmd,
               !strcmp(cmd, "generate") ? "Unary Generate: prints the completion when it is done."
                                        : "GenerateStream: prints text as each token arrives.");
        fputs(cli_usage_sampling, stdout);
    } else if (!strcmp(cmd, "chat")) {
        printf("usage: infer-cli chat [options]\n\n"
               "Interactive: each line you type is a user message; the answer streams back\n"
               "and joins the conversation. Commands: /quit (or end of input), /reset\n"
               "(forget the conversation), /help. Ctrl-C cancels the answer in progress.\n\n");
        fputs(cli_usage_sampling, stdout);
    } else if (!strcmp(cmd, "tokenize")) {
        printf("usage: infer-cli tokenize [--add-special] [--no-parse-special] TEXT...\n\n"
               "Prints the token ids of TEXT, space-separated. --add-special prepends BOS\n"
               "(per the model); --no-parse-special treats <|...|> markers as plain text.\n");
    } else if (!strcmp(cmd, "detokenize")) {
        printf("usage: infer-cli detokenize [--render-special] ID...\n\n"
               "Prints the text of the token ids (separated by spaces or commas).\n");
    } else if (!strcmp(cmd, "health")) {
        printf("usage: infer-cli health\n\nPrints SERVING or DRAINING; exit 0 only when "
               "SERVING.\n");
    } else if (!strcmp(cmd, "stats")) {
        printf("usage: infer-cli stats\n\nPrints the server's counters, one per line.\n");
    } else if (!strcmp(cmd, "model")) {
        printf("usage: infer-cli model\n\nPrints the loaded model's description.\n");
    } else {
        fputs(cli_usage_main, stdout);
    }
}

static int cli_fail(const infer_status *st) {
    fprintf(stderr, "infer-cli: %s: %s\n", infer_status_name(st->code), st->message);
    return 1;
}

static int cli_parse_int(const char *flag, const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "infer-cli: %s: expected an integer in [%ld, %ld], got '%s'\n", flag, lo,
                hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

static int cli_parse_float(const char *flag, const char *s, float *out) {
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    if (errno || end == s || *end) {
        fprintf(stderr, "infer-cli: %s: expected a number, got '%s'\n", flag, s);
        return -1;
    }
    *out = v;
    return 0;
}

/* "1,2 3" -> ids; returns the count or -1. */
static long cli_parse_ids(const char *s, int32_t *ids, size_t cap) {
    size_t n = 0;
    while (*s) {
        while (*s == ',' || *s == ' ' || *s == '\t' || *s == '\n') s++;
        if (!*s) break;
        char *end;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (errno || end == s || v < 0 || v > INT32_MAX || n == cap) return -1;
        ids[n++] = (int32_t)v;
        s = end;
    }
    return (long)n;
}

static char *cli_read_stdin(void) {
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    if (!buf) return NULL;
    size_t got;
    while ((got = fread(buf + len, 1, cap - len - 1, stdin)) > 0) {
        len += got;
        if (cap - len < 2) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                return NULL;
            }
            buf = nb;
            cap *= 2;
        }
    }
    buf[len] = 0;
    return buf;
}

/* Positional words joined by spaces; "-" alone = stdin. Caller frees. */
static char *cli_join(char **words, int n) {
    if (n == 1 && !strcmp(words[0], "-")) return cli_read_stdin();
    size_t len = 1;
    for (int i = 0; i < n; i++) len += strlen(words[i]) + 1;
    char *s = malloc(len);
    if (!s) return NULL;
    s[0] = 0;
    for (int i = 0; i < n; i++) {
        if (i) strcat(s, " ");
        strcat(s, words[i]);
    }
    return s;
}

/* ---- option parsing ---------------------------------------------------- */

/* Options that only store a value are rows of this table: an int in
 * [lo, hi], a float, a string, or (CLI_ARG_SET) the constant lo. */
typedef enum { CLI_ARG_INT, CLI_ARG_FLOAT, CLI_ARG_STR, CLI_ARG_SET } cli_arg_kind;

typedef struct {
    const char *name, *alias; /* alias may be NULL */
    cli_arg_kind kind;
    size_t off; /* of the field in cli_opts */
    long lo, hi;
} cli_opt_def;

#define CLI_OPT(name, alias, kind, field, lo, hi)                                                  \
    { name, alias, kind, offsetof(cli_opts, field), lo, hi }

static const cli_opt_def cli_opt_table[] = {
    CLI_OPT("--heartbeat", NULL, CLI_ARG_FLOAT, heartbeat_s, 0, 0),
    CLI_OPT("--api-key", NULL, CLI_ARG_STR, api_key, 0, 0),
    CLI_OPT("--timeout", NULL, CLI_ARG_INT, timeout_ms, 0, INT_MAX),
    CLI_OPT("--quiet", "-q", CLI_ARG_SET, quiet, 1, 0),
    CLI_OPT("--max-tokens", "-n", CLI_ARG_INT, gp.max_tokens, -1, INT_MAX),
    CLI_OPT("--min-tokens", NULL, CLI_ARG_INT, gp.min_tokens, 0, INT_MAX),
    CLI_OPT("--temperature", NULL, CLI_ARG_FLOAT, gp.temperature, 0, 0),
    CLI_OPT("--top-k", NULL, CLI_ARG_INT, gp.top_k, INT_MIN + 1, INT_MAX),
    CLI_OPT("--top-p", NULL, CLI_ARG_FLOAT, gp.top_p, 0, 0),
    CLI_OPT("--min-p", NULL, CLI_ARG_FLOAT, gp.min_p, 0, 0),
    CLI_OPT("--repeat-penalty", NULL, CLI_ARG_FLOAT, gp.repetition_penalty, 0, 0),
    CLI_OPT("--repeat-last-n", NULL, CLI_ARG_INT, gp.repeat_last_n, INT_MIN + 1, INT_MAX),
    CLI_OPT("--ignore-eos", NULL, CLI_ARG_SET, gp.ignore_eos, 1, 0),
    CLI_OPT("--n", NULL, CLI_ARG_INT, gp.n, INT_MIN + 1, INT_MAX),
    CLI_OPT("--chat", NULL, CLI_ARG_SET, chat, 1, 0),
    CLI_OPT("--system", NULL, CLI_ARG_STR, system, 0, 0),
    CLI_OPT("--no-special", NULL, CLI_ARG_SET, gp.add_special, 0, 0),
    CLI_OPT("--add-special", NULL, CLI_ARG_SET, add_special, 1, 0),
    CLI_OPT("--no-parse-special", NULL, CLI_ARG_SET, parse_special, 0, 0),
    CLI_OPT("--render-special", NULL, CLI_ARG_SET, render_special, 1, 0),
};

/* What an option handler did with argv[i] (and its value argv[i + 1]). */
typedef enum {
    CLI_OPT_ERROR = -1, /* usage error, already reported */
    CLI_OPT_UNKNOWN,    /* not this handler's option */
    CLI_OPT_FLAG,       /* took the option alone */
    CLI_OPT_VALUE,      /* took the option and its value */
} cli_opt_result;

static cli_opt_result cli_missing_value(const char *a) {
    fprintf(stderr, "infer-cli: %s needs a value\n", a);
    return CLI_OPT_ERROR;
}

static const cli_opt_def *cli_opt_find(const char *a) {
    for (size_t i = 0; i < sizeof cli_opt_table / sizeof cli_opt_table[0]; i++) {
        const cli_opt_def *d = &cli_opt_table[i];
        if (!strcmp(a, d->name) || (d->alias && !strcmp(a, d->alias))) return d;
    }
    return NULL;
}

/* A row of cli_opt_table: store the (parsed) value in its field. */
static cli_opt_result cli_opt_store(cli_opts *o, const cli_opt_def *d, const char *a,
                                    const char *v) {
    char *field = (char *)o + d->off;
    if (d->kind == CLI_ARG_SET) {
        *(int *)field = (int)d->lo;
        return CLI_OPT_FLAG;
    }
    if (!v) return cli_missing_value(a);
    long lv;
    switch (d->kind) {
    case CLI_ARG_INT:
        if (cli_parse_int(a, v, d->lo, d->hi, &lv)) return CLI_OPT_ERROR;
        *(int *)field = (int)lv;
        break;
    case CLI_ARG_FLOAT:
        if (cli_parse_float(a, v, (float *)field)) return CLI_OPT_ERROR;
        break;
    default: *(const char **)field = v; break;
    }
    return CLI_OPT_VALUE;
}

static cli_opt_result cli_opt_seed(cli_opts *o, const char *v) {
    char *end;
    errno = 0;
    unsigned long long s = strtoull(v, &end, 10);
    if (errno || end == v || *end) {
        fprintf(stderr, "infer-cli: --seed: expected an unsigned integer, got '%s'\n", v);
        return CLI_OPT_ERROR;
    }
    o->gp.has_seed = 1;
    o->gp.seed = (uint64_t)s;
    return CLI_OPT_VALUE;
}

static cli_opt_result cli_opt_stop(cli_opts *o, const char *v) {
    if (o->gp.n_stop == CLI_MAX_STOP) {
        fprintf(stderr, "infer-cli: at most %d --stop strings\n", CLI_MAX_STOP);
        return CLI_OPT_ERROR;
    }
    o->stop[o->gp.n_stop] = v;
    o->gp.stop = o->stop;
    o->gp.n_stop++;
    return CLI_OPT_VALUE;
}

static cli_opt_result cli_opt_url(cli_opts *o, const char *v) {
    if (o->n_urls == INFER_MAX_ENDPOINTS) {
        fprintf(stderr, "infer-cli: at most %d --url\n", INFER_MAX_ENDPOINTS);
        return CLI_OPT_ERROR;
    }
    o->urls[o->n_urls++] = v;
    return CLI_OPT_VALUE;
}

static cli_opt_result cli_opt_ids(cli_opts *o, const char *v) {
    static int32_t ids[CLI_MAX_IDS];
    long n = cli_parse_ids(v, ids, CLI_MAX_IDS);
    if (n < 0) {
        fprintf(stderr, "infer-cli: --ids: expected comma-separated token ids\n");
        return CLI_OPT_ERROR;
    }
    o->prompt_ids = ids;
    o->n_prompt_ids = (size_t)n;
    return CLI_OPT_VALUE;
}

/* Options that do more than store one value. */
static cli_opt_result cli_opt_other(cli_opts *o, const char *a, const char *v) {
    if (!strcmp(a, "--greedy")) {
        o->gp.temperature = 0.0f;
        return CLI_OPT_FLAG;
    }
    if (!strcmp(a, "--token-ids")) {
        o->json_ids = 1;
        o->gp.return_token_ids = 1;
        return CLI_OPT_FLAG;
    }
    cli_opt_result (*with_value)(cli_opts *, const char *) = NULL;
    if (!strcmp(a, "--seed")) with_value = cli_opt_seed;
    else if (!strcmp(a, "--stop")) with_value = cli_opt_stop;
    else if (!strcmp(a, "--ids")) with_value = cli_opt_ids;
    else if (!strcmp(a, "--url")) with_value = cli_opt_url;
    else return CLI_OPT_UNKNOWN;
    return v ? with_value(o, v) : cli_missing_value(a);
}

/* Parses every option (anywhere on the line); positional words go to pos.
 * Returns 0, or -1 on a usage error; -h/--help sets *want_help. */
static int cli_parse(int argc, char **argv, cli_opts *o, char **pos, int *npos, int *want_help) {
    *npos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (a[0] != '-' || !strcmp(a, "-")) {
            pos[(*npos)++] = argv[i];
            continue;
        }
        if (!strcmp(a, "--")) {
            for (i++; i < argc; i++) pos[(*npos)++] = argv[i];
            break;
        }
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            *want_help = 1;
            continue;
        }
        const cli_opt_def *d = cli_opt_find(a);
        cli_opt_result r = d ? cli_opt_store(o, d, a, v) : cli_opt_other(o, a, v);
        if (r == CLI_OPT_ERROR) return -1;
        if (r == CLI_OPT_UNKNOWN) {
            fprintf(stderr, "infer-cli: unknown option '%s' (see --help)\n", a);
            return -1;
        }
        if (r == CLI_OPT_VALUE) i++;
    }
    return 0;
}

/* ---- commands ---------------------------------------------------------- */

static void cli_print_usage_line(const infer_usage *u, const char *finish) {
    fprintf(stderr,
            "[finish=%s prompt_tokens=%d completion_tokens=%d queue=%.1fms ttft=%.1fms "
            "total=%.1fms]\n",
            finish ? finish : "?", u->prompt_tokens, u->completion_tokens, u->queue_ms, u->ttft_ms,
            u->total_ms);
}

static void cli_print_ids(FILE *f, const int32_t *ids, size_t n) {
    for (size_t i = 0; i < n; i++) fprintf(f, i ? " %d" : "%d", ids[i]);
    fputc('\n', f);
}

/* Fill gp's prompt from the positional words (text, or --ids, or --chat). */
static int cli_set_prompt(cli_opts *o, char **words, int n, char **text_out,
                          infer_chat_message *msgs) {
    *text_out = NULL;
    if (o->n_prompt_ids) {
        if (n) {
            fprintf(stderr, "infer-cli: give either --ids or a PROMPT, not both\n");
            return -1;
        }
        o->gp.prompt_ids = o->prompt_ids;
        o->gp.n_prompt_ids = o->n_prompt_ids;
        return 0;
    }
    if (!n) {
        fprintf(stderr, "infer-cli: missing PROMPT (see --help)\n");
        return -1;
    }
    char *text = cli_join(words, n);
    if (!text) {
        fprintf(stderr, "infer-cli: out of memory\n");
        return -1;
    }
    *text_out = text;
    if (o->chat) {
        size_t k = 0;
        if (o->system) msgs[k++] = (infer_chat_message){"system", o->system};
        msgs[k++] = (infer_chat_message){"user", text};
        o->gp.messages = msgs;
        o->gp.n_messages = k;
    } else {
        o->gp.prompt = text;
    }
    return 0;
}

static int cli_generate(infer_client *c, cli_opts *o, char **words, int n) {
    char *text;
    infer_chat_message msgs[2];
    if (cli_set_prompt(o, words, n, &text, msgs)) return 2;
    infer_result r;
    infer_status st;
    int rc = infer_generate(c, &o->gp, o->timeout_ms, &r, &st);
    free(text);
    if (rc != INFER_OK) return cli_fail(&st);
    for (size_t i = 0; i < r.n_completions; i++) {
        const infer_completion *cp = &r.completions[i];
        if (r.n_completions > 1) printf("--- completion %d (%s)\n", cp->index, cp->finish_reason);
        printf("%s\n", cp->text);
        if (o->json_ids) cli_print_ids(stdout, cp->token_ids, cp->n_token_ids);
    }
    if (!o->quiet)
        cli_print_usage_line(&r.usage, r.n_completions ? r.completions[0].finish_reason : NULL);
    infer_result_free(&r);
    return 0;
}

/* Streaming state shared by `stream` and `chat`. */
typedef struct {
    cli_opts *o;
    char *acc; /* the answer so far (chat keeps it) */
    size_t len, cap;
    int oom;
    char finish[16];
    infer_usage usage;
    int has_usage;
} cli_stream_state;

static int cli_on_chunk(const infer_chunk *ch, void *user) {
    cli_stream_state *s = user;
    if (ch->text_len) {
        fwrite(ch->text, 1, ch->text_len, stdout);
        fflush(stdout);
        if (s->len + ch->text_len + 1 > s->cap) {
            size_t cap = s->cap ? s->cap * 2 : 256;
            while (cap < s->len + ch->text_len + 1) cap *= 2;
            char *nb = realloc(s->acc, cap);
            if (!nb) {
                s->oom = 1;
                return 1;
            }
            s->acc = nb;
            s->cap = cap;
        }
        memcpy(s->acc + s->len, ch->text, ch->text_len);
        s->len += ch->text_len;
        s->acc[s->len] = 0;
    }
    if (s->o->json_ids && ch->n_token_ids) {
        fputs(" [", stdout);
        for (size_t i = 0; i < ch->n_token_ids; i++) printf(i ? " %d" : "%d", ch->token_ids[i]);
        fputs("]", stdout);
    }
    if (ch->finish_reason) snprintf(s->finish, sizeof s->finish, "%s", ch->finish_reason);
    if (ch->has_usage) {
        s->usage = ch->usage;
        s->has_usage = 1;
    }
    return 0;
}

/* Ctrl-C: SIGINT is blocked in every thread and taken by cli_sigint_thread
 * (sigwait), so cancelling runs in a normal thread context. During a
 * streamed answer it cancels that call; otherwise it ends the program. */
static pthread_mutex_t cli_mu = PTHREAD_MUTEX_INITIALIZER;
static infer_call *cli_active_call; /* guarded by cli_mu */
static int cli_interrupted;         /* guarded by cli_mu */

static void *cli_sigint_thread(void *arg) {
    sigset_t *set = arg;
    for (;;) {
        int sig;
        if (sigwait(set, &sig)) continue;
        pthread_mutex_lock(&cli_mu);
        infer_call *call = cli_active_call;
        if (call) {
            cli_interrupted = 1;
            infer_call_cancel(call);
        }
        pthread_mutex_unlock(&cli_mu);
        if (!call) {
            fputc('\n', stderr);
            _exit(130);
        }
    }
    return NULL;
}

static int cli_run_stream(infer_client *c, cli_opts *o, cli_stream_state *s, infer_status *st) {
    infer_call *call;
    int rc = infer_stream_start(c, &o->gp, o->timeout_ms, cli_on_chunk, s, &call, st);
    if (rc != INFER_OK) return rc;
    pthread_mutex_lock(&cli_mu);
    cli_active_call = call;
    cli_interrupted = 0;
    pthread_mutex_unlock(&cli_mu);
    rc = infer_call_wait(call, st);
    pthread_mutex_lock(&cli_mu);
    cli_active_call = NULL;
    pthread_mutex_unlock(&cli_mu);
    infer_call_free(call);
    return rc;
}

static int cli_was_interrupted(void) {
    pthread_mutex_lock(&cli_mu);
    int v = cli_interrupted;
    pthread_mutex_unlock(&cli_mu);
    return v;
}

static int cli_stream(infer_client *c, cli_opts *o, char **words, int n) {
    char *text;
    infer_chat_message msgs[2];
    if (cli_set_prompt(o, words, n, &text, msgs)) return 2;
    cli_stream_state s = {.o = o};
    infer_status st;
    int rc = cli_run_stream(c, o, &s, &st);
    free(text);
    putchar('\n');
    fflush(stdout);
    if (!o->quiet && s.has_usage) cli_print_usage_line(&s.usage, s.finish);
    free(s.acc);
    if (rc == INFER_CANCELLED && cli_was_interrupted()) return 130; /* Ctrl-C */
    return rc == INFER_OK ? 0 : cli_fail(&st);
}

typedef struct {
    char *role;
    char *content;
} cli_msg;

static int cli_chat(infer_client *c, cli_opts *o) {
    cli_msg *hist = NULL;
    size_t nh = 0, caph = 0;
    int interactive = isatty(0);
    char *line = NULL;
    size_t linecap = 0;
    int rc = 0;
    if (interactive)
        fprintf(stderr, "chat with %s%s - /quit to leave, /reset to start over\n", o->urls[0],
                o->n_urls > 1 ? " (and others)" : "");
    for (;;) {
        if (interactive) {
            fputs("> ", stderr);
            fflush(stderr);
        }
        ssize_t got = getline(&line, &linecap, stdin);
        if (got < 0) break;
        while (got > 0 && (line[got - 1] == '\n' || line[got - 1] == '\r')) line[--got] = 0;
        if (!got) continue;
        if (!strcmp(line, "/quit") || !strcmp(line, "/exit")) break;
        if (!strcmp(line, "/help")) {
            fputs("/quit leaves, /reset forgets the conversation; Ctrl-C cancels an answer\n",
                  stderr);
            continue;
        }
        if (!strcmp(line, "/reset")) {
            for (size_t i = 0; i < nh; i++) {
                free(hist[i].role);
                free(hist[i].content);
            }
            nh = 0;
            continue;
        }
        if (nh + 2 > caph) {
            size_t nc = caph ? caph * 2 : 16;
            cli_msg *nb = realloc(hist, nc * sizeof *nb);
            if (!nb) {
                rc = 1;
                break;
            }
            hist = nb;
            caph = nc;
        }
        hist[nh].role = strdup("user");
        hist[nh].content = strdup(line);
        if (!hist[nh].role || !hist[nh].content) {
            free(hist[nh].role);
            free(hist[nh].content);
            rc = 1;
            break;
        }
        nh++;

        size_t nm = nh + (o->system ? 1 : 0), k = 0;
        infer_chat_message *msgs = malloc(nm * sizeof *msgs);
        if (!msgs) {
            rc = 1;
            break;
        }
        if (o->system) msgs[k++] = (infer_chat_message){"system", o->system};
        for (size_t i = 0; i < nh; i++)
            msgs[k++] = (infer_chat_message){hist[i].role, hist[i].content};
        o->gp.messages = msgs;
        o->gp.n_messages = nm;

        cli_stream_state s = {.o = o};
        infer_status st;
        int r = cli_run_stream(c, o, &s, &st);
        free(msgs);
        putchar('\n');
        fflush(stdout);
        if (r == INFER_OK || (r == INFER_CANCELLED && cli_was_interrupted())) {
            /* A cancelled answer still joins the conversation as far as it got. */
            hist[nh].role = strdup("assistant");
            hist[nh].content = s.acc ? s.acc : strdup("");
            s.acc = NULL;
            if (!hist[nh].role || !hist[nh].content) {
                free(hist[nh].role);
                free(hist[nh].content);
                rc = 1;
                break;
            }
            nh++;
            if (!o->quiet && s.has_usage) cli_print_usage_line(&s.usage, s.finish);
        } else {
            cli_fail(&st);
            /* Drop the unanswered user message so the conversation stays valid. */
            nh--;
            free(hist[nh].role);
            free(hist[nh].content);
            if (r == INFER_UNAVAILABLE || r == INFER_UNAUTHENTICATED) {
                rc = 1;
                free(s.acc);
                break;
            }
        }
        free(s.acc);
    }
    for (size_t i = 0; i < nh; i++) {
        free(hist[i].role);
        free(hist[i].content);
    }
    free(hist);
    free(line);
    return rc;
}

static int cli_tokenize(infer_client *c, cli_opts *o, char **words, int n) {
    if (!n) {
        fprintf(stderr, "infer-cli: tokenize: missing TEXT\n");
        return 2;
    }
    char *text = cli_join(words, n);
    if (!text) return 1;
    int32_t *ids;
    size_t nids;
    infer_status st;
    int rc =
        infer_tokenize(c, text, o->add_special, o->parse_special, o->timeout_ms, &ids, &nids, &st);
    free(text);
    if (rc != INFER_OK) return cli_fail(&st);
    cli_print_ids(stdout, ids, nids);
    free(ids);
    return 0;
}

static int cli_detokenize(infer_client *c, cli_opts *o, char **words, int n) {
    char *joined = n ? cli_join(words, n) : NULL;
    if (!joined) {
        fprintf(stderr, "infer-cli: detokenize: missing ID...\n");
        return 2;
    }
    int32_t *ids = malloc(CLI_MAX_IDS * sizeof *ids);
    long nids = ids ? cli_parse_ids(joined, ids, CLI_MAX_IDS) : -1;
    free(joined);
    if (nids < 0) {
        free(ids);
        fprintf(stderr, "infer-cli: detokenize: expected token ids\n");
        return 2;
    }
    char *text;
    infer_status st;
    int rc = infer_detokenize(c, ids, (size_t)nids, o->render_special, o->timeout_ms, &text, &st);
    free(ids);
    if (rc != INFER_OK) return cli_fail(&st);
    printf("%s\n", text);
    free(text);
    return 0;
}

static void cli_kv(const char *k, int64_t v) {
    if (v >= 0) printf("%-22s %lld\n", k, (long long)v);
}

static int cli_stats(infer_client *c, cli_opts *o) {
    infer_stats_t s;
    infer_status st;
    if (infer_stats(c, o->timeout_ms, &s, &st) != INFER_OK) return cli_fail(&st);
    cli_kv("waiting", s.waiting);
    cli_kv("running", s.running);
    cli_kv("swapped", s.swapped);
    cli_kv("blocks_total", s.blocks_total);
    cli_kv("blocks_free", s.blocks_free);
    cli_kv("blocks_cpu_total", s.blocks_cpu_total);
    cli_kv("blocks_cpu_free", s.blocks_cpu_free);
    cli_kv("preemptions_swap", s.preemptions_swap);
    cli_kv("preemptions_recompute", s.preemptions_recompute);
    cli_kv("prompt_tokens", s.prompt_tokens);
    cli_kv("generated_tokens", s.generated_tokens);
    cli_kv("requests_finished", s.requests_finished);
    cli_kv("steps", s.steps);
    cli_kv("active_calls", s.active_calls);
    cli_kv("connections", s.connections);
    return 0;
}

static int cli_model(infer_client *c, cli_opts *o) {
    infer_model_info_t m;
    infer_status st;
    if (infer_model_info(c, o->timeout_ms, &m, &st) != INFER_OK) return cli_fail(&st);
    if (m.name[0]) printf("%-22s %s\n", "name", m.name);
    if (m.architecture[0]) printf("%-22s %s\n", "architecture", m.architecture);
    if (m.path[0]) printf("%-22s %s\n", "path", m.path);
    if (m.chat_template_family[0]) printf("%-22s %s\n", "chat_template", m.chat_template_family);
    cli_kv("n_vocab", m.n_vocab);
    cli_kv("context_length", m.context_length);
    cli_kv("n_embd", m.n_embd);
    cli_kv("n_layer", m.n_layer);
    cli_kv("n_head", m.n_head);
    cli_kv("n_head_kv", m.n_head_kv);
    cli_kv("weight_bytes", m.weight_bytes);
    cli_kv("bos_id", m.bos_id);
    cli_kv("eos_id", m.eos_id);
    return 0;
}

int main(int argc, char **argv) {
    cli_opts o = {.add_special = INFER_UNSET_BOOL,
                  .parse_special = INFER_UNSET_BOOL,
                  .render_special = INFER_UNSET_BOOL};
    infer_gen_params_init(&o.gp);
    char **pos = calloc((size_t)argc + 1, sizeof *pos);
    if (!pos) return 1;
    int npos = 0, want_help = 0;
    if (cli_parse(argc, argv, &o, pos, &npos, &want_help)) {
        free(pos);
        return 2;
    }
    const char *cmd = npos ? pos[0] : NULL;
    static const char *cmds[] = {"generate",   "stream", "chat",  "tokenize",
                                 "detokenize", "health", "stats", "model"};
    int known = 0;
    for (size_t i = 0; cmd && i < sizeof cmds / sizeof cmds[0]; i++) known |= !strcmp(cmd, cmds[i]);
    if (want_help || !cmd) {
        cli_help(known ? cmd : NULL);
        free(pos);
        return want_help ? 0 : 2;
    }
    if (!known) {
        fprintf(stderr, "infer-cli: unknown command '%s' (see --help)\n", cmd);
        free(pos);
        return 2;
    }
    if (!o.api_key) {
        const char *k = getenv("ENGINE_API_KEY");
        if (k && *k) o.api_key = k;
    }

    /* Before any thread starts, so that all of them inherit the mask. */
    static sigset_t sigint_set;
    sigemptyset(&sigint_set);
    sigaddset(&sigint_set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigint_set, NULL);
    pthread_t sig_thread;
    if (pthread_create(&sig_thread, NULL, cli_sigint_thread, &sigint_set) == 0)
        pthread_detach(sig_thread);

    if (!o.n_urls) o.urls[o.n_urls++] = CLI_DEFAULT_URL;
    infer_client_opts copts = {.api_key = o.api_key, .heart_beat_interval_seconds = o.heartbeat_s};
    infer_client *c;
    char err[256];
    if (infer_connect_multi(o.urls, o.n_urls, &copts, &c, err, sizeof err)) {
        fprintf(stderr, "infer-cli: %s\n", err);
        free(pos);
        return 1;
    }

    char **words = pos + 1;
    int nw = npos - 1;
    int rc;
    if (!strcmp(cmd, "generate")) {
        rc = cli_generate(c, &o, words, nw);
    } else if (!strcmp(cmd, "stream")) {
        rc = cli_stream(c, &o, words, nw);
    } else if (!strcmp(cmd, "chat")) {
        o.gp.n = INFER_UNSET_INT;
        rc = cli_chat(c, &o);
    } else if (!strcmp(cmd, "tokenize")) {
        rc = cli_tokenize(c, &o, words, nw);
    } else if (!strcmp(cmd, "detokenize")) {
        rc = cli_detokenize(c, &o, words, nw);
    } else if (!strcmp(cmd, "health")) {
        char h[32];
        infer_status st;
        rc = infer_health(c, o.timeout_ms, h, sizeof h, &st) == INFER_OK ? 0 : cli_fail(&st);
        if (!rc) {
            printf("%s\n", h);
            rc = strcmp(h, "SERVING") ? 1 : 0;
        }
    } else if (!strcmp(cmd, "stats")) {
        rc = cli_stats(c, &o);
    } else {
        rc = cli_model(c, &o);
    }
    infer_close(c);
    free(pos);
    return rc;
}
