/*
 * config.h - the JSON configuration: one file (--config) of sections, each
 * owned by one layer, overridden key by key from the command line (--set
 * section.key=value). docs/config.md documents every key.
 *
 * The mechanism is generic: a layer describes its settings as a key table
 * (config_table: its sections, one row per key, its struct's defaults and
 * cross-field rules), and a program binds each table it runs to a struct of
 * its own (config_bindings). One file then fills every bound struct under
 * one set of rules. This file also owns the engine's table
 * (config_engine_table: model_loading_config, batcher_config, cache_config
 * into engine_config); the server's lives in server/server_config.h.
 *
 * Precedence: config_defaults < config_load_file / config_load_string <
 * config_apply_env < config_set (command-line flags). Each step merges over
 * the current values: keys it does not mention keep theirs. Loading and
 * config_set check each value on its own (type, range, syntax);
 * config_validate checks every struct including cross-field rules and is
 * meant to run once, after the last override.
 *
 * Errors: every function returns 0 (config_resolve_num_blocks: the block
 * count) or -1 with a message in err that names the key's full path, e.g.
 * "cache_config.block_size: must be a power of two between 1 and 256, got 24".
 * A section or key no bound table owns is an error (with a suggestion), except
 * the sections listed in config_bindings.skip. A failed load or set leaves
 * every bound struct unchanged.
 * Thread-safety: none needed; the functions touch only their arguments (and
 * config_apply_env reads the environment).
 */
#ifndef ENGINE_CONFIG_H
#define ENGINE_CONFIG_H

#include <stddef.h>

#include "core/backend/backend.h"
#include "core/kv_cache.h"
#include "engine/engine.h"

/* ---- the mechanism ---- */

typedef enum {
    CONFIG_INT,     /* JSON integer in [min, max] */
    CONFIG_DOUBLE,  /* JSON number in [min, max] (min exclusive when min_open) */
    CONFIG_STRING,  /* JSON string shorter than its field (char[cap]) */
    CONFIG_ENUM,    /* JSON string, one of names[]; stored through the table's enum hooks */
    CONFIG_BLOCKS,  /* integer in [min, max] or "auto" (stored as CFG_NUM_BLOCKS_AUTO) */
    CONFIG_STRLIST, /* JSON array of at most max strings: char[max][cap] and an int count */
    CONFIG_BOOL     /* JSON true / false, stored as an int 1 / 0 */
} config_kind;

typedef enum {
    CONFIG_PLAIN,
    CONFIG_POW2,  /* CONFIG_INT: a power of two as well */
    CONFIG_SECRET /* CONFIG_STRING: printed as "<redacted>" when set */
} config_extra;

typedef struct config_key config_key;

/* One key: where it lives in its table's struct and the rules for its value.
 * Rows are written with the CONFIG_*_KEY macros below. */
struct config_key {
    const char *section;
    const char *name;
    config_kind kind;
    size_t off; /* offset of the field in the table's struct */
    size_t cap; /* CONFIG_STRING, CONFIG_STRLIST: bytes of one string */
    double min, max;
    int min_open;
    config_extra extra;
    const char *const *names; /* CONFIG_ENUM: index = enum value */
    int n_names;
    size_t count_off;    /* CONFIG_STRLIST: offset of the int entry count */
    const char *entries; /* CONFIG_STRLIST: what an entry is, plural, for messages */
    /* The owner's rule beyond kind and range (address syntax, ...), run
     * after the generic checks wherever those run; NULL for none. Messages
     * start with "section.key". */
    int (*check)(const config_key *k, const void *st, char *err, size_t errlen);
};

#define CONFIG_BOOL_KEY(T, s, n, f)                                                                \
    { .section = s, .name = n, .kind = CONFIG_BOOL, .off = offsetof(T, f), .min = 0, .max = 1 }
#define CONFIG_INT_KEY(T, s, n, f, lo, hi)                                                         \
    { .section = s, .name = n, .kind = CONFIG_INT, .off = offsetof(T, f), .min = lo, .max = hi }
#define CONFIG_STR_KEY(T, s, n, f)                                                                 \
    {                                                                                              \
        .section = s, .name = n, .kind = CONFIG_STRING, .off = offsetof(T, f),                     \
        .cap = sizeof(((T *)0)->f)                                                                 \
    }
