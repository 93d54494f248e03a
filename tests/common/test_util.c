/* test_util.c - see test_util.h. */
#include "tests/common/test_util.h"

#include "core/model.h"
#include "core/tokenizer.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

int tu_failures = 0;
int tu_checks = 0;

int tu_finish(const char *name) {
    printf("%s: %d checks, %d failed\n", name, tu_checks, tu_failures);
    return tu_failures ? 1 : 0;
}

const char *tu_model_path(void) {
    static char buf[4096];
    const char *p = getenv("ENGINE_MODEL");
    if (p && *p) {
        snprintf(buf, sizeof buf, "%s", p);
    } else {
        snprintf(buf, sizeof buf, "%s", tu_src_path("models/SmolLM2-135M-Instruct.Q4_1.gguf"));
    }
    return access(buf, R_OK) == 0 ? buf : NULL;
}

const char *tu_src_path(const char *rel) {
    static char buf[4096];
    const char *root = getenv("ENGINE_SOURCE_DIR");
    snprintf(buf, sizeof buf, "%s/%s", root && *root ? root : ".", rel);
    return buf;
}

char *tu_read_file(const char *path, size_t *len) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    long n = fseek(fp, 0, SEEK_END) == 0 ? ftell(fp) : -1;
    char *buf = n >= 0 && fseek(fp, 0, SEEK_SET) == 0 ? malloc((size_t)n + 1) : NULL;
    if (buf) {
        *len = fread(buf, 1, (size_t)n, fp);
        buf[*len] = 0;
    }
    fclose(fp);
    return buf;
}

void tu_sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

int tu_free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int port = -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

int tu_load_model(const char *name, llm_model **m, llm_tokenizer **tok) {
    const char *path = tu_model_path();
    if (!path) {
        printf("%s: model absent (run tools/fetch-model): SKIP\n", name);
        return TU_SKIP;
    }
    char err[512];
    if (llm_model_load(path, m, NULL, NULL, err, sizeof err) ||
        tok_load(llm_model_gguf(*m), tok, err, sizeof err)) {
        fprintf(stderr, "%s: load: %s\n", name, err);
        return 1;
    }
    return 0;
}
