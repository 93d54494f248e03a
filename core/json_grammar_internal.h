/*
 * json_grammar_internal.h - the compiled schema's node graph, shared by
 * json_schema.c (builds it) and json_match.c (walks it); for those files
 * only (json_grammar.h is the contract).
 *
 * A schema is an array of nodes addressed by index; node 0 is the root.
 * Nodes may form cycles (recursive $ref, "any" values), so the matcher,
 * not the graph, bounds the depth.
 */
#ifndef ENGINE_JSON_GRAMMAR_INTERNAL_H
#define ENGINE_JSON_GRAMMAR_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "core/json_grammar.h"

typedef enum {
    JG_N_ALIAS = 0, /* extra ($ref; resolved away after compiling) */
    JG_N_ANYOF,     /* kids[0..n_kids): one of them */
    JG_N_OBJECT,    /* kids[i] is the schema of property strs[i]; extra: additional */
    JG_N_ARRAY,     /* extra: the items' node; lo/hi: minItems/maxItems */
    JG_N_STRING,    /* lo/hi: minLength/maxLength in code points */
    JG_N_NUMBER,
    JG_N_INTEGER,
    JG_N_LITERALS, /* strs[0..n_strs): compact JSON texts, one of them */
} jg_node_kind;

enum { JG_NONE = -1, JG_MAX_PROPS = 64, JG_MAX_LITERALS = 64, JG_MAX_NODES = 4096 };

typedef struct {
    jg_node_kind kind;
    int *kids;
    int n_kids;
    char **strs; /* property names (raw bytes) or literal texts */
    size_t *lens;
    int n_strs;
    uint64_t required; /* OBJECT: bit i = property i is required */
    int extra;   /* OBJECT: additionalProperties node or JG_NONE; ARRAY: items; ALIAS: target */
    long lo, hi; /* ARRAY, STRING: bounds; hi < 0 = none */
    int has_min, has_max; /* INTEGER: inclusive bounds (|bound| < 1e15) */
    int64_t min, max;
} jg_node;

struct jg_schema {
    jg_node *nodes;
    int n_nodes, cap_nodes;
    int root; /* the node a document starts with */
};

#endif
