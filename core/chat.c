/*
 * chat.c - chat template families formatted in C (see chat.h).
 *
 * The layouts follow llama.cpp's llm_chat_apply_template for the same
 * families, so prompts match what users get from llama.cpp, with one
 * addition: ChatML templates that spell out a default system turn get it.
 */
#include "core/chat.h"
#include "base/strbuf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum {
    FAM_NONE,
    FAM_CHATML,
    FAM_PHI4,
    FAM_MISTRAL_V1,
    FAM_MISTRAL_V3,
    FAM_MISTRAL_V3_TEKKEN,
    FAM_MISTRAL_V7,
    FAM_LLAMA2,
    FAM_PHI3,
    FAM_ZEPHYR,
    FAM_GEMMA,
    FAM_LLAMA3,
    FAM_COUNT
} chat_family;

/* Family names, which are also accepted as the template itself (as
 * llama.cpp accepts "chatml", "gemma", ... in place of Jinja source). */
static const char *const k_family_names[FAM_COUNT] = {
    [FAM_CHATML] = "chatml",
    [FAM_PHI4] = "phi4",
    [FAM_MISTRAL_V1] = "mistral-v1",
    [FAM_MISTRAL_V3] = "mistral-v3",
    [FAM_MISTRAL_V3_TEKKEN] = "mistral-v3-tekken",
    [FAM_MISTRAL_V7] = "mistral-v7",
    [FAM_LLAMA2] = "llama2",
    [FAM_PHI3] = "phi3",
    [FAM_ZEPHYR] = "zephyr",
    [FAM_GEMMA] = "gemma",
    [FAM_LLAMA3] = "llama3",
};

/* The [INST] families, told apart as llama.cpp does: Mistral's official
 * v1/v3/v3-tekken/v7 templates by their markers, the rest as Llama 2. */
static chat_family detect_inst(const char *t) {
    if (strstr(t, "[SYSTEM_PROMPT]")) return FAM_MISTRAL_V7;
    if (strstr(t, "' [INST] ' + system_message") || strstr(t, "[AVAILABLE_TOOLS]")) {
        if (strstr(t, " [INST]")) return FAM_MISTRAL_V1;
        if (strstr(t, "\"[INST]\"")) return FAM_MISTRAL_V3_TEKKEN;
        return FAM_MISTRAL_V3;
    }
    return FAM_LLAMA2;
}

/* Markers checked in llama.cpp's order (llm_chat_detect_template), so a
 * template that has several gets the same family. One deliberate
 * difference: any "<|user|>" template without Phi-3's "<|end|>" is Zephyr
 * (TinyLlama, zephyr-7b-beta), where llama.cpp requires a literal
 * "<|endoftext|>" and renders the others without an end-of-turn token. */
static chat_family detect(const char *t) {
    if (!t) return FAM_NONE;
    for (int f = FAM_NONE + 1; f < FAM_COUNT; f++)
        if (strcmp(t, k_family_names[f]) == 0) return (chat_family)f;
    if (strstr(t, "<|im_start|>")) return strstr(t, "<|im_sep|>") ? FAM_PHI4 : FAM_CHATML;
    if (strncmp(t, "mistral", 7) == 0 || strstr(t, "[INST]")) return detect_inst(t);
    if (strstr(t, "<|assistant|>") && strstr(t, "<|end|>")) return FAM_PHI3;
    if (strstr(t, "<|user|>") && !strstr(t, "[gMASK]")) return FAM_ZEPHYR;
    if (strstr(t, "<start_of_turn>")) return FAM_GEMMA;
    if (strstr(t, "<|start_header_id|>") && strstr(t, "<|end_header_id|>")) return FAM_LLAMA3;
    return FAM_NONE;
}

const char *chat_template_family(const char *tmpl) {
    chat_family f = detect(tmpl);
    return f == FAM_NONE ? NULL : k_family_names[f];
}

