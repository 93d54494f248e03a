/* loadtest_main.c - entry point of build/loadtest (docs/loadtest.md). */
#include "loadtest/lt_run.h"

int main(int argc, char **argv) { return lt_main(argc, argv); }
