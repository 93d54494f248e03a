/*
 * cli_args.h - strict parsing of command-line values, shared by the
 * programs (infer-generate, infer-bench, infer-server).
 *
 * Contract: each parser accepts the whole string or nothing: leading
 * garbage, trailing characters, an empty string, overflow, or a value
 * outside the range return -1 and leave *out untouched; success returns 0.
 */
#ifndef CLI_ARGS_H
#define CLI_ARGS_H

#include <stdint.h>

/* A decimal integer in [lo, hi]. */
int cli_parse_int(const char *s, long lo, long hi, int *out);
/* A non-negative decimal integer (no sign). */
int cli_parse_u64(const char *s, uint64_t *out);
/* A finite float (strtof syntax). */
int cli_parse_float(const char *s, float *out);
/* The path the program was started by (argv[0], e.g. "./build/infer-server")
 * when its file name is prog, else prog: what help texts tell a user to run. */
const char *cli_invoked_path(const char *prog);
/* Print "PROG: MESSAGE\n(see PATH --help)\n" to stderr (PATH:
 * cli_invoked_path); returns 2, the programs' exit status for bad arguments. */
int cli_bad_arg(const char *prog, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
