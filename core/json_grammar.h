/*
 * json_grammar.h - constrained decoding for JSON output: a JSON schema
 * compiled into a byte-level pushdown automaton, a matcher that walks it
 * byte by byte, and the per-vocabulary table that turns a matcher state into
 * a token mask for the sampler.
 *
 * Three objects:
 *   jg_schema  - compiled once from the schema text (jg_compile) or for "any
 *                JSON object" (jg_compile_any_object). Immutable: any number
 *                of matchers on any threads may share it.
 *   jg_matcher - one sequence's position in the grammar: a small set of
 *                parse stacks (several while an anyOf / oneOf / type union is
 *                undecided). Advanced with the bytes of each sampled token.
 *   jg_vocab   - every token's bytes (tok_piece, specials not rendered), the
 *                tokens grouped by first byte, and the end-of-generation ids.
 *                Built once per tokenizer; immutable afterwards.
 *
 * Supported schema subset (anything else is refused by jg_compile with a
 * message naming the keyword and where it is, e.g. "unsupported keyword
 * 'pattern' at /properties/name"):
 *   type (a name or a list of them): object, array, string, number,
 *   integer, boolean, null; minimum, maximum, exclusiveMinimum,
 *   exclusiveMaximum on integers (bounds below 1e15); properties, required,
 *   additionalProperties
 *   (false, true or a schema; absent = true); items (a schema or true),
 *   minItems, maxItems; minLength, maxLength (code points); enum, const (any
 *   JSON values, matched in their compact form); anyOf; oneOf when no two
 *   branches can start with the same byte (so an output matches only one);
 *   allOf with one member; $ref to "#", "#/$defs/<name>" or
 *   "#/definitions/<name>" (recursion allowed); the boolean schema true;
 *   annotations (title, description, default, examples, $schema, $id,
 *   $comment, deprecated, readOnly, writeOnly) and uniqueItems: false.
 *   Limits: nesting 24 schema levels, 64 properties per object, 64 enum
 *   values, 4096 nodes, 64 KiB of schema text.
 *
 * What the matcher produces (a subset of valid JSON, so every output that
 * reaches an accepting state parses and validates): no whitespace outside
 * structure and at most JG_MAX_WS bytes of it in a row; strings without
 * \u escapes (the other escapes are allowed) and valid UTF-8; object keys
 * written literally (no escapes), additional keys printable ASCII only and
 * at most 64 bytes; numbers of at most 24 bytes (integers 15 digits); JSON
 * nesting at most JG_MAX_DEPTH (values under "any" close earlier).
 *
 * Errors: functions that can fail return NULL or -1 and fill err.
 * Thread-safety: schema and vocab are read-only after creation; a matcher
 * belongs to one thread at a time.
 */
#ifndef ENGINE_JSON_GRAMMAR_H
#define ENGINE_JSON_GRAMMAR_H

#include <stddef.h>
#include <stdint.h>

struct llm_tokenizer;

enum {
    JG_MAX_DEPTH = 40,   /* JSON nesting the matcher follows */
    JG_MAX_STACKS = 32,  /* undecided alternatives at once (more are dropped) */
    JG_MAX_WS = 20,      /* whitespace bytes in a row */
    JG_MAX_NESTING = 24, /* schema nesting jg_compile accepts */
    JG_MAX_SCHEMA_BYTES = 65536,
};

typedef struct jg_schema jg_schema;
typedef struct jg_matcher jg_matcher;
typedef struct jg_vocab jg_vocab;

/* Compile a JSON schema (text[0..len), UTF-8 JSON). NULL + message when it
 * is not JSON, not a schema, or uses what the subset above lacks. */
jg_schema *jg_compile(const char *text, size_t len, char *err, size_t errlen);
/* Any JSON object (OpenAI's response_format {"type": "json_object"}). */
jg_schema *jg_compile_any_object(char *err, size_t errlen);
void jg_schema_free(jg_schema *g);

/* A matcher at the start of g (which must outlive it). NULL when out of
 * memory. */
jg_matcher *jg_matcher_new(const jg_schema *g);
void jg_matcher_free(jg_matcher *m);
void jg_matcher_reset(jg_matcher *m);
/* Feed bytes: 0 and the state advanced when every byte is allowed, -1 and
 * the state unchanged otherwise. */
int jg_matcher_feed(jg_matcher *m, const void *bytes, size_t n);
/* Whether bytes[0..n) could be fed. The state is not changed (m's scratch
 * space is used, hence not const). */
int jg_matcher_can_feed(jg_matcher *m, const void *bytes, size_t n);
/* The bytes so far form a complete value (end of output allowed here). */
int jg_matcher_accepting(const jg_matcher *m);
/* Complete and no byte may follow (the closing brace of the root, or a
 * number at its length limit): only the end of output is left. */
int jg_matcher_done(jg_matcher *m);

/* The token table of a tokenizer. NULL + message when out of memory. */
jg_vocab *jg_vocab_new(const struct llm_tokenizer *tok, char *err, size_t errlen);
void jg_vocab_free(jg_vocab *v);
/* Token id's bytes (NULL/0 for tokens that never match: controls, empty). */
const uint8_t *jg_vocab_bytes(const jg_vocab *v, int32_t id, size_t *n);
/* Whether token id may come next in matcher m: an end-of-generation token
 * when m is accepting, another token when its bytes can be fed. */
int jg_token_allowed(const jg_vocab *v, jg_matcher *m, int32_t id);
/* Set logits[id] = -INFINITY for every token jg_token_allowed refuses
 * (logits already -inf are skipped). Tokens are grouped by first byte, so
 * a state that allows few first bytes costs little. */
void jg_mask_logits(const jg_vocab *v, jg_matcher *m, float *logits);
/* Advance m by token id (an allowed, non-end token). 0, or -1 if not
 * allowed (m unchanged). */
int jg_matcher_feed_token(const jg_vocab *v, jg_matcher *m, int32_t id);

#endif
