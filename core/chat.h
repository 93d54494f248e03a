/*
 * chat.h - render a conversation with a model's chat template.
 *
 * GGUF files carry the template as Jinja source (tokenizer.chat_template).
 * We do not interpret Jinja; as llama.cpp does, we recognize the template
 * family by its markers, in llama.cpp's order, and format the messages in C:
 *   chatml   "<|im_start|>"           (SmolLM2, Qwen2, ...; phi4 with "<|im_sep|>")
 *   llama2   "[INST]"                 (system in <<SYS>> when the template has it;
 *                                      Mistral's v1/v3/v3-tekken/v7 by their markers)
 *   phi3     "<|assistant|>" and "<|end|>"
 *   zephyr   "<|user|>"               (TinyLlama, zephyr: turns end with </s>, or
 *                                      <|endoftext|> when the template names it)
 *   gemma    "<start_of_turn>"        (no system turn: it opens the first user turn)
 *   llama3   "<|start_header_id|>"
 * A family name ("chatml", "gemma", "phi3", ...) is accepted as the template. A
 * template of no known family is an error (the caller decides what to do).
 * A ChatML template that writes a literal default system turn (SmolLM2:
 * "You are a helpful AI assistant named SmolLM, ...") gets that turn inserted
 * when the conversation does not start with a system message; the text is
 * taken from the template itself.
 *
 * Ownership: *out is malloc'd for the caller to free(). Thread-safe (no state).
 */
#ifndef ENGINE_CHAT_H
#define ENGINE_CHAT_H

#include <stddef.h>

typedef struct {
    const char *role; /* "system", "user", "assistant" (ChatML accepts any) */
    const char *content;
} chat_msg;

/* Name of the recognized family ("chatml", "llama3", ...) or NULL. */
const char *chat_template_family(const char *tmpl);

/* Render msgs[0..n) and, when add_generation_prompt, the opening of the
 * assistant's turn. Returns 0 with *out set, or -1 with a message (template
 * NULL or of an unknown family, a message without role/content, a role the
 * family cannot express). */
int chat_apply(const char *tmpl, const chat_msg *msgs, size_t n, int add_generation_prompt,
               char **out, char *err, size_t errlen);

#endif
