/*
 * test_chat.c - conversations render exactly as the model's Jinja template
 * would render them (expected strings produced with Python's jinja2 from the
 * templates below), llama.cpp's own chat-template test cases (templates and
 * renderings copied from its tests/test-chat-template.cpp) give the same
 * family and the same text, and unknown templates fail with a clear message.
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

/* Templates and renderings from llama.cpp's tests/test-chat-template.cpp
 * (expected_output: what llama_chat_apply_template gives for the
 * conversation in llama_cpp_conv, with add_generation_prompt). */
typedef struct {
    const char *name, *family, *tmpl, *want;
} llama_cpp_case;

static const llama_cpp_case k_llama_cpp_cases[] = {
    {"mistralai/Mistral-7B-Instruct-v0.2 (NOTE: Old pre-v1 without a system prompt)", "llama2",
     "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != "
     "(loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
     "user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ "
     "'[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ "
     "message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles "
     "are supported!') }}{% endif %}{% endfor %}",
     "[INST] You are a helpful assistant\nHello [/INST]Hi there</s>[INST] Who are you [/INST]   I "
     "am an assistant   </s>[INST] Another question [/INST]"},
    {"TheBloke/FusionNet_34Bx2_MoE-AWQ", "llama2",
     "{%- for idx in range(0, messages|length) -%}\n{%- if messages[idx]['role'] == 'user' "
     "-%}\n{%- if idx > 1 -%}\n{{- bos_token + '[INST] ' + messages[idx]['content'] + ' [/INST]' "
     "-}}\n{%- else -%}\n{{- messages[idx]['content'] + ' [/INST]' -}}\n{%- endif -%}\n{% elif "
     "messages[idx]['role'] == 'system' %}\n{{- '[INST] <<SYS>>\\n' + messages[idx]['content'] + "
     "'\\n<</SYS>>\\n\\n' -}}\n{%- elif messages[idx]['role'] == 'assistant' -%}\n{{- ' '  + "
     "messages[idx]['content'] + ' ' + eos_token -}}\n{% endif %}\n{% endfor %}",
     "[INST] <<SYS>>\nYou are a helpful assistant\n<</SYS>>\n\nHello [/INST]Hi there</s><s>[INST] "
     "Who are you [/INST]   I am an assistant   </s><s>[INST] Another question [/INST]"},
    {"bofenghuang/vigogne-2-70b-chat", "llama2",
     "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] "
     "%}{% set system_message = messages[0]['content'] %}{% elif true == true and not '<<SYS>>' in "
     "messages[0]['content'] %}{% set loop_messages = messages %}{% set system_message = 'Vous "
     "êtes Vigogne, un assistant IA créé par Zaion Lab. Vous suivez extrêmement bien les "
     "instructions. Aidez autant que vous le pouvez.' %}{% else %}{% set loop_messages = messages "
     "%}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if "
     "(message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation "
     "roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 "
     "and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + "
     "'\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] "
     "%}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + content.strip() + ' [/INST]' "
     "}}{% elif message['role'] == 'system' %}{{ '<<SYS>>\\n' + content.strip() + "
     "'\\n<</SYS>>\\n\\n' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' "
     "' + eos_token }}{% endif %}{% endfor %}",
     "[INST] <<SYS>>\nYou are a helpful assistant\n<</SYS>>\n\nHello [/INST]Hi there</s>[INST] Who "
     "are you [/INST]I am an assistant</s>[INST] Another question [/INST]"},
    {"google/gemma-7b-it", "gemma",
     "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% "
     "endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 "
     "== 0) %}{{ raise_exception('Conversation roles must alternate "
     "user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == 'assistant') %}{% "
     "set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ "
     "'<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}{% "
     "endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}",
     "<start_of_turn>user\nYou are a helpful "
     "assistant\n\nHello<end_of_turn>\n<start_of_turn>model\nHi "
     "there<end_of_turn>\n<start_of_turn>user\nWho are you<end_of_turn>\n<start_of_turn>model\nI "
     "am an assistant<end_of_turn>\n<start_of_turn>user\nAnother "
     "question<end_of_turn>\n<start_of_turn>model\n"},
    {"Phi-3-mini", "phi3",
     "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') %}{{'<|user|>' "
     "+ '\n' + message['content'] + '<|end|>' + '\n' + '<|assistant|>' + '\n'}}{% elif "
     "(message['role'] == 'assistant') %}{{message['content'] + '<|end|>' + '\n'}}{% endif %}{% "
     "endfor %}",
     "<|system|>\nYou are a helpful assistant<|end|>\n<|user|>\nHello<|end|>\n<|assistant|>\nHi "
     "there<|end|>\n<|user|>\nWho are you<|end|>\n<|assistant|>\n   I am an assistant   "
     "<|end|>\n<|user|>\nAnother question<|end|>\n<|assistant|>\n"},
    {"Phi-3-small", "phi3",
     "{{ bos_token }}{% for message in messages %}{{'<|' + message['role'] + '|>' + '\n' + "
     "message['content'] + '<|end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ "
     "'<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}",
     "<|system|>\nYou are a helpful assistant<|end|>\n<|user|>\nHello<|end|>\n<|assistant|>\nHi "
     "there<|end|>\n<|user|>\nWho are you<|end|>\n<|assistant|>\n   I am an assistant   "
     "<|end|>\n<|user|>\nAnother question<|end|>\n<|assistant|>\n"},
    {"Phi-3-vision", "phi3",
     "{% for message in messages %}{{'<|' + message['role'] + '|>' + '\n' + message['content'] + "
     "'<|end|>\n' }}{% endfor %}{% if add_generation_prompt and messages[-1]['role'] != "
     "'assistant' %}{{- '<|assistant|>\n' -}}{% endif %}",
     "<|system|>\nYou are a helpful assistant<|end|>\n<|user|>\nHello<|end|>\n<|assistant|>\nHi "
     "there<|end|>\n<|user|>\nWho are you<|end|>\n<|assistant|>\n   I am an assistant   "
     "<|end|>\n<|user|>\nAnother question<|end|>\n<|assistant|>\n"},
    {"mistralai/Mistral-7B-Instruct-v0.2 (mistralai 'v1' template with a system prompt)",
     "mistral-v1",
     "{%- if messages[0]['role'] == 'system' %}\n    {%- set system_message = "
     "messages[0]['content'] %}\n    {%- set loop_messages = messages[1:] %}\n{%- else %}\n    {%- "
     "set loop_messages = messages %}\n{%- endif %}\n\n{{- bos_token }}\n{%- for message in "
     "loop_messages %}\n    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}\n      "
     "  {{- raise_exception('After the optional system message, conversation roles must alternate "
     "user/assistant/user/assistant/...') }}\n    {%- endif %}\n    {%- if message['role'] == "
     "'user' %}\n        {%- if loop.first and system_message is defined %}\n            {{- ' "
     "[INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}\n        {%- else "
     "%}\n            {{- ' [INST] ' + message['content'] + ' [/INST]' }}\n        {%- endif %}\n  "
     "  {%- elif message['role'] == 'assistant' %}\n        {{- ' ' + message['content'] + "
     "eos_token}}\n    {%- else %}\n        {{- raise_exception('Only user and assistant roles are "
     "supported, with the exception of an initial optional system message!') }}\n    {%- endif "
     "%}\n{%- endfor %}\n",
     " [INST] You are a helpful assistant\n\nHello [/INST] Hi there</s> [INST] Who are you [/INST] "
     "   I am an assistant   </s> [INST] Another question [/INST]"},
    {"mistralai/Mistral-Large-Instruct-2411 (mistralai 'v7' template)", "mistral-v7",
     "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' + "
     "message['content'] + '[/INST]' }}{% elif message['role'] == 'system' %}{{ '[SYSTEM_PROMPT] ' "
     "+ message['content'] + '[/SYSTEM_PROMPT]' }}{% elif message['role'] == 'assistant' %}{{ ' ' "
     "+ message['content'] + eos_token }}{% else %}{{ raise_exception('Only user, system and "
     "assistant roles are supported!') }}{% endif %}{% endfor %}",
     "[SYSTEM_PROMPT] You are a helpful assistant[/SYSTEM_PROMPT][INST] Hello[/INST] Hi "
     "there</s>[INST] Who are you[/INST]    I am an assistant   </s>[INST] Another "
     "question[/INST]"},
    {"phi-4", "phi4",
     "{% for message in messages %}{% if (message['role'] == 'system') "
     "%}{{'<|im_start|>system<|im_sep|>' + message['content'] + '<|im_end|>'}}{% elif "
     "(message['role'] == 'user') %}{{'<|im_start|>user<|im_sep|>' + message['content'] + "
     "'<|im_end|><|im_start|>assistant<|im_sep|>'}}{% elif (message['role'] == 'assistant') "
     "%}{{message['content'] + '<|im_end|>'}}{% endif %}{% endfor %}",
     "<|im_start|>system<|im_sep|>You are a helpful "
     "assistant<|im_end|><|im_start|>user<|im_sep|>Hello<|im_end|><|im_start|>assistant<|im_sep|>"
     "Hi there<|im_end|><|im_start|>user<|im_sep|>Who are "
     "you<|im_end|><|im_start|>assistant<|im_sep|>   I am an assistant   "
     "<|im_end|><|im_start|>user<|im_sep|>Another "
     "question<|im_end|><|im_start|>assistant<|im_sep|>"},
    {"teknium/OpenHermes-2.5-Mistral-7B", "chatml",
     "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] "
     "+ '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ "
     "'<|im_start|>assistant\\n' }}{% endif %}",
     "<|im_start|>system\nYou are a helpful "
     "assistant<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\nHi "
     "there<|im_end|>\n<|im_start|>user\nWho are you<|im_end|>\n<|im_start|>assistant\n   I am an "
     "assistant   <|im_end|>\n<|im_start|>user\nAnother "
     "question<|im_end|>\n<|im_start|>assistant\n"},
    {"Llama-3", "llama3",
     "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
     "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim "
     "+ '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif "
     "%}{{ content }}{% endfor %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}",
     "<|start_header_id|>system<|end_header_id|>\n\nYou are a helpful "
     "assistant<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|><|start_header_"
     "id|>assistant<|end_header_id|>\n\nHi "
     "there<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWho are "
     "you<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nI am an "
     "assistant<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nAnother "
     "question<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"},
};

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

