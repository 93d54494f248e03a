/*
 * infer_generate.c - `infer-generate`, the offline batch job: load a model,
 * run a list of prompts through the serving engine, write completions.
 *
 * Prompts come from -p (repeatable) and/or --prompts-file (plain lines or
 * JSON Lines with per-prompt settings). All of them are submitted to the
 * engine at once; it batches them continuously (or in static batches with
 * --batching static) under the batching and KV cache settings of an
 * engine_config: defaults < --config FILE < flags and --set KEY=VALUE in
 * the order given (docs/config.md); a server section in the file is ignored.
 *
 * Completions go to stdout, or as JSON Lines to --output-file; progress and
 * the report go to stderr. Exit codes: 0 ok, 1 model load / generation
 * failure, 2 bad arguments, bad config or bad input.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "apps/app_start.h"
#include "apps/cli_args.h"
#include "base/clock.h"
#include "core/backend/backend.h"
#include "core/chat.h"
#include "core/gguf.h"
#include "core/json_grammar.h"
#include "core/model.h"
#include "core/sampler.h"
#include "core/tokenizer.h"
#include "engine/config.h"
#include "engine/engine.h"
#include "engine/generate.h"

#define PROG "infer-generate"

/* One prompt and its settings, as read from the command line or a file. */
typedef struct {
    char *text;
    char *origin; /* "prompt 2" or "prompts.jsonl:7", for messages */
    sampler_params sp;
    int max_tokens;
    int min_tokens;
    int ignore_eos;
    char **stop;
    int n_stop;
    int seed_set;      /* the file gave a seed */
    int format;        /* engine_format, from "response_format" */
    char *json_schema; /* its schema as JSON text (ENGINE_FORMAT_JSON_SCHEMA) */
} prompt_spec;

typedef struct {
    app_config_args ca;
    engine_config cfg;        /* resolved: defaults, file, env, overrides, validated */
    const char **cli_prompts; /* -p, in order */
    int n_cli_prompts;
    const char *prompts_file;
    const char *output_file;
    int max_tokens, min_tokens, ignore_eos;
    sampler_params sp;
    int seed_given;
    int chat, stream, quiet;
    char **stop;
    int n_stop;
    prompt_spec *prompts;
    int n_prompts, cap_prompts;
} cli_args;

static void usage(FILE *f) {
    fprintf(f,
            "usage: infer-generate [options] (-p PROMPT ... | --prompts-file FILE)\n"
            "\n"
            "Offline batch generation: submits every prompt to the serving engine at\n"
            "once, which batches them continuously, and prints the completions (or\n"
            "writes them as JSON Lines).\n"
            "\n"
            "Model and input:\n"
            "  -m, --model PATH         GGUF model file (model_loading_config.model_path;\n"
            "                           default: " APP_DEFAULT_MODEL ")\n"
            "  -p, --prompt TEXT        a prompt; repeat for several\n"
            "      --prompts-file FILE  one prompt per line; or JSON Lines when lines start\n"
            "                           with '{': {\"prompt\": \"...\", \"max_tokens\": 64,\n"
            "                           \"temperature\": 0.7, \"top_k\": 40, \"top_p\": 0.9,\n"
            "                           \"min_p\": 0.05, \"repetition_penalty\": 1.1,\n"
            "                           \"min_tokens\": 0, \"seed\": 1, \"ignore_eos\": false,\n"
            "                           \"response_format\": {\"type\": \"json_object\"},\n"
            "                           \"stop\": [\"...\"]}; fields left out take the\n"
            "                           command-line values; empty lines are skipped\n"
            "      --chat               wrap each prompt as a user message with the model's\n"
            "                           chat template (tokenizer.chat_template)\n"
            "\n"
            "Generation:\n"
            "  -n, --max-tokens N       tokens to generate per prompt (default 128; -1 = until\n"
            "                           end of generation, the context or the KV cache is full)\n"
            "  -l, --generation-length N  the same as --max-tokens\n"
            "      --min-tokens N       suppress end-of-generation before N tokens (default 0)\n"
            "      --ignore-eos         never stop at end-of-generation tokens\n"
            "      --stop TEXT          stop when the completion contains TEXT (cut from the\n"
            "                           output); repeatable\n"
            "      --temperature T      sampling temperature, 0 = greedy (default 0.8)\n"
            "      --top-k K            keep the K most likely tokens, 0 = off (default 40)\n"
            "      --top-p P            nucleus sampling, 1 = off (default 0.95)\n"
            "      --min-p P            drop tokens below P x the top probability,\n"
            "                           0 = off (default 0.05)\n"
            "      --repeat-penalty R   penalize the last 64 tokens, 1 = off (default 1.0)\n"
            "      --repeat-last-n N    tokens the repeat penalty looks at (default 64)\n"
            "      --seed N             sampling seed (default: random, printed on stderr);\n"
            "                           each prompt's sampler starts from this seed, so its\n"
            "                           output does not depend on the batch it runs in\n"
            "      --greedy             shorthand for --temperature 0\n"
            "\n"
            "Engine (batching and KV cache; every key is described in docs/config.md):\n"
            "      --config FILE        engine config JSON (model_loading_config,\n"
            "                           batcher_config, cache_config)\n"
            "      --set KEY=VALUE      set one config key, e.g. --set\n"
            "                           cache_config.kv_memory_mb=512; repeatable\n"
            "      --batching MODE      continuous (default): a finished sequence's place is\n"
            "                           taken by a waiting one at the next step; static: a\n"
            "                           batch runs to its end before the next is formed\n"
            "                           (batcher_config.policy)\n"
            "  -b, --batch-size N       sequences per step (batcher_config.batch_max_seqs,\n"
            "                           default 64)\n"
            "      --batch-max-tokens N tokens per step over all sequences: prompt chunks\n"
            "                           plus one per decoding sequence (default 512)\n"
            "      --num-blocks N|auto  KV blocks in the device tier; auto (default) fills\n"
            "                           cache_config.kv_memory_mb (default 256 MiB)\n"
            "      --num-blocks-cpu N   KV blocks in the CPU swap tier (default 0: none)\n"
            "      --block-size N       tokens per KV block, a power of two (default 16)\n"
            "      --watermark F        fraction of device blocks kept free when admitting\n"
            "                           a request, 0 .. 0.5 (default 0.01)\n"
            "      --swap-path PATH     back the CPU swap tier with this file, not RAM\n"
            "      --preemption MODE    when the device tier runs out: auto (default: swap\n"
            "                           if there is a CPU tier, else recompute), swap,\n"
            "                           recompute (cache_config.preemption_mode)\n"
            "      --kv f16|f32         KV cache element type (model_loading_config.dtype,\n"
            "                           default f16)\n"
            "      --numerics exact|fast  matmul arithmetic: exact (llama.cpp's results bit\n"
            "                           for bit, default) or fast (one float accumulator\n"
            "                           per output; model_loading_config.numerics)\n"
            "      --print-config       print the effective config as JSON and exit\n"
            "  Precedence: built-in defaults < --config < the flags above,\n"
            "  -m, -t and --set, applied in the order given.\n"
            "\n"
            "Execution and output:\n"
            "  -t, --threads N          CPU threads (model_loading_config.n_threads;\n"
            "                           default 0 = number of cores)\n"
            "  -o, --output-file FILE   write JSON Lines, one object per prompt: prompt,\n"
            "                           completion, prompt_tokens, completion_tokens,\n"
            "                           finish_reason (length|eos|stop), timings {ttft_ms\n"
            "                           (submit to first token, queueing included),\n"
            "                           latency_ms (submit to last token), prompt_ms (=\n"
            "                           ttft_ms), generation_ms (first to last token),\n"
            "                           prompt_tokens_per_s, generation_tokens_per_s}\n"
            "  -s, --stream             print tokens as they are generated (one prompt only)\n"
            "  -q, --quiet              no progress or report on stderr; progress is\n"
            "                           prompts done/total, tokens/s, elapsed and ETA,\n"
            "                           redrawn in place on a terminal, else a line every\n"
            "                           10 s\n"
            "  -h, --help               show this help\n"
            "      --version            show the version\n"
            "\n"
            "Without -o, completions go to stdout; with several prompts each one is\n"
            "preceded by a line '### [i] PROMPT'. At start, stderr shows the model, the KV\n"
            "cache (blocks and MiB per tier, block size) and the batching budgets; at the\n"
            "end, prompt and generated tokens with their rates, output throughput over\n"
            "the whole run, request latency and time-to-first-token percentiles, engine\n"
            "steps and preemptions, and the total time.\n"
            "Exit status: 0 success, 1 model load or generation error, 2 bad arguments,\n"
            "bad config or bad input.\n");
}

