/*
 * tiny_vocab.h - a small byte-level BPE vocabulary written as GGUF tokenizer
 * metadata, shared by the tokenizer harness (which loads it once) and the
 * seed generator (which writes it as a GGUF seed for the reader harness).
 *
 * It has the 256 byte tokens of GPT-2's alphabet, so every input encodes; a
 * few dozen merges, so BPE has work to do (one of them names a token that is
 * not in the vocabulary, a case tok_load must tolerate); control tokens
 * (<|im_start|> as BOS, <|im_end|>, <|endoftext|> as EOS) and one
 * user-defined token (<tool>). The pre-tokenizer is "smollm".
 * tiny_vocab_write_spm writes a SentencePiece one (tokenizer.ggml.model
 * "llama"): <unk>, <s>, </s>, the 256 <0xNN> byte-fallback tokens, a few
 * dozen scored pieces with U+2581 for spaces and <tool>; llama.cpp's
 * defaults (BOS <s>, space prefix) apply.
 */
#ifndef TESTS_FUZZ_TINY_VOCAB_H
#define TESTS_FUZZ_TINY_VOCAB_H

#include "tests/common/gguf_writer.h"

/* Add the tokenizer.ggml.* keys to gw. */
void tiny_vocab_write(gguf_writer *gw);
void tiny_vocab_write_spm(gguf_writer *gw);

#endif
