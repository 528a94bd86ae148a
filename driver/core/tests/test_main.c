/* Runs every test case; the closing line is the contract with test/driver/core.test.ts. */
#include <stdio.h>
#include <string.h>

#include "nc_test.h"

unsigned nc_test_failures_in_current;
static uint64_t nc_random_state = 0x9E3779B97F4A7C15ull;

void nc_test_report(const char *file, int line, const char *expression, const char *detail)
{
    nc_test_failures_in_current++;
    printf("    FAIL %s:%d: %s%s%s\n", file, line, expression, detail ? " -- " : "", detail ? detail : "");
}

void nc_test_seed(uint64_t seed)
{
    nc_random_state = seed ? seed : 1;
}

uint64_t nc_test_random(void)
{
    nc_random_state ^= nc_random_state >> 12;
    nc_random_state ^= nc_random_state << 25;
    nc_random_state ^= nc_random_state >> 27;
    return nc_random_state * 0x2545F4914F6CDD1Dull;
}

int main(int argc, char **argv)
{
    const nc_test_case *suites[] = {nc_header_tests, nc_token_bucket_tests, nc_flow_table_tests,
                                    nc_queue_tests, nc_validate_tests, nc_event_ring_tests};
    const char *only = argc > 1 ? argv[1] : 0; /* optional substring filter on test names */
    unsigned passed = 0, failed = 0;
    size_t s;

    for (s = 0; s < sizeof suites / sizeof suites[0]; s++) {
        const nc_test_case *test;
        for (test = suites[s]; test->name != 0; test++) {
            if (only && strstr(test->name, only) == 0) continue;
            nc_test_failures_in_current = 0;
            nc_test_seed(0x9E3779B97F4A7C15ull);
            test->run();
            if (nc_test_failures_in_current == 0) {
                passed++;
                printf("ok   %s\n", test->name);
            } else {
                failed++;
                printf("FAIL %s (%u failed checks)\n", test->name, nc_test_failures_in_current);
            }
        }
    }
    printf("%u passed, %u failed\n", passed, failed);
    return failed == 0 && passed > 0 ? 0 : 1;
}