static char *xstrdup(const char *s) {
    char *p = strdup(s);
    if (!p) {
        fprintf(stderr, "infer-generate: out of memory\n");
        exit(1);
    }
    return p;
}

static prompt_spec *add_prompt(cli_args *a) {
    if (a->n_prompts == a->cap_prompts) {
        int cap = a->cap_prompts ? a->cap_prompts * 2 : 16;
        prompt_spec *p = realloc(a->prompts, (size_t)cap * sizeof *p);
        if (!p) {
            fprintf(stderr, "infer-generate: out of memory\n");
            exit(1);
        }
        a->prompts = p;
        a->cap_prompts = cap;
    }
    prompt_spec *p = &a->prompts[a->n_prompts++];
    memset(p, 0, sizeof *p);
    return p;
}

static void free_args(cli_args *a) {
    for (int i = 0; i < a->n_prompts; i++) {
        free(a->prompts[i].text);
        free(a->prompts[i].origin);
        free(a->prompts[i].json_schema);
        if (a->prompts[i].stop != a->stop) {
            for (int k = 0; k < a->prompts[i].n_stop; k++) free(a->prompts[i].stop[k]);
            free(a->prompts[i].stop);
        }
    }
    free(a->prompts);
    free(a->stop);
    free(a->cli_prompts);
    app_config_args_free(&a->ca);
}

/* A file entry's "response_format" (as the HTTP API takes it: {"type":
 * "text" | "json_object" | "json_schema", "json_schema": {"schema": {...}}}),
 * the schema checked here so a bad one is refused before the model loads. */
static int json_response_format(const cJSON *v, const char *where, prompt_spec *p) {
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(v, "type");
    engine_format f;
    if (!cJSON_IsObject(v) || !cJSON_IsString(t) || engine_format_parse(t->valuestring, &f)) {
        fprintf(stderr,
                "infer-generate: %s: 'response_format' must be {\"type\": \"text\", "
                "\"json_object\" or \"json_schema\"}\n",
                where);
        return -1;
    }
    p->format = f;
    if (p->format != ENGINE_FORMAT_JSON_SCHEMA) return 0;
    const cJSON *js = cJSON_GetObjectItemCaseSensitive(v, "json_schema");
    const cJSON *schema = cJSON_GetObjectItemCaseSensitive(js, "schema");
    if (!cJSON_IsObject(schema)) {
        fprintf(stderr,
                "infer-generate: %s: 'response_format.json_schema.schema' must be an "
                "object\n",
                where);
        return -1;
    }
    free(p->json_schema);
    p->json_schema = cJSON_PrintUnformatted(schema);
    if (!p->json_schema) return -1;
    char msg[400];
    jg_schema *g = jg_compile(p->json_schema, strlen(p->json_schema), msg, sizeof msg);
    if (!g) {
        fprintf(stderr, "infer-generate: %s: response_format: %s\n", where, msg);
        return -1;
    }
    jg_schema_free(g);
    return 0;
}

