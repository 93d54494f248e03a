/*
 * replay_main.c - runs a fuzz harness over files without libFuzzer, so that
 * every build (gcc, Release and ASan+UBSan) replays the committed corpus
 * through every harness (ctest fuzz_corpus_replay).
 *
 * Usage: fuzz_<name>_replay PATH...   (a file, or a directory whose regular
 * files are all run, in name order). Each input is copied into a buffer of
 * exactly its size, as libFuzzer does, so a read past its end is caught by
 * ASan. Exit status 0 when every input ran; 1 when a path cannot be read or
 * no input was found. A finding aborts the process.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tests/fuzz/fuzz.h"

/* Optional in a harness: absent, the weak reference is NULL. */
#pragma weak LLVMFuzzerInitialize

static int run_file(const char *path) {
    FILE *fp = fopen(path, "rb");
    long len = -1;
    if (fp && fseek(fp, 0, SEEK_END) == 0) len = ftell(fp);
    uint8_t *buf = len >= 0 ? malloc(len ? (size_t)len : 1) : NULL;
    int ok = buf && fseek(fp, 0, SEEK_SET) == 0 && fread(buf, 1, (size_t)len, fp) == (size_t)len;
    if (fp) fclose(fp);
    if (!ok) {
        fprintf(stderr, "cannot read %s\n", path);
        free(buf);
        return -1;
    }
    LLVMFuzzerTestOneInput(buf, (size_t)len);
    free(buf);
    return 0;
}

static int by_name(const struct dirent **a, const struct dirent **b) {
    return strcmp((*a)->d_name, (*b)->d_name);
}

/* Run every regular file of dir; returns how many ran, -1 on an error. */
static int run_dir(const char *dir) {
    struct dirent **names;
    int n = scandir(dir, &names, NULL, by_name);
    if (n < 0) {
        fprintf(stderr, "cannot list %s\n", dir);
        return -1;
    }
    int ran = 0;
    for (int i = 0; i < n; i++) {
        char path[4096];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", dir, names[i]->d_name);
        if (ran >= 0 && stat(path, &st) == 0 && S_ISREG(st.st_mode))
            ran = run_file(path) == 0 ? ran + 1 : -1;
        free(names[i]);
    }
    free(names);
    return ran;
}

int main(int argc, char **argv) {
    if (LLVMFuzzerInitialize) LLVMFuzzerInitialize(&argc, &argv);
    int total = 0;
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) != 0) {
            fprintf(stderr, "cannot read %s\n", argv[i]);
            return 1;
        }
        int ran = S_ISDIR(st.st_mode) ? run_dir(argv[i]) : run_file(argv[i]) == 0 ? 1 : -1;
        if (ran < 0) return 1;
        total += ran;
    }
    printf("%s: %d inputs replayed\n", argv[0], total);
    return total > 0 ? 0 : 1;
}
