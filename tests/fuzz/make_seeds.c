/*
 * make_seeds.c - writes the generated seeds of the fuzz corpus: the GGUF
 * files of corpus/gguf/ and the frame streams of corpus/rpc/ (the JSON and
 * text seeds are written by hand). Run it after a change to the formats and
 * commit what changed:
 *     build/fuzz-make-seeds tests/fuzz/corpus
 * The output depends only on this file and the writers it uses (seeded
 * weights), so running it twice gives the same bytes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/quant.h"
#include "proto/inference.pb-c.h"
#include "rpc/rpc.h"
#include "tests/common/gguf_writer.h"
#include "tests/common/tiny_model.h"
#include "tests/fuzz/tiny_vocab.h"

static int save(const char *dir, const char *name, const void *data, size_t len) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    int ok = f && fwrite(data, 1, len, f) == len;
    if (f && fclose(f) != 0) ok = 0;
    if (!ok) fprintf(stderr, "cannot write %s\n", path);
    return ok ? 0 : -1;
}

static int save_gguf(const char *dir, const char *name, gguf_writer *gw) {
    uint8_t *buf;
    size_t len;
    gw_to_memory(gw, &buf, &len);
    gw_free(gw);
    int rc = save(dir, name, buf, len);
    free(buf);
    return rc;
}

/* A very small model: one layer, 32 wide, so a seed stays a few KiB. */
static gguf_writer *small_model(uint32_t weight_type, int tied) {
    tiny_spec s;
    tiny_spec_default(&s);
    s.n_vocab = 8;
    s.n_embd = 32;
    s.n_layer = 1;
    s.n_head = 2;
    s.n_head_kv = 1;
    s.head_dim = 16;
    s.n_ff = 32;
    s.attn_type = s.ffn_type = s.embd_type = s.output_type = weight_type;
    s.tied = tied;
    return tiny_model_build(&s);
}

/* One key of every type, arrays of every element kind, tensors of several
 * formats, a non-default alignment: every getter has something to read. */
static gguf_writer *every_type(void) {
    static const char *const strs[] = {"one", "", "three\xc3\xa9"};
    static const int32_t ints[] = {-1, 0, 2147483647};
    static const float floats[] = {0.5f, -2.0f};
    static const uint64_t ne_row[] = {32}, ne_mat[] = {32, 2};
    uint8_t data[32 * 2 * 4] = {0};
    for (size_t i = 0; i < sizeof data; i++) data[i] = (uint8_t)(i * 7);
    gguf_writer *gw = gw_new(3);
    gw_set_alignment(gw, 64);
    gw_kv_u8(gw, "t.u8", 200);
    gw_kv_i8(gw, "t.i8", -3);
    gw_kv_u16(gw, "t.u16", 60000);
    gw_kv_i16(gw, "t.i16", -30000);
    gw_kv_u32(gw, "t.u32", 4000000000u);
    gw_kv_i32(gw, "t.i32", -5);
    gw_kv_u64(gw, "t.u64", 18000000000000000000ull);
    gw_kv_i64(gw, "t.i64", -6);
    gw_kv_f32(gw, "t.f32", 1.5f);
    gw_kv_f64(gw, "t.f64", 1e300);
    gw_kv_bool(gw, "t.bool", 1);
    gw_kv_str(gw, "t.str", "text");
    gw_kv_arr_str(gw, "t.arr_str", strs, 3);
    gw_kv_arr_i32(gw, "t.arr_i32", ints, 3);
    gw_kv_arr_f32(gw, "t.arr_f32", floats, 2);
    gw_tensor(gw, "f32", QT_F32, 2, ne_mat, data, 32 * 2 * 4);
    gw_tensor(gw, "f16", QT_F16, 1, ne_row, data, 32 * 2);
    gw_tensor(gw, "q4_0", QT_Q4_0, 1, ne_row, data, quant_row_bytes(QT_Q4_0, 32));
    gw_tensor(gw, "q4_1", QT_Q4_1, 1, ne_row, data, quant_row_bytes(QT_Q4_1, 32));
    gw_tensor(gw, "q8_0", QT_Q8_0, 1, ne_row, data, quant_row_bytes(QT_Q8_0, 32));
    return gw;
}