/* Append s without leading/trailing whitespace (llama.cpp's trim()). */
static void sb_put_trimmed(strbuf *b, const char *s) {
    size_t n = strlen(s), i = 0;
    while (i < n && strchr(" \t\n\r\f\v", s[i])) i++;
    while (n > i && strchr(" \t\n\r\f\v", s[n - 1])) n--;
    strbuf_putn(b, s + i, n - i);
}

/* ---- ChatML's default system turn, read from the template ---- */

/* Find a Jinja string literal '<|im_start|>system\n TEXT <|im_end|>' and copy
 * TEXT (escapes resolved) into *out. Returns 1 when found, 0 when the
 * template has none (e.g. the system turn is built from message fields). */
static int chatml_default_system(const char *tmpl, strbuf *out) {
    static const char head[] = "<|im_start|>system";
    for (const char *p = strstr(tmpl, head); p; p = strstr(p + 1, head)) {
        const char *q = p + sizeof head - 1;
        if (*q == '\n') {
            q++;
        } else if (q[0] == '\\' && q[1] == 'n') {
            q += 2;
        } else {
            continue;
        }
        strbuf text = {0};
        int ok = 0;
        while (*q) {
            if (strncmp(q, "<|im_end|>", 10) == 0) {
                ok = 1;
                break;
            }
            if (*q == '\'' || *q == '"' || *q == '{' || *q == '}') break; /* not a literal */
            if (*q == '\\' && q[1]) {
                char c = q[1];
                char e = c == 'n' ? '\n' : c == 't' ? '\t' : c == 'r' ? '\r' : c;
                strbuf_putn(&text, &e, 1);
                q += 2;
                continue;
            }
            strbuf_putn(&text, q, 1);
            q++;
        }
        if (ok && !text.oom) {
            strbuf_putn(out, text.p ? text.p : "", text.len);
            free(text.p);
            return 1;
        }
        free(text.p);
    }
    return 0;
}

/* ---- the families ---- */

static void fmt_chatml(const char *tmpl, const chat_msg *m, size_t n, int gen, strbuf *b) {
    if (n > 0 && strcmp(m[0].role, "system") != 0) { /* inside the loop, as in Jinja */
        strbuf sys = {0};
        if (chatml_default_system(tmpl, &sys)) {
            strbuf_puts(b, "<|im_start|>system\n");
            strbuf_putn(b, sys.p ? sys.p : "", sys.len);
            strbuf_puts(b, "<|im_end|>\n");
        }
        if (sys.oom) b->oom = 1;
        free(sys.p);
    }
    for (size_t i = 0; i < n; i++) {
        strbuf_puts(b, "<|im_start|>");
        strbuf_puts(b, m[i].role);
        strbuf_puts(b, "\n");
        strbuf_puts(b, m[i].content);
        strbuf_puts(b, "<|im_end|>\n");
    }
    if (gen) strbuf_puts(b, "<|im_start|>assistant\n");
}

static void fmt_phi4(const chat_msg *m, size_t n, int gen, strbuf *b) {
    for (size_t i = 0; i < n; i++) {
        strbuf_puts(b, "<|im_start|>");
        strbuf_puts(b, m[i].role);
        strbuf_puts(b, "<|im_sep|>");
        strbuf_puts(b, m[i].content);
        strbuf_puts(b, "<|im_end|>");
    }
    if (gen) strbuf_puts(b, "<|im_start|>assistant<|im_sep|>");
}

/* Phi-3 and Zephyr: "<|role|>\n" content end-marker "\n". */
static void fmt_role_tags(const char *end, const chat_msg *m, size_t n, int gen, strbuf *b) {
    for (size_t i = 0; i < n; i++) {
        strbuf_puts(b, "<|");
        strbuf_puts(b, m[i].role);
        strbuf_puts(b, "|>\n");
        strbuf_puts(b, m[i].content);
        strbuf_puts(b, end);
        strbuf_puts(b, "\n");
    }
    if (gen) strbuf_puts(b, "<|assistant|>\n");
}

