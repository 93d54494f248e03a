/*
 * tokenizer.h - the tokenizers of GGUF vocabularies, built from their
 * metadata and matching llama.cpp's tokenization token for token:
 *   "gpt2"  byte-level BPE (SmolLM2, Qwen2, Llama 3, GPT-2, Pythia, ...);
 *   "llama" SentencePiece (Llama 2, TinyLlama, Mistral, Phi-3, Gemma 1-3).
 *
 * Encoding runs in stages, as llama.cpp does:
 *   1. special-token partition: control / user-defined tokens found in the
 *      text are cut out whole (longest first) and emitted as their ids;
 *   2. BPE: the regex list named by `tokenizer.ggml.pre` (gpt2, smollm,
 *      llama3, qwen2, ...) splits the remaining text into words, each
 *      regex applied within the pieces of the previous one; each word's
 *      bytes are mapped to GPT-2's printable byte alphabet and merged pair
 *      by pair in merge-rank order;
 *   2'. SentencePiece: spaces become U+2581 (one is prefixed to a fragment
 *      at the start or after a special token when add_space_prefix), the
 *      characters are merged into tokens highest score first, and leftover
 *      bytes become <0xNN> byte-fallback tokens.
 * Decoding maps token text back to bytes; tok_stream holds back a partial
 * UTF-8 character until the token that completes it arrives.
 *
 * Ownership: tok_load copies everything it needs, so the gguf_file may be
 * closed afterwards. tok_encode's *out is malloc'd and owned by the caller.
 * Thread-safety: a loaded tokenizer is immutable; any number of threads may
 * encode/decode with it concurrently. A tok_stream belongs to one thread.
 * Errors: tok_load returns a negative TOK_E* code and a message; tok_encode
 * returns a negative code; nothing aborts on bad input.
 */
#ifndef ENGINE_TOKENIZER_H
#define ENGINE_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "core/gguf.h"

enum {
    TOK_OK = 0,
    TOK_EFORMAT = -1, /* metadata missing, of the wrong type, or unsupported */
    TOK_ENOMEM = -2,
    TOK_EINVAL = -3, /* bad argument (e.g. token id out of range) */
    TOK_EREGEX = -4, /* pre-tokenizer regex failed to compile or match */
    TOK_ENOSPC = -5, /* output buffer too small (nothing consumed) */
};

/* Token types as stored in tokenizer.ggml.token_type. */
enum {
    TOK_TYPE_UNDEFINED = 0,
    TOK_TYPE_NORMAL = 1,
    TOK_TYPE_UNKNOWN = 2,
    TOK_TYPE_CONTROL = 3,
    TOK_TYPE_USER_DEFINED = 4,
    TOK_TYPE_UNUSED = 5,
    TOK_TYPE_BYTE = 6,
};

typedef struct llm_tokenizer llm_tokenizer;

/* Build a tokenizer from tokenizer.ggml.* metadata. Models "gpt2" and
 * "llama" are supported (others: TOK_EFORMAT naming them). For "gpt2" an
 * unknown pre-tokenizer name is an error, as in llama.cpp (an absent one
 * means llama.cpp's "default"); "llama" ignores tokenizer.ggml.pre. */
int tok_load(const gguf_file *f, llm_tokenizer **out, char *err, size_t errlen);
void tok_free(llm_tokenizer *t);

int tok_n_vocab(const llm_tokenizer *t);
int32_t tok_bos(const llm_tokenizer *t); /* -1 when the model has none */
int32_t tok_eos(const llm_tokenizer *t);
int tok_add_bos(
    const llm_tokenizer *t); /* metadata add_bos_token (or the pre-tokenizer's default) */
int tok_add_eos(const llm_tokenizer *t);
/* Canonical pre-tokenizer name, e.g. "smollm"; "spm" for SentencePiece. */
const char *tok_pre_name(const llm_tokenizer *t);
int tok_is_spm(const llm_tokenizer *t); /* tokenizer.ggml.model "llama" */
/* SentencePiece's space prefix (tokenizer.ggml.add_space_prefix, default on
 * for "llama"): encoding adds it, decoding a whole sequence strips it. */