static int write_gguf(const char *dir) {
    gguf_writer *tokenizer = gw_new(3);
    gw_kv_str(tokenizer, "general.architecture", "llama");
    tiny_vocab_write(tokenizer);
    return save_gguf(dir, "model-q8_0-tied.gguf", small_model(QT_Q8_0, 1)) |
           save_gguf(dir, "model-q4_1.gguf", small_model(QT_Q4_1, 0)) |
           save_gguf(dir, "tokenizer.gguf", tokenizer) |
           save_gguf(dir, "every-type.gguf", every_type());
}

/* ---- frames ---- */

typedef struct {
    uint8_t *buf;
    size_t len;
} stream;

static void append(stream *s, const Rpc__Frame *f) {
    uint8_t *wire;
    size_t n;
    if (rpc_frame_pack(f, 0, &wire, &n) != RPC_OK) abort();
    s->buf = realloc(s->buf, s->len + n);
    if (!s->buf) abort();
    memcpy(s->buf + s->len, wire, n);
    s->len += n;
    free(wire);
}

static void append_call(stream *s, uint64_t id, const char *method, const ProtobufCMessage *req) {
    char full[128];
    snprintf(full, sizeof full, "%s%s", RPC_METHOD_PREFIX, method);
    Rpc__Frame f = RPC__FRAME__INIT;
    f.call_id = id;
    f.type = RPC__FRAME_TYPE__FRAME_CALL;
    f.method = full;
    f.has_deadline_ms = 1;
    f.deadline_ms = 5000;
    f.api_key = "secret";
    if (req) {
        f.has_payload = 1;
        if (rpc_msg_pack(req, &f.payload.data, &f.payload.len) != RPC_OK) abort();
    }
    append(s, &f);
    free(f.payload.data);
}

static int save_stream(const char *dir, const char *name, stream *s) {
    int rc = save(dir, name, s->buf, s->len);
    free(s->buf);
    s->buf = NULL;
    s->len = 0;
    return rc;
}

static void append_generate(stream *s) {
    Inference__SamplingParams sp = INFERENCE__SAMPLING_PARAMS__INIT;
    sp.has_temperature = sp.has_top_k = sp.has_seed = 1;
    sp.temperature = 0.7f;
    sp.top_k = 40;
    sp.seed = 42;
    char *stop[] = {"\n\n", "END"};
    Inference__GenerateRequest g = INFERENCE__GENERATE_REQUEST__INIT;
    g.prompt = "Once upon a time";
    g.sampling = &sp;
    g.has_max_tokens = 1;
    g.max_tokens = 16;
    g.n_stop = 2;
    g.stop = stop;
    append_call(s, 1, "GenerateStream", &g.base);
}

static void append_chat(stream *s) {
    Inference__ChatMessage sys = INFERENCE__CHAT_MESSAGE__INIT,
                           user = INFERENCE__CHAT_MESSAGE__INIT;
    sys.role = "system";
    sys.content = "Be brief.";
    user.role = "user";
    user.content = "Hi!";
    Inference__ChatMessage *msgs[] = {&sys, &user};
    int32_t ids[] = {1, 2, 3};
    Inference__GenerateRequest g = INFERENCE__GENERATE_REQUEST__INIT;
    g.n_messages = 2;
    g.messages = msgs;
    g.n_stop_ids = 3;
    g.stop_ids = ids;
    g.has_n = g.has_return_token_ids = 1;
    g.n = 2;
    g.return_token_ids = 1;
    append_call(s, 2, "Generate", &g.base);
}