/* The conversation of llama.cpp's chat-template test. */
static const chat_msg llama_cpp_conv[] = {
    {"system", "You are a helpful assistant"},
    {"user", "Hello"},
    {"assistant", "Hi there"},
    {"user", "Who are you"},
    {"assistant", "   I am an assistant   "},
    {"user", "Another question"},
};

static void test_llama_cpp_cases(void) {
    for (size_t i = 0; i < sizeof k_llama_cpp_cases / sizeof k_llama_cpp_cases[0]; i++) {
        const llama_cpp_case *c = &k_llama_cpp_cases[i];
        const char *fam = chat_template_family(c->tmpl);
        CHECKF(fam && strcmp(fam, c->family) == 0, "%s: family %s, want %s", c->name,
               fam ? fam : "(none)", c->family);
        CHECKF(render_is(c->tmpl, llama_cpp_conv, 6, 1, c->want), "%s", c->name);
    }
}

/* TinyLlama-1.1B-Chat's template (Zephyr layout, eos_token as a variable):
 * with transformers' trim_blocks it renders as below. */
static const char TINYLLAMA[] =
    "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + "
    "message['content'] + eos_token }}\n{% elif message['role'] == 'system' %}\n{{ "
    "'<|system|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == "
    "'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif "
    "%}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% "
    "endfor %}";