#define CONFIG_ENUM_KEY(T, s, n, f, tab)                                                           \
    {                                                                                              \
        .section = s, .name = n, .kind = CONFIG_ENUM, .off = offsetof(T, f), .names = tab,         \
        .n_names = (int)(sizeof tab / sizeof tab[0])                                               \
    }

/* A layer's settings: its sections (in print order), its keys, and the
 * functions of its struct. */
typedef struct {
    const char *const *sections;
    int n_sections;
    const config_key *keys;
    int n_keys;
    size_t size;                /* of the struct the table describes */
    void (*defaults)(void *st); /* every field, not only the keys' */
    /* Rules relating two keys, run by config_validate after every key's own
     * checks; NULL for none. */
    int (*validate)(const void *st, char *err, size_t errlen);
    /* Values the environment supplies, run by config_apply_env; on failure
     * st is unchanged. NULL for none. */
    int (*apply_env)(void *st, char *err, size_t errlen);
    /* CONFIG_ENUM fields have their own enum types, so the owner reads and
     * writes them; NULL when the table has no enum key. */
    int (*enum_get)(const void *st, const config_key *k);
    void (*enum_set)(void *st, const config_key *k, int v);
} config_table;

/* One table and the struct (of table->size bytes) it fills. */
typedef struct {
    const config_table *table;
    void *dst;
} config_binding;

/* What one program reads from a config: the bound tables, in print order,
 * and the sections of tables it does not run (NULL-terminated list, may be
 * NULL): those are accepted, must be objects, and are otherwise ignored, in
 * a file and by config_set alike, so one file can serve every program. */
typedef struct {
    const config_binding *bind;
    int n;
    const char *const *skip;
} config_bindings;

/* Every bound struct to its table's defaults. */
void config_defaults(const config_bindings *b);

/* Merge a JSON file / string over the current values. Messages from a file
 * start with its path; malformed JSON reports line and column. */
int config_load_file(const config_bindings *b, const char *path, char *err, size_t errlen);
int config_load_string(const config_bindings *b, const char *json, char *err, size_t errlen);

/* Each bound table's values from the environment (the server's:
 * ENGINE_API_KEY), so secrets can stay out of config files. */
int config_apply_env(const config_bindings *b, char *err, size_t errlen);

/* One override: dotted_key is "section.key", value is the text given on the
 * command line: numbers as written, strings bare ("/models/x.gguf"),
 * CONFIG_BLOCKS keys an integer or "auto", CONFIG_BOOL keys true or false,
 * CONFIG_STRLIST keys a comma-separated list or a JSON array. */
int config_set(const config_bindings *b, const char *dotted_key, const char *value, char *err,
               size_t errlen);

/* Every per-key rule again (so values put into a struct directly are
 * checked too), then each table's cross-field rules. */
int config_validate(const config_bindings *b, char *err, size_t errlen);

/* The bound structs as pretty-printed JSON in the file format, one section
 * after another in binding order (for logging; CONFIG_SECRET keys are shown
 * as "<redacted>" when set). *out is malloc'd, the caller frees it. */
int config_to_json(const config_bindings *b, char **out);

/* ---- the engine's settings ---- */

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
    int enable_prefix_caching; /* share computed prompt blocks between requests */
} engine_config;

/* The engine's table: model_loading_config, batcher_config and
 * cache_config into an engine_config. */
extern const config_table config_engine_table;

/* engine_options_default's values (one table of defaults). */
void config_engine_defaults(engine_config *c);

/* Device blocks to create: num_blocks when set, else
 * floor(kv_memory_mb MiB / block bytes), at least 1, where a block holds
 * K and V of block_size tokens for n_layer layers of kv_dim elements of
 * kv_dtype. Returns the count or -1 (bad model shape, count beyond int). */
int config_resolve_num_blocks(const engine_config *c, int n_layer, int kv_dim, char *err,
                              size_t errlen);

/* The batching and cache settings of c as engine options (the rest keep
 * engine_options_default's values). num_blocks is the device block count
 * already resolved against the model (config_resolve_num_blocks);
 * o->swap_path points into c, which must outlive o. */
void config_engine_options(const engine_config *c, int num_blocks, engine_options *o);

#endif