/* Defaults from the command line; file entries override them field by field. */
static void spec_defaults(const cli_args *a, prompt_spec *p) {
    p->sp = a->sp;
    p->max_tokens = a->max_tokens;
    p->min_tokens = a->min_tokens;
    p->ignore_eos = a->ignore_eos;
    p->stop = a->stop;
    p->n_stop = a->n_stop;
}

/* ---- --prompts-file ---- */

static int json_int(const cJSON *v, const char *where, const char *key, long lo, long hi,
                    int *out) {
    double d = cJSON_IsNumber(v) ? cJSON_GetNumberValue(v) : NAN;
    if (!cJSON_IsNumber(v) || d != floor(d) || d < (double)lo || d > (double)hi) {
        fprintf(stderr, "infer-generate: %s: '%s' must be an integer in [%ld, %ld]\n", where, key,
                lo, hi);
        return -1;
    }
    *out = (int)d;
    return 0;
}

static int json_float(const cJSON *v, const char *where, const char *key, float *out) {
    if (!cJSON_IsNumber(v)) {
        fprintf(stderr, "infer-generate: %s: '%s' must be a number\n", where, key);
        return -1;
    }
    *out = (float)cJSON_GetNumberValue(v);
    return 0;
}

static int parse_json_prompt(cli_args *a, const char *line, const char *where) {
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithOpts(line, &end, 1);
    if (!j) {
        const char *at = cJSON_GetErrorPtr();
        long col = at && at >= line ? (long)(at - line) + 1 : 1;
        fprintf(stderr, "infer-generate: %s: invalid JSON at column %ld\n", where, col);
        return -1;
    }
    if (!cJSON_IsObject(j)) {
        fprintf(stderr, "infer-generate: %s: expected a JSON object {\"prompt\": ...}\n", where);
        cJSON_Delete(j);
        return -1;
    }
    prompt_spec *p = add_prompt(a);
    spec_defaults(a, p);
    p->origin = xstrdup(where);
    int rc = -1;
    const cJSON *v;
    cJSON_ArrayForEach(v, j) {
        const char *k = v->string;
        if (strcmp(k, "prompt") == 0) {
            if (!cJSON_IsString(v)) {
                fprintf(stderr, "infer-generate: %s: 'prompt' must be a string\n", where);
                goto out;
            }
            p->text = xstrdup(v->valuestring);
        } else if (strcmp(k, "max_tokens") == 0) {
            if (json_int(v, where, k, -1, INT_MAX, &p->max_tokens)) goto out;
        } else if (strcmp(k, "min_tokens") == 0) {
            if (json_int(v, where, k, 0, INT_MAX, &p->min_tokens)) goto out;
        } else if (strcmp(k, "top_k") == 0) {
            if (json_int(v, where, k, 0, INT_MAX, &p->sp.top_k)) goto out;
        } else if (strcmp(k, "repeat_last_n") == 0) {
            if (json_int(v, where, k, -1, INT_MAX, &p->sp.repeat_last_n)) goto out;
        } else if (strcmp(k, "temperature") == 0) {
            if (json_float(v, where, k, &p->sp.temperature)) goto out;
        } else if (strcmp(k, "top_p") == 0) {
            if (json_float(v, where, k, &p->sp.top_p)) goto out;
        } else if (strcmp(k, "min_p") == 0) {
            if (json_float(v, where, k, &p->sp.min_p)) goto out;
        } else if (strcmp(k, "repetition_penalty") == 0) {
            if (json_float(v, where, k, &p->sp.repetition_penalty)) goto out;
        } else if (strcmp(k, "seed") == 0) {
            double d = cJSON_GetNumberValue(v);
            if (!cJSON_IsNumber(v) || d != floor(d) || d < 0 || d > 9007199254740992.0) {
                fprintf(stderr, "infer-generate: %s: 'seed' must be a non-negative integer\n",
                        where);
                goto out;
            }
            p->sp.seed = (uint64_t)d;
            p->seed_set = 1;
        } else if (strcmp(k, "response_format") == 0) {
            if (json_response_format(v, where, p)) goto out;
        } else if (strcmp(k, "ignore_eos") == 0) {
            if (!cJSON_IsBool(v)) {
                fprintf(stderr, "infer-generate: %s: 'ignore_eos' must be true or false\n", where);
                goto out;
            }
            p->ignore_eos = cJSON_IsTrue(v);
        } else if (strcmp(k, "stop") == 0) {
            int n = cJSON_IsString(v) ? 1 : cJSON_IsArray(v) ? cJSON_GetArraySize(v) : -1;
            if (n < 0) {
                fprintf(stderr,
                        "infer-generate: %s: 'stop' must be a string or an array of "
                        "strings\n",
                        where);
                goto out;
            }
            char **st = calloc((size_t)n + 1, sizeof *st);
            if (!st) goto out;
            p->stop = st;
            p->n_stop = 0;
            if (cJSON_IsString(v)) {
                st[p->n_stop++] = xstrdup(v->valuestring);
            } else {
                const cJSON *e;
                cJSON_ArrayForEach(e, v) {
                    if (!cJSON_IsString(e)) {
                        fprintf(stderr, "infer-generate: %s: 'stop' entries must be strings\n",
                                where);
                        goto out;
                    }
                    st[p->n_stop++] = xstrdup(e->valuestring);
                }
            }
        } else {
            fprintf(stderr,
                    "infer-generate: %s: unknown key '%s' (known: prompt, max_tokens, "
                    "min_tokens, temperature, top_k, top_p, min_p, repetition_penalty, "
                    "repeat_last_n, seed, ignore_eos, stop, response_format)\n",
                    where, k);
            goto out;
        }
    }
    if (!p->text) {
        fprintf(stderr, "infer-generate: %s: missing \"prompt\"\n", where);
        goto out;
    }
    rc = 0;
out:
    cJSON_Delete(j);
    return rc;
}

