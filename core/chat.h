/*
 * chat.h - render a conversation with a model's chat template.
 *
 * GGUF files carry the template as Jinja source (tokenizer.chat_template).
 * We do not interpret Jinja; as llama.cpp does, we recognize the template
 * family by its markers and format the messages in C:
 *   chatml   "<|im_start|>"           (SmolLM2, Qwen, ...)
 *   llama3   "<|start_header_id|>"
 *   llama2   "[INST]"                 (system in <<SYS>> when the template has it)
 *   zephyr   "<|user|>"
 *   gemma    "<start_of_turn>"
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
