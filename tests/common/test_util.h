/*
 * test_util.h - tiny assertion helpers shared by the unit tests.
 *
 * A test executable returns 0 when all checks pass, 1 on any failure and 77
 * (ctest SKIP_RETURN_CODE) when a prerequisite such as the real model file
 * is missing. CHECK records a failure and continues so one run shows every
 * broken case.
 */
#ifndef TESTS_TEST_UTIL_H
#define TESTS_TEST_UTIL_H

#include <stdio.h>
#include <stdlib.h>

extern int tu_failures;
extern int tu_checks;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        tu_checks++;                                                                               \
        if (!(cond)) {                                                                             \
            tu_failures++;                                                                         \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);               \
        }                                                                                          \
    } while (0)

#define CHECKF(cond, ...)                                                                          \
    do {                                                                                           \
        tu_checks++;                                                                               \
        if (!(cond)) {                                                                             \
            tu_failures++;                                                                         \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond);               \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
        }                                                                                          \
    } while (0)

/* Print the summary and return the process exit code. */
int tu_finish(const char *name);

/* Path of the real model (ENGINE_MODEL env, else models/...); NULL when the
 * file is missing. */
const char *tu_model_path(void);
/* Path under the source tree (ENGINE_SOURCE_DIR env, else "."); static buffer. */
const char *tu_src_path(const char *rel);
/* The whole file as a malloc'd NUL-terminated buffer (its length in *len),
 * or NULL when it cannot be opened or read. */
char *tu_read_file(const char *path, size_t *len);

/* Sleep ms milliseconds. */
void tu_sleep_ms(int ms);
/* A loopback TCP port that was free a moment ago (a server the test starts
 * binds it right after), or -1. */
int tu_free_port(void);

struct llm_model;
struct llm_tokenizer;
/* Load the real model (tu_model_path) and its tokenizer for test `name`:
 * 0 on success; TU_SKIP (after saying so) when the model is absent; 1 (after
 * printing why) when it does not load. */
int tu_load_model(const char *name, struct llm_model **m, struct llm_tokenizer **tok);

#define TU_SKIP 77

#endif