static int read_prompts_file(cli_args *a) {
    FILE *f = strcmp(a->prompts_file, "-") == 0 ? stdin : fopen(a->prompts_file, "r");
    if (!f) {
        fprintf(stderr, "infer-generate: cannot open prompts file '%s': %s\n", a->prompts_file,
                strerror(errno));
        return -1;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    long lineno = 0;
    int jsonl = -1, rc = 0;
    while ((len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
        const char *s = line;
        while (*s == ' ' || *s == '\t') s++;
        if (!*s) continue;
        if (jsonl < 0) jsonl = *s == '{';
        char where[512];
        snprintf(where, sizeof where, "%s:%ld", a->prompts_file, lineno);
        if (jsonl) {
            if (parse_json_prompt(a, s, where) != 0) {
                rc = -1;
                break;
            }
        } else {
            prompt_spec *p = add_prompt(a);
            spec_defaults(a, p);
            p->text = xstrdup(line);
            p->origin = xstrdup(where);
        }
    }
    if (rc == 0 && ferror(f)) {
        fprintf(stderr, "infer-generate: error reading '%s': %s\n", a->prompts_file,
                strerror(errno));
        rc = -1;
    }
    free(line);
    if (f != stdin) fclose(f);
    return rc;
}

/* ---- argument parsing ---- */

enum {
    OPT_PROMPTS_FILE = 256,
    OPT_MIN_TOKENS,
    OPT_TEMPERATURE,
    OPT_TOP_K,
    OPT_TOP_P,
    OPT_MIN_P,
    OPT_REPEAT_PENALTY,
    OPT_REPEAT_LAST_N,
    OPT_SEED,
    OPT_GREEDY,
    OPT_IGNORE_EOS,
    OPT_CHAT,
    OPT_VERSION,
    OPT_STOP,
    OPT_CONFIG,
    OPT_SET,
    OPT_BATCHING,
    OPT_BATCH_MAX_TOKENS,
    OPT_NUM_BLOCKS,
    OPT_NUM_BLOCKS_CPU,
    OPT_BLOCK_SIZE,
    OPT_WATERMARK,
    OPT_SWAP_PATH,
    OPT_PREEMPTION,
    OPT_KV,
    OPT_NUMERICS,
    OPT_PRINT_CONFIG
};

/* Shortcut flags that set one engine_config key each. */
static const struct {
    int opt;
    const char *flag, *key;
} config_flags[] = {
    {'m', "--model", "model_loading_config.model_path"},
    {'t', "--threads", "model_loading_config.n_threads"},
    {OPT_KV, "--kv", "model_loading_config.dtype"},
    {OPT_NUMERICS, "--numerics", "model_loading_config.numerics"},
    {'b', "--batch-size", "batcher_config.batch_max_seqs"},
    {OPT_BATCH_MAX_TOKENS, "--batch-max-tokens", "batcher_config.batch_max_tokens"},
    {OPT_BATCHING, "--batching", "batcher_config.policy"},
    {OPT_NUM_BLOCKS, "--num-blocks", "cache_config.num_blocks"},
    {OPT_NUM_BLOCKS_CPU, "--num-blocks-cpu", "cache_config.num_blocks_cpu"},
    {OPT_BLOCK_SIZE, "--block-size", "cache_config.block_size"},
    {OPT_WATERMARK, "--watermark", "cache_config.watermark"},
    {OPT_SWAP_PATH, "--swap-path", "cache_config.swap_path"},
    {OPT_PREEMPTION, "--preemption", "cache_config.preemption_mode"},
};

/* A sampling or output option (the config shortcuts are handled by the
 * caller). -1 to go on, or an exit code. */
static int parse_option(cli_args *a, int c, const char *v, char **argv) {
    switch (c) {
    case OPT_CONFIG: a->ca.config_file = v; break;
    case OPT_SET: return app_config_set_arg(&a->ca, v);
    case OPT_PRINT_CONFIG: a->ca.print_config = 1; break;
    case 'p': a->cli_prompts[a->n_cli_prompts++] = v; break;
    case OPT_PROMPTS_FILE: a->prompts_file = v; break;
    case 'n':
    case 'l':
        if (cli_parse_int(v, -1, INT_MAX, &a->max_tokens))
            return cli_bad_arg(PROG, "%s: expected an integer >= -1, got '%s'",
                               c == 'n' ? "--max-tokens" : "--generation-length", v);
        break;
    case OPT_MIN_TOKENS:
        if (cli_parse_int(v, 0, INT_MAX, &a->min_tokens))
            return cli_bad_arg(PROG, "--min-tokens: expected an integer >= 0, got '%s'", v);
        break;
    case OPT_TEMPERATURE:
        if (cli_parse_float(v, &a->sp.temperature))
            return cli_bad_arg(PROG, "--temperature: expected a number, got '%s'", v);
        break;
    case OPT_TOP_K:
        if (cli_parse_int(v, INT_MIN, INT_MAX, &a->sp.top_k))
            return cli_bad_arg(PROG, "--top-k: expected an integer, got '%s'", v);
        break;
    case OPT_TOP_P:
        if (cli_parse_float(v, &a->sp.top_p))
            return cli_bad_arg(PROG, "--top-p: expected a number, got '%s'", v);
        break;
    case OPT_MIN_P:
        if (cli_parse_float(v, &a->sp.min_p))
            return cli_bad_arg(PROG, "--min-p: expected a number, got '%s'", v);
        break;
    case OPT_REPEAT_PENALTY:
        if (cli_parse_float(v, &a->sp.repetition_penalty))
            return cli_bad_arg(PROG, "--repeat-penalty: expected a number, got '%s'", v);
        break;
    case OPT_REPEAT_LAST_N:
        if (cli_parse_int(v, INT_MIN, INT_MAX, &a->sp.repeat_last_n))
            return cli_bad_arg(PROG, "--repeat-last-n: expected an integer, got '%s'", v);
        break;
    case OPT_SEED:
        if (cli_parse_u64(v, &a->sp.seed))
            return cli_bad_arg(PROG, "--seed: expected a non-negative integer, got '%s'", v);
        a->seed_given = 1;
        break;
    case OPT_GREEDY: a->sp.temperature = 0.0f; break;
    case OPT_IGNORE_EOS: a->ignore_eos = 1; break;
    case OPT_STOP:
        if (!*v) return cli_bad_arg(PROG, "--stop: the text must not be empty");
        a->stop[a->n_stop++] = (char *)v;
        break;
    case 'o': a->output_file = v; break;
    case OPT_CHAT: a->chat = 1; break;
    case 's': a->stream = 1; break;
    case 'q': a->quiet = 1; break;
    case 'h': usage(stdout); return 0;
    case OPT_VERSION: printf("infer-generate %s\n", ENGINE_VERSION); return 0;
    default: return app_bad_option(PROG, c, argv);
    }
    return -1;
}

/* After the options: the config, then the prompts from -p and the file,
 * each checked. -1 to go on, or an exit code. */
static int finish_args(cli_args *a) {
    int rc = app_resolve_config(&a->ca, &a->cfg, NULL);
    if (rc >= 0) return rc;
    if (a->ca.print_config) return app_print_config(&a->ca, &a->cfg, NULL);
    char perr[256];
    if (sampler_params_validate(&a->sp, perr, sizeof perr) != 0)
        return cli_bad_arg(PROG, "%s", perr);
    for (int i = 0; i < a->n_cli_prompts; i++) {
        prompt_spec *p = add_prompt(a);
        spec_defaults(a, p);
        p->text = xstrdup(a->cli_prompts[i]);
        char where[32];
        snprintf(where, sizeof where, "prompt %d", i + 1);
        p->origin = xstrdup(where);
    }
    if (a->prompts_file && read_prompts_file(a) != 0) return 2;
    if (a->n_prompts == 0) {
        if (a->prompts_file) return cli_bad_arg(PROG, "no prompts in '%s'", a->prompts_file);
        return cli_bad_arg(PROG,
                           "no prompts given: pass -p TEXT (repeatable), or --prompts-file FILE "
                           "with one prompt per line or JSON Lines such as "
                           "examples/prompts.jsonl ('-' reads stdin)");
    }
    if (a->stream && a->n_prompts != 1)
        return cli_bad_arg(PROG, "--stream works with exactly one prompt (got %d)", a->n_prompts);
    for (int i = 0; i < a->n_prompts; i++) {
        prompt_spec *p = &a->prompts[i];
        if (sampler_params_validate(&p->sp, perr, sizeof perr) != 0)
            return cli_bad_arg(PROG, "%s: %s", p->origin, perr);
    }
    return -1;
}

/* Returns -1 to go on, or an exit code. */
static int parse_args(int argc, char **argv, cli_args *a) {
    static const struct option longopts[] = {
        {"model", required_argument, 0, 'm'},
        {"prompt", required_argument, 0, 'p'},
        {"prompts-file", required_argument, 0, OPT_PROMPTS_FILE},
        {"max-tokens", required_argument, 0, 'n'},
        {"generation-length", required_argument, 0, 'l'},
        {"min-tokens", required_argument, 0, OPT_MIN_TOKENS},
        {"temperature", required_argument, 0, OPT_TEMPERATURE},
        {"temp", required_argument, 0, OPT_TEMPERATURE},
        {"top-k", required_argument, 0, OPT_TOP_K},
        {"top-p", required_argument, 0, OPT_TOP_P},
        {"min-p", required_argument, 0, OPT_MIN_P},
        {"repeat-penalty", required_argument, 0, OPT_REPEAT_PENALTY},
        {"repeat-last-n", required_argument, 0, OPT_REPEAT_LAST_N},
        {"seed", required_argument, 0, OPT_SEED},
        {"greedy", no_argument, 0, OPT_GREEDY},
        {"ignore-eos", no_argument, 0, OPT_IGNORE_EOS},
        {"stop", required_argument, 0, OPT_STOP},
        {"batch-size", required_argument, 0, 'b'},
        {"output-file", required_argument, 0, 'o'},
        {"chat", no_argument, 0, OPT_CHAT},
        {"threads", required_argument, 0, 't'},
        {"stream", no_argument, 0, 's'},
        {"quiet", no_argument, 0, 'q'},
        {"help", no_argument, 0, 'h'},
        {"version", no_argument, 0, OPT_VERSION},
        {"config", required_argument, 0, OPT_CONFIG},
        {"set", required_argument, 0, OPT_SET},
        {"batching", required_argument, 0, OPT_BATCHING},
        {"batch-max-tokens", required_argument, 0, OPT_BATCH_MAX_TOKENS},
        {"num-blocks", required_argument, 0, OPT_NUM_BLOCKS},
        {"num-blocks-cpu", required_argument, 0, OPT_NUM_BLOCKS_CPU},
        {"block-size", required_argument, 0, OPT_BLOCK_SIZE},
        {"watermark", required_argument, 0, OPT_WATERMARK},
        {"swap-path", required_argument, 0, OPT_SWAP_PATH},
        {"preemption", required_argument, 0, OPT_PREEMPTION},
        {"kv", required_argument, 0, OPT_KV},
        {"numerics", required_argument, 0, OPT_NUMERICS},
        {"print-config", no_argument, 0, OPT_PRINT_CONFIG},
        {0, 0, 0, 0},
    };
    int rc = app_config_args_init(&a->ca, PROG, argc);
    if (rc >= 0) return rc;
    a->cli_prompts = calloc((size_t)argc + 1, sizeof *a->cli_prompts);
    a->stop = calloc((size_t)argc + 1, sizeof *a->stop);
    if (!a->cli_prompts || !a->stop) {
        fprintf(stderr, "infer-generate: out of memory\n");
        return 1;
    }
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":m:p:n:l:b:o:t:sqh", longopts, NULL)) != -1) {
        int is_config_flag = 0;
        for (size_t k = 0; k < sizeof config_flags / sizeof config_flags[0]; k++) {
            if (config_flags[k].opt != c) continue;
            app_config_flag(&a->ca, config_flags[k].flag, config_flags[k].key, optarg);
            is_config_flag = 1;
        }
        if (!is_config_flag && (rc = parse_option(a, c, optarg, argv)) >= 0) return rc;
    }
    if (optind < argc)
        return cli_bad_arg(PROG, "unexpected argument '%s' (prompts go after -p)", argv[optind]);
    return finish_args(a);
}