/* Mistral v7: system in [SYSTEM_PROMPT], each user turn in [INST]. */
static void fmt_mistral_v7(const chat_msg *m, size_t n, strbuf *b) {
    for (size_t i = 0; i < n; i++) {
        const char *role = m[i].role;
        if (strcmp(role, "system") == 0) {
            strbuf_puts(b, "[SYSTEM_PROMPT] ");
            strbuf_puts(b, m[i].content);
            strbuf_puts(b, "[/SYSTEM_PROMPT]");
        } else if (strcmp(role, "user") == 0) {
            strbuf_puts(b, "[INST] ");
            strbuf_puts(b, m[i].content);
            strbuf_puts(b, "[/INST]");
        } else {
            strbuf_puts(b, " ");
            strbuf_puts(b, m[i].content);
            strbuf_puts(b, "</s>");
        }
    }
}

/* Mistral v1 / v3 / v3-tekken: spaces around [INST] differ; v3 trims the
 * assistant's text. The system text opens the first turn. */
static void fmt_mistral(chat_family fam, const chat_msg *m, size_t n, strbuf *b) {
    const char *lead = fam == FAM_MISTRAL_V1 ? " " : "";
    const char *trail = fam == FAM_MISTRAL_V3_TEKKEN ? "" : " ";
    int inside_turn = 0;
    for (size_t i = 0; i < n; i++) {
        if (!inside_turn) {
            strbuf_puts(b, lead);
            strbuf_puts(b, "[INST]");
            strbuf_puts(b, trail);
            inside_turn = 1;
        }
        const char *role = m[i].role;
        if (strcmp(role, "system") == 0) {
            strbuf_puts(b, m[i].content);
            strbuf_puts(b, "\n\n");
        } else if (strcmp(role, "user") == 0) {
            strbuf_puts(b, m[i].content);
            strbuf_puts(b, lead);
            strbuf_puts(b, "[/INST]");
        } else {
            strbuf_puts(b, trail);
            if (fam == FAM_MISTRAL_V3) sb_put_trimmed(b, m[i].content);
            else strbuf_puts(b, m[i].content);
            strbuf_puts(b, "</s>");
            inside_turn = 0;
        }
    }
}

