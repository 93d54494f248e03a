/* cli_args.c - see cli_args.h. */
#include "apps/cli_args.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cli_parse_int(const char *s, long lo, long hi, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return -1;
    *out = (int)v;
    return 0;
}

int cli_parse_u64(const char *s, uint64_t *out) {
    char *end;
    errno = 0;
    if (*s == '-' || *s == '+') return -1;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end) return -1;
    *out = v;
    return 0;
}

int cli_parse_float(const char *s, float *out) {
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    if (errno || end == s || *end || !isfinite(v)) return -1;
    *out = v;
    return 0;
}

int cli_bad_arg(const char *prog, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "%s: ", prog);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n(see %s --help)\n", cli_invoked_path(prog));
    return 2;
}

const char *cli_invoked_path(const char *prog) {
    /* argv[0] as the user typed it (e.g. ./build/infer-generate), when it
     * is this program: the programs are not installed on PATH */
    const char *inv = program_invocation_name;
    if (!inv || !*inv) return prog;
    const char *base = strrchr(inv, '/');
    base = base ? base + 1 : inv;
    return strcmp(base, prog) == 0 ? inv : prog;
}
