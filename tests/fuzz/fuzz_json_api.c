/*
 * fuzz_json_api.c - the HTTP front end's JSON bodies (server/json_api.h) on
 * arbitrary bytes, parsed as each dialect: POST /generate,
 * /v1/completions and /v1/chat/completions.
 *
 * Checks: a refused body comes with a message for the client; an accepted
 * one yields a GenerateRequest that is a complete message (every required
 * field set, every counted array readable) since srv_prepare and the RPC
 * encoder take it as it is, and that encodes and decodes back to the same
 * bytes.
 */
#include <string.h>

#include "proto/inference.pb-c.h"
#include "rpc/rpc.h"
#include "server/json_api.h"
#include "tests/fuzz/fuzz.h"

/* Touch every byte the request points to, so ASan sees a dangling pointer. */
static size_t walk_request(const Inference__GenerateRequest *g) {
    size_t sum = g->prompt ? strlen(g->prompt) : 0;
    for (size_t i = 0; i < g->n_prompt_ids; i++) sum += (size_t)g->prompt_ids[i];
    for (size_t i = 0; i < g->n_messages; i++)
        sum += strlen(g->messages[i]->role) + strlen(g->messages[i]->content);
    for (size_t i = 0; i < g->n_stop; i++) sum += strlen(g->stop[i]);
    for (size_t i = 0; i < g->n_stop_ids; i++) sum += (size_t)g->stop_ids[i];
    return sum;
}

static void check_encodes(const Inference__GenerateRequest *g) {
    uint8_t *once, *twice;
    size_t n1, n2;
    FUZZ_CHECK(rpc_msg_pack(&g->base, &once, &n1) == RPC_OK);
    Inference__GenerateRequest *back = inference__generate_request__unpack(NULL, n1, once);
    FUZZ_CHECK(back != NULL);
    FUZZ_CHECK(rpc_msg_pack(&back->base, &twice, &n2) == RPC_OK);
    FUZZ_CHECK(n1 == n2 && memcmp(once, twice, n1) == 0);
    inference__generate_request__free_unpacked(back, NULL);
    free(once);
    free(twice);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const japi_kind kinds[] = {JAPI_GENERATE, JAPI_COMPLETIONS, JAPI_CHAT};
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        japi_request r;
        char err[512] = "";
        if (japi_parse(kinds[k], (const char *)data, size, &r, err, sizeof err) != 0) {
            FUZZ_CHECK(err[0] != 0 && memchr(err, 0, sizeof err) != NULL);
            continue;
        }
        FUZZ_CHECK(protobuf_c_message_check(&r.gen.base));
        (void)walk_request(&r.gen);
        if (r.model) (void)strlen(r.model);
        check_encodes(&r.gen);
        japi_request_free(&r);
    }
    return 0;
}