static void test_named_and_tinyllama(void) {
    chat_msg conv[] = {{"system", "Be brief."}, {"user", "Hi"}};
    CHECK(strcmp(chat_template_family(TINYLLAMA), "zephyr") == 0);
    CHECK(render_is(TINYLLAMA, conv, 2, 1,
                    "<|system|>\nBe brief.</s>\n<|user|>\nHi</s>\n<|assistant|>\n"));
    /* a family name stands for its template */
    CHECK(render_is("gemma", conv + 1, 1, 1,
                    "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"));
    CHECK(render_is("phi3", conv, 2, 0, "<|system|>\nBe brief.<|end|>\n<|user|>\nHi<|end|>\n"));
    CHECK(strcmp(chat_template_family("chatml"), "chatml") == 0);
    /* Mistral v3 (no space before [INST], assistant text trimmed) by its tools marker */
    static const char V3[] = "{{ '[AVAILABLE_TOOLS]' }}{{ '[INST] ' + m + '[/INST]' }}";
    chat_msg turn[] = {{"user", "Q"}, {"assistant", " A "}, {"user", "R"}};
    CHECK(strcmp(chat_template_family(V3), "mistral-v3") == 0);
    CHECK(render_is(V3, turn, 3, 1, "[INST] Q[/INST] A</s>[INST] R[/INST]"));
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
    test_llama_cpp_cases();
    test_named_and_tinyllama();
    test_errors_are_clear();
    return tu_finish("test_chat");
}
