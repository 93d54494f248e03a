/*
 * test_chat.c - conversations render exactly as the model's Jinja template
 * would render them (expected strings produced with Python's jinja2 from the
 * templates below), and unknown templates fail with a clear message.
 */
#include <stdlib.h>
#include <string.h>

#include "core/chat.h"
#include "tests/common/test_util.h"

/* tokenizer.chat_template of SmolLM2-135M-Instruct, byte for byte. */
static const char SMOLLM2[] =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ "
    "'<|im_start|>assistant\n' }}{% endif %}";

/* Plain ChatML without a default system turn. */
static const char CHATML[] =
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}";

/* Qwen2.5-like: a system-turn opener built by concatenation, then a literal
 * default with escaped newlines. */
static const char QWENISH[] =
    "{%- if tools %}{{- '<|im_start|>system\\n' }}{%- if messages[0]['role'] == 'system' %}"
    "{{- messages[0]['content'] }}{%- endif %}{%- else %}{%- if messages[0]['role'] == 'system' "
    "%}{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}{%- else %}"
    "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
    "assistant.<|im_end|>\\n' }}{%- endif %}{%- endif %}";

static const char LLAMA3[] =
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ "
    "message['content'] | trim + '<|eot_id|>' %}{{ content }}{% endfor %}";

static const char LLAMA2[] =
    "{% if messages[0]['role'] == 'system' %}{% set system_message = '<<SYS>>\\n' + "
    "messages[0]['content'] | trim + '\\n<</SYS>>\\n\\n' %}{% endif %}{% for message in "
    "messages %}{{ '[INST] ' + content | trim + ' [/INST]' }}{% endfor %}";

static const char GEMMA[] =
    "{{ bos_token }}{% for message in messages %}{{'<start_of_turn>' + role + '\n' + "
    "message['content'] | trim + '<end_of_turn>\n'}}{% endfor %}";

static const char ZEPHYR[] =
    "{% for message in messages %}{% if message['role'] == 'user' %}{{ '<|user|>\n' + "
    "message['content'] + eos_token }}{% endif %}{% endfor %}";

static int render_is(const char *tmpl, const chat_msg *m, size_t n, int gen, const char *want) {
    char err[256] = "", *out = NULL;
    int rc = chat_apply(tmpl, m, n, gen, &out, err, sizeof err);
    int ok = rc == 0 && out && strcmp(out, want) == 0;
    if (!ok)
        fprintf(stderr, "rc=%d err='%s'\n got: [%s]\nwant: [%s]\n", rc, err, out ? out : "", want);
    free(out);
    return ok;
}

static void test_smollm2_inserts_default_system(void) {
    chat_msg one[] = {{"user", "Hi"}};
    CHECK(render_is(SMOLLM2, one, 1, 1,
                    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "
                    "Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                    "<|im_start|>assistant\n"));
    CHECK(render_is(SMOLLM2, one, 1, 0,
                    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "
                    "Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"));
    CHECK(strcmp(chat_template_family(SMOLLM2), "chatml") == 0);
}

static void test_smollm2_keeps_given_system(void) {
    chat_msg conv[] = {
        {"system", "Be terse."}, {"user", "Hi"}, {"assistant", "Hello!"}, {"user", "Bye"}};
    CHECK(render_is(SMOLLM2, conv, 4, 1,
                    "<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                    "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n"
                    "<|im_start|>assistant\n"));
    /* No messages: the Jinja loop never runs, so no default system either. */
    CHECK(render_is(SMOLLM2, NULL, 0, 1, "<|im_start|>assistant\n"));
    CHECK(render_is(SMOLLM2, NULL, 0, 0, ""));
}

static void test_chatml_without_default(void) {
    chat_msg one[] = {{"user", "2+2?"}};
    CHECK(
        render_is(CHATML, one, 1, 1, "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n"));
    CHECK(render_is(QWENISH, one, 1, 0,
                    "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
                    "assistant.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n"));
}

static void test_other_families(void) {
    chat_msg conv[] = {{"system", " Sys "}, {"user", "Hi "}, {"assistant", "Yo"}, {"user", "Q"}};
    CHECK(render_is(LLAMA3, conv, 4, 1,
                    "<|start_header_id|>system<|end_header_id|>\n\nSys<|eot_id|>"
                    "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
                    "<|start_header_id|>assistant<|end_header_id|>\n\nYo<|eot_id|>"
                    "<|start_header_id|>user<|end_header_id|>\n\nQ<|eot_id|>"
                    "<|start_header_id|>assistant<|end_header_id|>\n\n"));
    CHECK(render_is(LLAMA2, conv, 4, 1,
                    "[INST] <<SYS>>\n Sys \n<</SYS>>\n\nHi  [/INST]Yo</s>[INST] Q [/INST]"));
    CHECK(render_is(GEMMA, conv, 4, 1,
                    "<start_of_turn>user\nSys\n\nHi<end_of_turn>\n<start_of_turn>model\nYo"
                    "<end_of_turn>\n<start_of_turn>user\nQ<end_of_turn>\n<start_of_turn>model\n"));
    CHECK(render_is(ZEPHYR, conv + 1, 3, 1,
                    "<|user|>\nHi </s>\n<|assistant|>\nYo</s>\n<|user|>\nQ</s>\n<|assistant|>\n"));
    CHECK(strcmp(chat_template_family(LLAMA3), "llama3") == 0);
    CHECK(strcmp(chat_template_family(LLAMA2), "llama2") == 0);
    CHECK(strcmp(chat_template_family(GEMMA), "gemma") == 0);
    CHECK(strcmp(chat_template_family(ZEPHYR), "zephyr") == 0);
}

static void test_errors_are_clear(void) {
    chat_msg one[] = {{"user", "Hi"}};
    char err[256] = "", *out = (char *)1;
    CHECK(chat_apply("{{ messages }}", one, 1, 1, &out, err, sizeof err) == -1);
    CHECK(out == NULL);
    CHECKF(strstr(err, "unsupported chat template") != NULL, "got '%s'", err);
    CHECK(chat_template_family("{{ messages }}") == NULL);
    CHECK(chat_apply(NULL, one, 1, 1, &out, err, sizeof err) == -1);
    CHECKF(strstr(err, "no chat template") != NULL, "got '%s'", err);
    chat_msg bad[] = {{"user", NULL}};
    CHECK(chat_apply(SMOLLM2, bad, 1, 1, &out, err, sizeof err) == -1);
    CHECKF(strstr(err, "message 0 has no content") != NULL, "got '%s'", err);
    chat_msg tool[] = {{"tool", "x"}};
    CHECK(chat_apply(LLAMA2, tool, 1, 1, &out, err, sizeof err) == -1);
    CHECKF(strstr(err, "role 'tool'") != NULL, "got '%s'", err);
}

int main(void) {
    test_smollm2_inserts_default_system();
    test_smollm2_keeps_given_system();
    test_chatml_without_default();
    test_other_families();
    test_errors_are_clear();
    return tu_finish("test_chat");
}
