/*
 * fuzz.h - what every harness in tests/fuzz/ defines, and the check they use.
 *
 * A harness is a libFuzzer target: LLVMFuzzerTestOneInput runs one input and
 * returns 0. A finding is a crash: a sanitizer report, or a FUZZ_CHECK that
 * failed (it aborts, which libFuzzer records like any crash). Each harness
 * is built twice: with libFuzzer (ENGINE_FUZZ=ON, tests/fuzz/run.sh) and with
 * replay_main.c, which feeds it the committed corpus in every build (ctest
 * fuzz_corpus_replay). LLVMFuzzerInitialize is optional; a harness that
 * needs one-time setup defines it.
 */
#ifndef TESTS_FUZZ_FUZZ_H
#define TESTS_FUZZ_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* A promise of the code under test (its header's contract) that the input
 * broke: report it and abort. */
#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: FUZZ_CHECK failed: %s\n", __FILE__, __LINE__, #cond);          \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#endif
