/*
 * config.h - the engine's configuration: one JSON file (--config) with four
 * sections (model_loading_config, batcher_config, cache_config, server),
 * overridden key by key from the command line (--set section.key=value).
 * docs/config.md documents every key.
 *
 * Precedence: config_defaults < config_load_file / config_load_string <
 * config_apply_env (ENGINE_API_KEY) < config_set (command-line flags). Each
 * step merges over the current values: keys it does not mention keep theirs.
 * Loading and config_set check each value on its own (type, range, syntax);
 * config_validate checks the whole struct including cross-field rules and is
 * meant to run once, after the last override.
 *
 * Errors: every function returns 0 (config_resolve_num_blocks: the block
 * count) or -1 with a message in err that names the key's full path, e.g.
 * "cache_config.block_size: must be a power of two between 1 and 256, got 24".
 * A failed load or set leaves the config unchanged.
 * Thread-safety: none needed; the functions touch only their arguments (and
 * config_apply_env reads the environment).
 */
#ifndef ENGINE_CONFIG_H
#define ENGINE_CONFIG_H

#include <stddef.h>

#include "core/backend/backend.h"
#include "core/kv_cache.h"
#include "engine/engine.h"

#define CFG_MAX_LISTEN 8
#define CFG_NUM_BLOCKS_AUTO (-1)

typedef struct {
    /* model_loading_config */
    char model_path[1024];
    kv_dtype kv_dtype;    /* "dtype": "f16" | "f32", element type of the KV cache */
    int model_max_length; /* 0 = the model's context length */
    int n_threads;        /* 0 = all cores */
    be_numerics numerics; /* "numerics": "exact" | "fast", the CPU matmuls' arithmetic */

    /* batcher_config */
    int batch_max_tokens;     /* tokens per forward step, over all sequences */
    int batch_max_seqs;       /* sequences per forward step */
    engine_batching batching; /* "policy" */
    int max_waiting;          /* bound of the waiting queue; more requests are rejected */

    /* cache_config */
    int num_blocks;       /* device tier; CFG_NUM_BLOCKS_AUTO = from kv_memory_mb */
    double kv_memory_mb;  /* budget for num_blocks "auto", MiB */
    int num_blocks_cpu;   /* swap tier; 0 = no swapping */
    int block_size;       /* tokens per block, power of two */
    double watermark;     /* fraction of device blocks kept free at admission */
    char swap_path[1024]; /* "" = swap tier in RAM, else a file backs it */
    engine_preempt_mode preemption_mode;

    /* server (checked now, used by the RPC / HTTP servers) */
    char listen[CFG_MAX_LISTEN][256]; /* nng-style "tcp://host:port" or "ipc:///path" */
    int n_listen;                     /* 0 = no RPC listener */
    char http_listen[256];            /* "http://host:port"; "" = no HTTP listener */
    int max_message_bytes;            /* largest request / response message */
    char api_key[256];                /* "" = no authentication */
    int max_stop_strings;             /* stop strings per request */
    int request_timeout_ms;           /* 0 = no deadline */
    int drain_timeout_ms;             /* on shutdown, time to let running requests finish */
} engine_config;

/* The engine's keys take engine_options_default's values (one table of
 * defaults); the server's have their own. */
void config_defaults(engine_config *c);

/* Merge a JSON file / string over the current values. Messages from a file
 * start with its path; malformed JSON reports line and column. */
int config_load_file(engine_config *c, const char *path, char *err, size_t errlen);
int config_load_string(engine_config *c, const char *json, char *err, size_t errlen);

/* ENGINE_API_KEY, when set and non-empty, replaces server.api_key (so the
 * key can stay out of config files). */
int config_apply_env(engine_config *c, char *err, size_t errlen);

/* One override: dotted_key is "section.key", value is the text given on the
 * command line: numbers as written, strings bare ("/models/x.gguf"),
 * cache_config.num_blocks an integer or "auto", server.listen a
 * comma-separated list or a JSON array. */
int config_set(engine_config *c, const char *dotted_key, const char *value, char *err,
               size_t errlen);

/* Every per-key rule again plus the cross-field ones (batch_max_seqs <=
 * batch_max_tokens, swap needs a CPU tier, ...). */
int config_validate(const engine_config *c, char *err, size_t errlen);

/* Device blocks to create: num_blocks when set, else
 * floor(kv_memory_mb MiB / block bytes), at least 1, where a block holds
 * K and V of block_size tokens for n_layer layers of kv_dim elements of
 * kv_dtype. Returns the count or -1 (bad model shape, count beyond int). */
int config_resolve_num_blocks(const engine_config *c, int n_layer, int kv_dim, char *err,
                              size_t errlen);

/* The effective config as pretty-printed JSON in the file format (for
 * logging; api_key is shown as "<redacted>" when set). *out is malloc'd, the
 * caller frees it. */
int config_to_json(const engine_config *c, char **out);

/* The batching and cache settings of c as engine options (the rest keep
 * engine_options_default's values). num_blocks is the device block count
 * already resolved against the model (config_resolve_num_blocks);
 * o->swap_path points into c, which must outlive o. */
void config_engine_options(const engine_config *c, int num_blocks, engine_options *o);

#endif