/* ---- progress and output ---- */

typedef struct {
    int tty;
    int last_pct;
} progress_state;

static void on_load_progress(float fraction, void *user) {
    progress_state *ps = user;
    int pct = (int)(fraction * 100.0f + 0.5f);
    if (pct < 0) pct = 0;
    if (pct > 100) pct = 100;
    if (pct == ps->last_pct) return;
    ps->last_pct = pct;
    if (ps->tty) {
        char bar[31];
        int fill = pct * 30 / 100;
        for (int i = 0; i < 30; i++) bar[i] = i < fill ? '#' : '.';
        bar[30] = 0;
        fprintf(stderr, "\rloading model [%s] %3d%%", bar, pct);
        if (pct == 100) fputc('\n', stderr);
    } else if (pct % 25 == 0) {
        fprintf(stderr, "loading model: %d%%\n", pct);
    }
}

/* Progress of the run on stderr: prompts done of the total, generated
 * tokens and their rate, elapsed time and an ETA from the rate prompts
 * finish at; redrawn in place on a terminal, a line every 10 s otherwise.
 * Counted as gen_run hands the tokens over (request by request, in
 * order), so it may trail the engine a little. */
typedef struct {
    int show;   /* progress wanted (not -q, not --stream) */
    int stream; /* --stream: tokens go to stdout as they come */
    int tty, drawn;
    int total, done;
    long tokens;
    double t0, next_ms;
} run_progress;

