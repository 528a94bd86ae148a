/*
 * A deliberately tiny test harness: a test is a function; CHECK records a failure with file, line and
 * the expression, and the test goes on so one run shows every broken expectation. main() (test_main.c)
 * runs every registered test and ends with "N passed, N failed" (counting tests).
 */
#ifndef NC_TEST_H
#define NC_TEST_H

#include <stdint.h>
#include <stdio.h>

extern unsigned nc_test_failures_in_current; /* failed CHECKs in the running test */

void nc_test_report(const char *file, int line, const char *expression, const char *detail);

#define CHECK(cond)                                                                \
    do {                                                                           \
        if (!(cond)) nc_test_report(__FILE__, __LINE__, #cond, 0);                 \
    } while (0)

/* Equality of two unsigned 64-bit values, printing both on failure. */
#define CHECK_EQ_U64(actual, expected)                                             \
    do {                                                                           \
        unsigned long long nc_a_ = (unsigned long long)(actual);                   \
        unsigned long long nc_e_ = (unsigned long long)(expected);                 \
        if (nc_a_ != nc_e_) {                                                      \
            char nc_detail_[96];                                                   \
            snprintf(nc_detail_, sizeof nc_detail_, "got %llu, want %llu", nc_a_, nc_e_); \
            nc_test_report(__FILE__, __LINE__, #actual " == " #expected, nc_detail_); \
        }                                                                          \
    } while (0)

/* A status code, printing names on failure. */
#define CHECK_STATUS(actual, expected)                                             \
    do {                                                                           \
        nc_status nc_a_ = (actual);                                                \
        nc_status nc_e_ = (expected);                                              \
        if (nc_a_ != nc_e_) {                                                      \
            char nc_detail_[96];                                                   \
            snprintf(nc_detail_, sizeof nc_detail_, "got %s, want %s", nc_status_name(nc_a_), \
                     nc_status_name(nc_e_));                                       \
            nc_test_report(__FILE__, __LINE__, #actual, nc_detail_);               \
        }                                                                          \
    } while (0)

typedef struct nc_test_case {
    const char *name;
    void (*run)(void);
} nc_test_case;

/* Each test file exports its cases through one of these. */
extern const nc_test_case nc_token_bucket_tests[];
extern const nc_test_case nc_flow_table_tests[];
extern const nc_test_case nc_queue_tests[];
extern const nc_test_case nc_validate_tests[];
extern const nc_test_case nc_header_tests[];
extern const nc_test_case nc_event_ring_tests[];

/* Deterministic pseudo-random numbers for the property tests (xorshift64*). */
uint64_t nc_test_random(void);
void nc_test_seed(uint64_t seed);

#endif /* NC_TEST_H */