static void append_quick_calls(stream *s) {
    Inference__TokenizeRequest tr = INFERENCE__TOKENIZE_REQUEST__INIT;
    tr.text = "hello world";
    tr.has_parse_special = tr.parse_special = 1;
    append_call(s, 3, "Tokenize", &tr.base);
    int32_t ids[] = {104, 101, 108, 108, 111};
    Inference__DetokenizeRequest dr = INFERENCE__DETOKENIZE_REQUEST__INIT;
    dr.n_ids = 5;
    dr.ids = ids;
    append_call(s, 4, "Detokenize", &dr.base);
    Inference__CancelRequest cr = INFERENCE__CANCEL_REQUEST__INIT;
    cr.has_call_id = 1;
    cr.call_id = 1;
    append_call(s, 5, "Cancel", &cr.base);
    append_call(s, 6, "Health", NULL);
    append_call(s, 7, "ModelInfo", NULL);
    append_call(s, 8, "Stats", NULL);
}

/* What a server sends back: a chunk, a status, and a client's cancel. */
static void append_replies(stream *s) {
    int32_t ids[] = {7, 8};
    Inference__Usage usage = INFERENCE__USAGE__INIT;
    usage.has_prompt_tokens = usage.has_completion_tokens = 1;
    usage.prompt_tokens = 4;
    usage.completion_tokens = 2;
    Inference__GenerateChunk chunk = INFERENCE__GENERATE_CHUNK__INIT;
    chunk.text = " there";
    chunk.n_token_ids = 2;
    chunk.token_ids = ids;
    chunk.finish_reason = "length";
    chunk.usage = &usage;
    Rpc__Frame f = RPC__FRAME__INIT;
    f.call_id = 1;
    f.type = RPC__FRAME_TYPE__FRAME_MESSAGE;
    f.has_payload = 1;
    if (rpc_msg_pack(&chunk.base, &f.payload.data, &f.payload.len) != RPC_OK) abort();
    append(s, &f);
    free(f.payload.data);
    Rpc__Frame st = RPC__FRAME__INIT;
    st.call_id = 1;
    st.type = RPC__FRAME_TYPE__FRAME_STATUS;
    st.has_status = 1;
    st.status = RPC__STATUS_CODE__INVALID_ARGUMENT;
    st.message = "max_tokens must be positive";
    append(s, &st);
    Rpc__Frame cancel = RPC__FRAME__INIT;
    cancel.call_id = 2;
    cancel.type = RPC__FRAME_TYPE__FRAME_CANCEL;
    append(s, &cancel);
}

static int write_rpc(const char *dir) {
    stream s = {NULL, 0};
    int rc = 0;
    append_generate(&s);
    rc |= save_stream(dir, "call-generate-stream.bin", &s);
    append_chat(&s);
    rc |= save_stream(dir, "call-generate-chat.bin", &s);
    append_quick_calls(&s);
    rc |= save_stream(dir, "calls-quick.bin", &s);
    append_replies(&s);
    rc |= save_stream(dir, "replies.bin", &s);
    /* a frame whose body is not a frame, then a valid one: the parser skips the first */
    static const uint8_t garbage[] = {5, 0, 0, 0, 0x08, 0x96, 0x01, 0xff, 0xff};
    s.buf = malloc(sizeof garbage);
    if (!s.buf) abort();
    memcpy(s.buf, garbage, sizeof garbage);
    s.len = sizeof garbage;
    append_quick_calls(&s);
    rc |= save_stream(dir, "bad-body-then-calls.bin", &s);
    /* a prefix announcing more than the cap */
    static const uint8_t too_big[] = {0xff, 0xff, 0xff, 0x7f, 0x08, 0x01};
    rc |= save(dir, "too-big.bin", too_big, sizeof too_big);
    return rc;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s CORPUS_DIR (writes CORPUS_DIR/gguf/*, CORPUS_DIR/rpc/*)\n",
                argv[0]);
        return 2;
    }
    char gguf_dir[4096], rpc_dir[4096];
    snprintf(gguf_dir, sizeof gguf_dir, "%s/gguf", argv[1]);
    snprintf(rpc_dir, sizeof rpc_dir, "%s/rpc", argv[1]);
    return (write_gguf(gguf_dir) | write_rpc(rpc_dir)) != 0;
}