static void progress_draw(run_progress *p, int final) {
    double now = clock_now_ms();
    if (!final && now < p->next_ms) return;
    p->next_ms = now + (p->tty ? 250.0 : 10000.0);
    if (final) {
        if (p->drawn) fputs("\r\033[K", stderr); /* the report replaces it */
        return;
    }
    double el = (now - p->t0) / 1e3;
    char eta[32] = "?";
    if (p->done > 0) snprintf(eta, sizeof eta, "%.0f s", el * (p->total - p->done) / p->done);
    fprintf(stderr,
            "%sgenerating: %d/%d prompts, %ld tokens, %.1f tokens/s, elapsed %.0f s, eta %s%s",
            p->tty ? "\r" : "", p->done, p->total, p->tokens, el > 0 ? p->tokens / el : 0.0, el,
            eta, p->tty ? "\033[K" : "\n");
    fflush(stderr);
    p->drawn = p->tty;
}

static int on_run_token(void *user, int request, int32_t token, const char *text, size_t len) {
    (void)request;
    run_progress *p = user;
    if (p->stream && len) {
        fwrite(text, 1, len, stdout);
        fflush(stdout);
    }
    if (token >= 0) p->tokens++;
    else p->done++; /* the request's final call */
    if (p->show) progress_draw(p, 0);
    return 0;
}

static double rate(double tokens, double ms) { return ms > 0 ? tokens * 1e3 / ms : 0.0; }
static double round3(double x) { return round(x * 1e3) / 1e3; }

static int write_jsonl(FILE *f, const prompt_spec *p, const gen_result *r) {
    cJSON *o = cJSON_CreateObject(), *t = cJSON_CreateObject();
    if (!o || !t) {
        cJSON_Delete(o);
        cJSON_Delete(t);
        return -1;
    }
    cJSON_AddStringToObject(o, "prompt", p->text);
    cJSON_AddStringToObject(o, "completion", r->text ? r->text : "");
    cJSON_AddNumberToObject(o, "prompt_tokens", r->n_prompt);
    cJSON_AddNumberToObject(o, "completion_tokens", r->n_tokens);
    cJSON_AddStringToObject(o, "finish_reason", gen_finish_name(r->finish));
    /* gen_result: prompt_ms is submit -> first token, gen_ms the rest */
    cJSON_AddNumberToObject(t, "ttft_ms", round3(r->prompt_ms));
    cJSON_AddNumberToObject(t, "latency_ms", round3(r->prompt_ms + r->gen_ms));
    cJSON_AddNumberToObject(t, "prompt_ms", round3(r->prompt_ms));
    cJSON_AddNumberToObject(t, "generation_ms", round3(r->gen_ms));
    cJSON_AddNumberToObject(t, "prompt_tokens_per_s", round3(rate(r->n_prompt, r->prompt_ms)));
    cJSON_AddNumberToObject(t, "generation_tokens_per_s", round3(rate(r->n_tokens, r->gen_ms)));
    cJSON_AddItemToObject(o, "timings", t);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!s) return -1;
    int rc = fprintf(f, "%s\n", s) < 0 ? -1 : 0;
    cJSON_free(s);
    return rc;
}

/* ---- engine setup and report ---- */