static void fmt_llama3(const chat_msg *m, size_t n, int gen, strbuf *b) {
    for (size_t i = 0; i < n; i++) {
        strbuf_puts(b, "<|start_header_id|>");
        strbuf_puts(b, m[i].role);
        strbuf_puts(b, "<|end_header_id|>\n\n");
        sb_put_trimmed(b, m[i].content);
        strbuf_puts(b, "<|eot_id|>");
    }
    if (gen) strbuf_puts(b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

static void fmt_llama2(const char *tmpl, const chat_msg *m, size_t n, strbuf *b) {
    int sys_tags = strstr(tmpl, "<<SYS>>") != NULL;
    int bos_inside = strstr(tmpl, "bos_token + '[INST]") != NULL;
    int strip = strstr(tmpl, "content.strip()") != NULL;
    int inside_turn = 1; /* the tokenizer adds the first BOS */
    strbuf_puts(b, "[INST] ");
    for (size_t i = 0; i < n; i++) {
        if (!inside_turn) {
            inside_turn = 1;
            strbuf_puts(b, bos_inside ? "<s>[INST] " : "[INST] ");
        }
        const char *role = m[i].role;
        if (strcmp(role, "system") == 0) {
            if (sys_tags) strbuf_puts(b, "<<SYS>>\n");
            if (strip) sb_put_trimmed(b, m[i].content);
            else strbuf_puts(b, m[i].content);
            strbuf_puts(b, sys_tags ? "\n<</SYS>>\n\n" : "\n");
        } else if (strcmp(role, "user") == 0) {
            if (strip) sb_put_trimmed(b, m[i].content);
            else strbuf_puts(b, m[i].content);
            strbuf_puts(b, " [/INST]");
        } else {
            if (strip) sb_put_trimmed(b, m[i].content);
            else strbuf_puts(b, m[i].content);
            strbuf_puts(b, "</s>");
            inside_turn = 0;
        }
    }
}

static void fmt_gemma(const chat_msg *m, size_t n, int gen, strbuf *b) {
    strbuf sys = {0}; /* Gemma has no system turn: merge it into the next user turn */
    for (size_t i = 0; i < n; i++) {
        if (strcmp(m[i].role, "system") == 0) {
            sb_put_trimmed(&sys, m[i].content);
            continue;
        }
        int model = strcmp(m[i].role, "assistant") == 0;
        strbuf_puts(b, "<start_of_turn>");
        strbuf_puts(b, model ? "model" : m[i].role);
        strbuf_puts(b, "\n");
        if (sys.len && !model) {
            strbuf_putn(b, sys.p, sys.len);
            strbuf_puts(b, "\n\n");
            sys.len = 0;
        }
        sb_put_trimmed(b, m[i].content);
        strbuf_puts(b, "<end_of_turn>\n");
    }
    if (sys.oom) b->oom = 1;
    free(sys.p);
    if (gen) strbuf_puts(b, "<start_of_turn>model\n");
}

int chat_apply(const char *tmpl, const chat_msg *msgs, size_t n, int add_generation_prompt,
               char **out, char *err, size_t errlen) {
    *out = NULL;
    if (!tmpl || !*tmpl) {
        snprintf(err, errlen, "no chat template (the model has no tokenizer.chat_template)");
        return -1;
    }
    chat_family fam = detect(tmpl);
    if (fam == FAM_NONE) {
        snprintf(err, errlen,
                 "unsupported chat template: none of the known markers found (ChatML "
                 "<|im_start|>, Llama-3 <|start_header_id|>, Llama-2/Mistral [INST], Phi-3 "
                 "<|assistant|> with <|end|>, Zephyr <|user|>, Gemma <start_of_turn>)");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        if (!msgs[i].role || !msgs[i].content || !*msgs[i].role) {
            snprintf(err, errlen, "chat message %zu has no %s", i,
                     !msgs[i].role || !*msgs[i].role ? "role" : "content");
            return -1;
        }
        if (fam >= FAM_MISTRAL_V1 && fam <= FAM_LLAMA2 && strcmp(msgs[i].role, "system") != 0 &&
            strcmp(msgs[i].role, "user") != 0 && strcmp(msgs[i].role, "assistant") != 0) {
            snprintf(err, errlen,
                     "chat message %zu: role '%s' not supported by the %s "
                     "template (system, user, assistant)",
                     i, msgs[i].role, k_family_names[fam]);
            return -1;
        }
    }
    strbuf b = {0};
    switch (fam) {
    case FAM_CHATML: fmt_chatml(tmpl, msgs, n, add_generation_prompt, &b); break;
    case FAM_LLAMA3: fmt_llama3(msgs, n, add_generation_prompt, &b); break;
    case FAM_LLAMA2: fmt_llama2(tmpl, msgs, n, &b); break;
    case FAM_ZEPHYR:
        fmt_role_tags(strstr(tmpl, "<|endoftext|>") ? "<|endoftext|>" : "</s>", msgs, n,
                      add_generation_prompt, &b);
        break;
    case FAM_PHI3: fmt_role_tags("<|end|>", msgs, n, add_generation_prompt, &b); break;
    case FAM_PHI4: fmt_phi4(msgs, n, add_generation_prompt, &b); break;
    case FAM_MISTRAL_V7: fmt_mistral_v7(msgs, n, &b); break;
    case FAM_MISTRAL_V1:
    case FAM_MISTRAL_V3:
    case FAM_MISTRAL_V3_TEKKEN: fmt_mistral(fam, msgs, n, &b); break;
    case FAM_GEMMA: fmt_gemma(msgs, n, add_generation_prompt, &b); break;
    case FAM_NONE:
    case FAM_COUNT: break;
    }
    if (!b.oom && !b.p) strbuf_puts(&b, ""); /* empty conversation: still a string */
    if (b.oom) {
        free(b.p);
        snprintf(err, errlen, "chat template: out of memory");
        return -1;
    }
    *out = b.p;
    return 0;
}
