/*
 * test_response_format.c - the HTTP bodies' response_format (server/json_api.c)
 * mapped onto the RPC request: text, json_object and json_schema (the schema
 * travels as compact JSON text with its name and strict flag), on the chat,
 * completions and /generate dialects; malformed ones are refused naming the
 * field.
 */
#include <string.h>

#include "server/json_api.h"
#include "tests/common/test_util.h"

static int parse(japi_kind kind, const char *body, japi_request *r, char *err, size_t errlen) {
    return japi_parse(kind, body, strlen(body), r, err, errlen);
}

static void test_mapped(void) {
    japi_request r;
    char err[256];
    const char *chat =
        "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"response_format\":{\"type\":"
        "\"json_schema\",\"json_schema\":{\"name\":\"p\",\"strict\":true,\"schema\":{\"type\":"
        "\"object\", \"properties\": {\"a\": {\"type\": \"integer\"}}}}}}";
    CHECKF(parse(JAPI_CHAT, chat, &r, err, sizeof err) == 0, "%s", err);
    const Inference__ResponseFormat *f = r.gen.response_format;
    CHECK(f && !strcmp(f->type, "json_schema") && !strcmp(f->name, "p") && f->has_strict &&
          f->strict);
    CHECK(f && f->json_schema &&
          !strcmp(f->json_schema,
                  "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"}}}"));
    japi_request_free(&r);

    CHECK(parse(JAPI_COMPLETIONS,
                "{\"prompt\":\"x\",\"response_format\":{\"type\":\"json_object\"}}", &r, err,
                sizeof err) == 0);
    CHECK(r.gen.response_format && !strcmp(r.gen.response_format->type, "json_object") &&
          !r.gen.response_format->json_schema);
    japi_request_free(&r);

    CHECK(parse(JAPI_GENERATE, "{\"prompt\":\"x\",\"response_format\":{\"type\":\"text\"}}", &r,
                err, sizeof err) == 0);
    CHECK(r.gen.response_format && !strcmp(r.gen.response_format->type, "text"));
    japi_request_free(&r);

    CHECK(parse(JAPI_COMPLETIONS, "{\"prompt\":\"x\"}", &r, err, sizeof err) == 0);
    CHECK(r.gen.response_format == NULL);
    japi_request_free(&r);
}

static int refused(const char *rf, const char *needle) {
    char body[512], err[256] = "";
    snprintf(body, sizeof body, "{\"prompt\":\"x\",\"response_format\":%s}", rf);
    japi_request r;
    int rc = parse(JAPI_COMPLETIONS, body, &r, err, sizeof err);
    if (rc == 0) japi_request_free(&r);
    if (rc == 0 || !strstr(err, needle)) fprintf(stderr, "%s -> rc %d '%s'\n", rf, rc, err);
    return rc != 0 && strstr(err, needle) != NULL;
}

static void test_refused(void) {
    CHECK(refused("\"json\"", "response_format must be an object"));
    CHECK(refused("{}", "response_format.type must be a string"));
    CHECK(refused("{\"type\":\"yaml\"}", "got \"yaml\""));
    CHECK(refused("{\"type\":\"json_schema\"}", "response_format.json_schema must be an object"));
    CHECK(refused("{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"x\"}}",
                  "response_format.json_schema.schema must be an object, got nothing"));
    CHECK(refused("{\"type\":\"json_schema\",\"json_schema\":{\"schema\":{},\"strict\":1}}",
                  "strict must be a boolean"));
    CHECK(refused("{\"type\":\"json_schema\",\"json_schema\":{\"schema\":{},\"name\":3}}",
                  "name must be a string"));
}

int main(void) {
    test_mapped();
    test_refused();
    return tu_finish("test_response_format");
}