static int cmp_double(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

/* Nearest-rank percentile of sorted v[0..n). */
static double percentile(const double *v, int n, double p) {
    if (n <= 0) return 0.0;
    int k = (int)ceil(p / 100.0 * n) - 1;
    if (k < 0) k = 0;
    if (k >= n) k = n - 1;
    return v[k];
}

static void print_report(const cli_args *a, const gen_result *res, const gen_stats *st, double t0,
                         double t_loaded) {
    int n = a->n_prompts, by_reason[5] = {0};
    for (int i = 0; i < n; i++) by_reason[res[i].finish]++;
    fprintf(stderr, "prompt tokens:    %ld (prompt eval %.1f tokens/s, %.1f ms)\n",
            st->prompt_tokens, rate((double)st->prompt_tokens, st->prompt_ms), st->prompt_ms);
    fprintf(stderr, "generated tokens: %ld (generation %.1f tokens/s, %.1f ms)\n", st->gen_tokens,
            rate((double)st->gen_tokens, st->gen_ms), st->gen_ms);
    fprintf(stderr, "throughput:       %.1f output tokens/s, %.1f tokens/s with prompts\n",
            rate((double)st->gen_tokens, st->total_ms),
            rate((double)(st->gen_tokens + st->prompt_tokens), st->total_ms));
    double *lat = malloc((size_t)n * sizeof *lat), *ttft = malloc((size_t)n * sizeof *ttft);
    if (lat && ttft) {
        for (int i = 0; i < n; i++) {
            ttft[i] = res[i].prompt_ms;
            lat[i] = res[i].prompt_ms + res[i].gen_ms;
        }
        qsort(lat, (size_t)n, sizeof *lat, cmp_double);
        qsort(ttft, (size_t)n, sizeof *ttft, cmp_double);
        fprintf(stderr,
                "latency ms:       p50 %.0f, p90 %.0f, p99 %.0f (first token p50 %.0f, "
                "p90 %.0f, p99 %.0f)\n",
                percentile(lat, n, 50), percentile(lat, n, 90), percentile(lat, n, 99),
                percentile(ttft, n, 50), percentile(ttft, n, 90), percentile(ttft, n, 99));
    }
    free(lat);
    free(ttft);
    fprintf(stderr,
            "engine:           %ld steps, %ld preemptions, KV peak %d blocks at %.1f%% slot "
            "efficiency\n",
            st->steps, st->preemptions, st->peak_blocks, 100.0 * st->kv_efficiency_peak);
    fprintf(stderr, "engine thread:    forward %.3f s, sampling %.3f s (%.1f%% of the two)\n",
            st->forward_ms / 1e3, st->sample_ms / 1e3,
            100.0 * st->sample_ms /
                (st->forward_ms + st->sample_ms > 0 ? st->forward_ms + st->sample_ms : 1));
    fprintf(stderr, "prefix cache:     %ld of %ld prompt tokens found cached\n",
            st->prefix_hit_tokens, st->prefix_queried_tokens);
    fprintf(stderr, "finished:         %d length, %d eos, %d stop\n", by_reason[GEN_FINISH_LENGTH],
            by_reason[GEN_FINISH_EOS], by_reason[GEN_FINISH_STOP]);
    fprintf(stderr, "total time:       %.3f s (model load %.3f s, generation %.3f s)\n",
            (clock_now_ms() - t0) / 1e3, (t_loaded - t0) / 1e3, st->total_ms / 1e3);
}

/* A seed from the clock for the prompts that did not set one. */
static void pick_seed(cli_args *a) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t seed =
        ((uint64_t)ts.tv_sec * 1000003u) ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32);
    seed &= 0xffffffffu; /* short enough to retype */
    for (int i = 0; i < a->n_prompts; i++)
        if (!a->prompts[i].seed_set) a->prompts[i].sp.seed = seed;
    a->sp.seed = seed;
}

/* The model's chat template for --chat, checked to be one we can apply.
 * -1 to go on (*tmpl set), or an exit code. */
static int load_chat_template(const llm_model *m, char **tmpl) {
    char err[512];
    *tmpl = llm_model_chat_template(m);
    if (!*tmpl) {
        fprintf(stderr, "infer-generate: --chat: the model has no tokenizer.chat_template\n");
        return 2;
    }
    if (!chat_template_family(*tmpl)) {
        chat_msg probe = {"user", ""};
        char *tmp = NULL;
        chat_apply(*tmpl, &probe, 1, 1, &tmp, err, sizeof err);
        free(tmp);
        fprintf(stderr, "infer-generate: --chat: %s\n", err);
        return 2;
    }
    return -1;
}

/* Prompt p as a request: wrapped in the chat template (tmpl, may be NULL),
 * tokenized into *ids, max_tokens -1 resolved to what the limits leave.
 * -1 to go on, or an exit code. */
static int build_request(const prompt_spec *p, const llm_tokenizer *tok, const char *tmpl,
                         const engine_limits *lim, int32_t **ids, gen_request *req) {
    char err[512];
    const char *text = p->text;
    char *wrapped = NULL;
    if (tmpl) {
        chat_msg msg = {"user", p->text};
        if (chat_apply(tmpl, &msg, 1, 1, &wrapped, err, sizeof err) != 0) {
            fprintf(stderr, "infer-generate: %s: %s\n", p->origin, err);
            return 2;
        }
        text = wrapped;
    }
    int n = tok_encode(tok, text, strlen(text), 1, 1, ids);
    free(wrapped);
    if (n < 0) {
        fprintf(stderr, "infer-generate: %s: tokenization failed (code %d)\n", p->origin, n);
        return 1;
    }
    if (n == 0) {
        fprintf(stderr, "infer-generate: %s: the prompt is empty\n", p->origin);
        return 2;
    }
    long limit = lim->context_length < lim->kv_capacity ? lim->context_length : lim->kv_capacity;
    long max_tokens = p->max_tokens < 0 ? limit - n : p->max_tokens;
    if (max_tokens < 0) max_tokens = 0; /* -1 and the prompt alone is too long */
    engine_fit fit = engine_check_fit(lim, n, max_tokens, 1, err, sizeof err);
    if (fit != ENGINE_FITS) {
        fprintf(stderr, "infer-generate: %s: %s%s\n", p->origin, err,
                fit == ENGINE_OVER_KV_CAPACITY ? "; raise cache_config.num_blocks or kv_memory_mb"
                                               : "");
        return 2;
    }
    *req = (gen_request){
        .prompt = *ids,
        .n_prompt = n,
        .sampling = p->sp,
        .max_tokens = (int)max_tokens,
        .min_tokens = p->min_tokens,
        .ignore_eos = p->ignore_eos,
        .stop = (const char *const *)p->stop,
        .n_stop = p->n_stop,
        .format = p->format,
        .json_schema = p->json_schema,
    };
    return -1;
}