int tok_add_space_prefix(const llm_tokenizer *t);
/* Whether tok_decode applies llama.cpp's clean-up of spaces before
 * punctuation and contractions (most byte-level BPE vocabularies; not
 * SmolLM2's or Qwen2's, nor SentencePiece). */
int tok_clean_spaces(const llm_tokenizer *t);

/* End of generation: eos, eot, eom, and tokens such as <|im_end|>,
 * <|endoftext|>, <|eot_id|> (llama.cpp's list, including its FIM tokens). */
int tok_is_eog(const llm_tokenizer *t, int32_t id);
int tok_is_control(const llm_tokenizer *t, int32_t id);
int tok_type(const llm_tokenizer *t,
             int32_t id); /* TOK_TYPE_*, after llama.cpp's fix-ups; -1 bad id */

/* Exact vocabulary text -> id, -1 when absent. The text is the stored form
 * (byte-level alphabet: " hello" is stored as "\xc4\xa0hello"; SentencePiece
 * as "\xe2\x96\x81hello"); special
 * tokens such as "<|im_start|>" look the same either way. */
int32_t tok_find(const llm_tokenizer *t, const char *text, size_t len);
/* Stored vocabulary text of a token (not NUL-terminated); NULL for a bad id. */
const char *tok_text(const llm_tokenizer *t, int32_t id, size_t *len);

/* Encode text. add_special: prepend BOS (append EOS) when the model says
 * so; parse_special: match control tokens whole. User-defined tokens are
 * matched whole in both cases, as llama.cpp does. Returns the number of ids
 * (>= 0) in a malloc'd *out (caller frees, also when 0 ids), or a negative
 * TOK_E* code with *out = NULL. Invalid UTF-8 bytes are encoded as U+FFFD. */
int tok_encode(const llm_tokenizer *t, const char *text, size_t len, int add_special,
               int parse_special, int32_t **out);

/* Bytes of one token (byte-level decoded). Control tokens give their text
 * when render_special, else nothing; user-defined tokens always give their
 * text. Returns the piece's full length (which may exceed cap: then only cap
 * bytes are written), or TOK_EINVAL for a bad id. buf may be NULL if cap 0. */
int tok_piece(const llm_tokenizer *t, int32_t id, int render_special, char *buf, size_t cap);

/* Longest piece of any token (render_special on), in bytes. */
int tok_max_piece_len(const llm_tokenizer *t);

/* Decode a whole sequence into buf (same truncation rule as tok_piece);
 * returns the total length. Bytes are concatenated as is (no UTF-8 repair).
 * With a space prefix, the first piece loses one leading space (llama.cpp's
 * detokenize; a sequence that starts with BOS keeps its text's space); with
 * tok_clean_spaces, " ?", " !", " .", " ,", " ' ", " 's", " 'm", " 're" and
 * " 've" lose their space as in llama.cpp's detokenize. */
int tok_decode(const llm_tokenizer *t, const int32_t *ids, size_t n, int render_special, char *buf,
               size_t cap);

/* Incremental detokenizer: push tokens, get only complete, valid UTF-8.
 * Trailing bytes that may still become a valid character are held back;
 * bytes that cannot are replaced by U+FFFD at once. flush emits what is held
 * (an incomplete character becomes one U+FFFD) and resets the stream.
 * push returns the bytes written, TOK_EINVAL for a bad id, or TOK_ENOSPC
 * when cap is too small (the stream is then unchanged); a cap of
 * TOK_STREAM_CAP(tok_max_piece_len(t)) always suffices. */
#define TOK_STREAM_CAP(max_piece) (3 * ((size_t)(max_piece) + 4))
typedef struct {
    char pending[8];
    int n_pending;
    int render_special;
    int strip_space; /* drop one leading space of the next piece */
} tok_stream;

/* A stream of generated tokens: pieces as they are (what llama.cpp's server
 * streams; the first one continues the prompt, so its space is kept). */
void tok_stream_init(tok_stream *s, int render_special);
/* A stream of a whole sequence from its start: like tok_decode, the first
 * token loses one leading space when the vocabulary has a space prefix. */
void tok_stream_init_sequence(tok_stream *s, const llm_tokenizer *t, int render_special);
int tok_stream_push(tok_stream *s, const llm_tokenizer *t, int32_t id, char *out, size_t cap);
int tok_stream_flush(tok_stream *s, char *out, size_t cap);

#endif
