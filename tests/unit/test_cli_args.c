/* test_cli_args.c - strict command-line value parsing (apps/cli_args.h). */
#include <stdint.h>

#include "apps/cli_args.h"
#include "tests/common/test_util.h"

int main(void) {
    int i = 7;
    CHECK(cli_parse_int("42", 0, 100, &i) == 0 && i == 42);
    CHECK(cli_parse_int("-3", -5, 5, &i) == 0 && i == -3);
    i = 7;
    CHECK(cli_parse_int("101", 0, 100, &i) == -1 && i == 7);
    CHECK(cli_parse_int("", 0, 100, &i) == -1);
    CHECK(cli_parse_int("12x", 0, 100, &i) == -1);
    CHECK(cli_parse_int("1.5", 0, 100, &i) == -1);
    CHECK(cli_parse_int("99999999999999999999", 0, 2000000000, &i) == -1 && i == 7);
    uint64_t u = 1;
    CHECK(cli_parse_u64("18446744073709551615", &u) == 0 && u == UINT64_MAX);
    u = 1;
    CHECK(cli_parse_u64("18446744073709551616", &u) == -1 && u == 1);
    CHECK(cli_parse_u64("-1", &u) == -1 && cli_parse_u64("+1", &u) == -1);
    CHECK(cli_parse_u64("7 ", &u) == -1 && u == 1);
    float f = 0;
    CHECK(cli_parse_float("0.25", &f) == 0 && f == 0.25f);
    CHECK(cli_parse_float("1e3", &f) == 0 && f == 1000.0f);
    f = 2;
    CHECK(cli_parse_float("inf", &f) == -1 && cli_parse_float("nan", &f) == -1);
    CHECK(cli_parse_float("1e99", &f) == -1 && cli_parse_float("0.5q", &f) == -1 && f == 2);
    CHECK(cli_bad_arg("test_cli_args", "expected message: %d", 1) == 2);
    return tu_finish("test_cli_args");
}