/* The completions: JSON Lines to out (--output-file, which this closes),
 * else plain text on stdout (with a '### [i] PROMPT' line each when there
 * are several; with --stream they were printed already). Returns 0 or 1. */
static int write_results(const cli_args *a, const gen_result *res, FILE *out) {
    for (int i = 0; i < a->n_prompts; i++) {
        if (out) {
            if (write_jsonl(out, &a->prompts[i], &res[i]) != 0) {
                fprintf(stderr, "infer-generate: cannot write '%s'\n", a->output_file);
                fclose(out);
                return 1;
            }
        } else if (!a->stream) {
            if (a->n_prompts > 1) {
                /* the prompt on one line: newlines shown as spaces */
                printf("### [%d] ", i + 1);
                for (const char *c = a->prompts[i].text; *c; c++)
                    putchar(*c == '\n' || *c == '\r' ? ' ' : *c);
                putchar('\n');
            }
            printf("%s\n", res[i].text ? res[i].text : "");
        }
    }
    if (out && fclose(out) != 0) {
        fprintf(stderr, "infer-generate: cannot write '%s': %s\n", a->output_file, strerror(errno));
        return 1;
    }
    return 0;
}

static void progress_abort(void *user) {
    progress_state *ps = user;
    if (ps->tty && ps->last_pct >= 0 && ps->last_pct < 100) fputc('\n', stderr);
}

/* The requests, the banner, the run and its output, on an open runtime.
 * Returns the exit code. */
static int run(const cli_args *a, const app_runtime *rt, const char *tmpl, double t0,
               double t_loaded) {
    const engine_config *cfg = &a->cfg;
    engine_options eo;
    engine_limits lim;
    int rc = app_engine_options(PROG, cfg, rt->model, &eo, &lim);
    if (rc >= 0) return rc;
    char err[512];
    gen_request *reqs = calloc((size_t)a->n_prompts, sizeof *reqs);
    gen_result *res = calloc((size_t)a->n_prompts, sizeof *res);
    int32_t **ids = calloc((size_t)a->n_prompts, sizeof *ids);
    if (!reqs || !res || !ids) {
        fprintf(stderr, "infer-generate: out of memory\n");
        rc = 1;
    }
    for (int i = 0; rc < 0 && i < a->n_prompts; i++)
        rc = build_request(&a->prompts[i], rt->tok, tmpl, &lim, &ids[i], &reqs[i]);
    FILE *out = NULL; /* opened before the run: a bad path fails at once */
    if (rc < 0 && a->output_file && !(out = fopen(a->output_file, "w"))) {
        fprintf(stderr, "infer-generate: cannot write '%s': %s\n", a->output_file, strerror(errno));
        rc = 2;
    }
    if (rc < 0 && !a->quiet) {
        const llm_hparams *hp = llm_model_hparams(rt->model);
        fprintf(stderr,
                "model:     %s (%s, %d layers, vocab %d, context %d), threads %d, "
                "%s numerics, seed %llu\n",
                hp->name[0] ? hp->name : cfg->model_path, hp->arch, hp->n_layer, hp->n_vocab,
                hp->n_ctx_train, rt->be->n_threads, be_numerics_name(cfg->numerics),
                (unsigned long long)a->sp.seed);
        app_print_engine_banner(&eo, &lim);
        fprintf(stderr, "running %d prompt%s\n", a->n_prompts, a->n_prompts == 1 ? "" : "s");
    }
    if (rc < 0) {
        gen_options opt;
        gen_options_default(&opt);
        opt.engine = &eo;
        double t_run = clock_now_ms();
        run_progress rp = {!a->quiet && !a->stream,
                           a->stream,
                           isatty(2),
                           0,
                           a->n_prompts,
                           0,
                           0,
                           t_run,
                           t_run + (isatty(2) ? 0.0 : 10000.0)};
        opt.on_token = on_run_token;
        opt.user = &rp;
        gen_stats st;
        int ok = gen_run(rt->model, rt->be, rt->tok, reqs, a->n_prompts, &opt, res, &st, err,
                         sizeof err) == 0;
        if (rp.show) progress_draw(&rp, 1);
        if (a->stream) {
            fputc('\n', stdout);
            fflush(stdout);
        }
        if (ok) {
            rc = write_results(a, res, out);
            out = NULL;
        } else {
            fprintf(stderr, "infer-generate: generation failed: %s\n", err);
            rc = 1;
        }
        if (rc == 0 && !a->quiet) print_report(a, res, &st, t0, t_loaded);
    }
    if (out) fclose(out);
    for (int i = 0; res && i < a->n_prompts; i++) gen_result_free(&res[i]);
    for (int i = 0; ids && i < a->n_prompts; i++) free(ids[i]);
    free(ids);
    free(res);
    free(reqs);
    return rc;
}

int main(int argc, char **argv) {
    cli_args a = {0};
    a.max_tokens = 128;
    sampler_params_default(&a.sp);
    int rc = parse_args(argc, argv, &a);
    if (rc >= 0) {
        free_args(&a);
        return rc;
    }
    if (!a.seed_given) pick_seed(&a);
    double t0 = clock_now_ms();
    progress_state ps = {isatty(2), -1};
    app_open_opts oo = {a.cfg.model_path,
                        a.cfg.n_threads,
                        a.cfg.numerics,
                        1,
                        a.quiet ? NULL : on_load_progress,
                        a.quiet ? NULL : progress_abort,
                        &ps};
    app_runtime rt;
    char *tmpl = NULL;
    rc = app_open(PROG, &oo, &rt);
    if (rc < 0) {
        double t_loaded = clock_now_ms();
        if (a.chat) rc = load_chat_template(rt.model, &tmpl);
        if (rc < 0) rc = run(&a, &rt, tmpl, t0, t_loaded);
    }
    free(tmpl);
    app_close(&rt);
    free_args(&a);
    return rc;
}
