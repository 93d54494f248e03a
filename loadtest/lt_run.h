/*
 * lt_run.h - loadtest's command line and run loop: parse the options,
 * replay a trace or drive an open (--rate) / closed (--concurrency) loop
 * against an RPC or HTTP target, then print and write the results.
 *
 * lt_main is the whole program (loadtest_main.c only calls it) so the tests
 * can run it in process. It returns the exit status: 0 the run completed,
 * 1 a request failed and --fail-on-error was given (or the run could not
 * start: target unreachable, --out not writable), 2 usage or trace errors.
 */
#ifndef LT_RUN_H
#define LT_RUN_H

int lt_main(int argc, char **argv);

#endif
