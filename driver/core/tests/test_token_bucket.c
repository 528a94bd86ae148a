/* Token bucket: exactness against a 128-bit oracle, long idle at extreme rates, debt, waits. */
#include "../nc_token_bucket.h"
#include "nc_test.h"

#define TPS_WINDOWS 10000000ull /* 100 ns ticks, what the driver uses */

/* The oracle: what an exact refill gives, computed in 128 bits (tests only; the core must not need it). */
static int64_t oracle_tokens(int64_t tokens, uint64_t fraction, uint64_t rate, uint64_t tps, int64_t burst,
                             uint64_t elapsed, uint64_t *fraction_out)
{
    unsigned __int128 scaled = (unsigned __int128)rate * elapsed + fraction;
    unsigned __int128 gained = scaled / tps;
    if (tokens >= burst || (unsigned __int128)(burst - tokens) <= gained) {
        *fraction_out = 0;
        return burst;
    }
    *fraction_out = (uint64_t)(scaled % tps);
    return tokens + (int64_t)gained;
}

static void test_init_rejects_out_of_bounds(void)
{
    nc_token_bucket bucket;
    CHECK_STATUS(nc_tb_init(&bucket, 0, 1000, TPS_WINDOWS, 0), NC_E_INVALID_ARGUMENT);
    CHECK_STATUS(nc_tb_init(&bucket, NC_TB_RATE_MAX + 1, 1000, TPS_WINDOWS, 0), NC_E_INVALID_ARGUMENT);
    CHECK_STATUS(nc_tb_init(&bucket, 1000, 0, TPS_WINDOWS, 0), NC_E_INVALID_ARGUMENT);
    CHECK_STATUS(nc_tb_init(&bucket, 1000, NC_TB_BURST_MAX + 1, TPS_WINDOWS, 0), NC_E_INVALID_ARGUMENT);
    CHECK_STATUS(nc_tb_init(&bucket, 1000, 1000, 0, 0), NC_E_INVALID_ARGUMENT);
    CHECK_STATUS(nc_tb_init(&bucket, 1000, 1000, NC_TB_TPS_MAX + 1, 0), NC_E_INVALID_ARGUMENT);
    CHECK_STATUS(nc_tb_init(0, 1000, 1000, TPS_WINDOWS, 0), NC_E_INVALID_ARGUMENT);
    CHECK_STATUS(nc_tb_init(&bucket, NC_TB_RATE_MAX, NC_TB_BURST_MAX, NC_TB_TPS_MAX, 0), NC_OK);
    CHECK_STATUS(nc_tb_set_rate(&bucket, 0, 1000, 0), NC_E_INVALID_ARGUMENT);
}

static void test_starts_full_then_refuses(void)
{
    nc_token_bucket bucket;
    CHECK_STATUS(nc_tb_init(&bucket, 1000, 5000, TPS_WINDOWS, 42), NC_OK);
    CHECK(nc_tb_try_consume(&bucket, 5000, 42));
    CHECK(!nc_tb_try_consume(&bucket, 1, 42));
    /* 1 ms at 1000 B/s is exactly one byte */
    CHECK(nc_tb_try_consume(&bucket, 1, 42 + TPS_WINDOWS / 1000));
    CHECK(!nc_tb_try_consume(&bucket, 1, 42 + TPS_WINDOWS / 1000));
    CHECK(nc_tb_try_consume(&bucket, 0, 42)); /* nothing to send is always allowed */
}

/* A sender that is always backlogged gets exactly burst + rate * time, to the byte, whatever the rate. */
static void run_backlogged_sender(uint64_t rate, uint64_t tps, uint64_t packet, uint64_t duration_ticks,
                                  uint64_t max_step)
{
    nc_token_bucket bucket;
    const uint64_t start = 1000;
    uint64_t now = start, passed = 0;
    /* Deep enough that one clock step never fills it: a full bucket forfeits credit, which would make the
     * conservation check below meaningless rather than wrong. */
    uint64_t burst = packet * 2 + (uint64_t)((unsigned __int128)rate * max_step / tps) + 1;
    unsigned __int128 earned;

    CHECK_STATUS(nc_tb_init(&bucket, rate, burst, tps, start), NC_OK);
    for (;;) {
        while (nc_tb_try_consume(&bucket, packet, now)) passed += packet;
        if (now - start >= duration_ticks) break;
        now += 1 + nc_test_random() % max_step;
    }
    nc_tb_refill(&bucket, now);
    earned = (unsigned __int128)rate * (now - start) / tps;
    /* Conservation: what passed plus what is left is exactly what was there plus what was earned. */
    CHECK_EQ_U64(passed + (uint64_t)bucket.tokens, burst + (uint64_t)earned);
    CHECK(bucket.tokens >= 0 && (uint64_t)bucket.tokens < packet);
}

static void test_accuracy_across_rates(void)
{
    run_backlogged_sender(1, TPS_WINDOWS, 1, 3600ull * TPS_WINDOWS, TPS_WINDOWS / 3);          /* 1 B/s, 1 h */
    run_backlogged_sender(1000, TPS_WINDOWS, 100, 600ull * TPS_WINDOWS, TPS_WINDOWS / 10);     /* 1 kB/s */
    run_backlogged_sender(125000000, TPS_WINDOWS, 1500, TPS_WINDOWS, 20000);                   /* 1 Gbit/s */
    run_backlogged_sender(3333333333ull, TPS_WINDOWS, 65536, TPS_WINDOWS / 10, 50000);        /* odd rate */
    run_backlogged_sender(NC_TB_RATE_MAX, TPS_WINDOWS, 1u << 20, TPS_WINDOWS / 100, 997);      /* 800 Gbit/s */
    run_backlogged_sender(NC_TB_RATE_MAX, NC_TB_TPS_MAX, 1u << 20, NC_TB_TPS_MAX / 1000, 99991);
    run_backlogged_sender(7, NC_TB_TPS_MAX, 3, 100ull * NC_TB_TPS_MAX, NC_TB_TPS_MAX);
}

/* The bug class: after a long idle at a high rate, rate * elapsed overflows 64 bits. */
static void test_long_idle_at_extreme_rates_refills_exactly_to_burst(void)
{
    static const uint64_t rates[] = {1, 1000, 125000000, 12500000000ull, NC_TB_RATE_MAX};
    static const uint64_t idles[] = {
        3600ull * TPS_WINDOWS,                 /* an hour */
        86400ull * 365 * TPS_WINDOWS,          /* a year */
        86400ull * 365 * 1000 * TPS_WINDOWS,   /* a millennium */
        UINT64_MAX - 2000,                     /* the whole clock range */
    };
    size_t r, i;
    unsigned full_cases = 0;
    for (r = 0; r < sizeof rates / sizeof rates[0]; r++) {
        for (i = 0; i < sizeof idles / sizeof idles[0]; i++) {
            nc_token_bucket bucket;
            uint64_t burst = nc_tb_burst_for(rates[r], 100, 65536);
            unsigned __int128 earned = (unsigned __int128)rates[r] * idles[i] / TPS_WINDOWS;
            uint64_t want = earned >= burst ? burst : (uint64_t)earned;
            CHECK_STATUS(nc_tb_init(&bucket, rates[r], burst, TPS_WINDOWS, 1000), NC_OK);
            CHECK(nc_tb_try_consume(&bucket, burst, 1000)); /* drain it */
            nc_tb_refill(&bucket, 1000 + idles[i]);
            CHECK_EQ_U64((uint64_t)bucket.tokens, want);
            if (want == burst) {
                full_cases++;
                CHECK(nc_tb_try_consume(&bucket, burst, 1000 + idles[i]));
                CHECK(!nc_tb_try_consume(&bucket, 1, 1000 + idles[i]));
            }
        }
    }
    CHECK(full_cases >= 16); /* all but the 1 B/s and 1 kB/s hour */

    /* Adversarial idles where the naive 64-bit product wraps to exactly zero: 2^36 B/s for 2^28 s (8.5
     * years) and 2^33 B/s for 2^31 s. A refill that multiplies first would leave the bucket empty. */
    {
        static const struct { uint64_t rate, seconds; } wraps[] = {{1ull << 36, 1ull << 28}, {1ull << 33, 1ull << 31}};
        for (i = 0; i < sizeof wraps / sizeof wraps[0]; i++) {
            nc_token_bucket bucket;
            CHECK(wraps[i].rate * wraps[i].seconds == 0); /* the trap is armed */
            CHECK_STATUS(nc_tb_init(&bucket, wraps[i].rate, 1u << 20, TPS_WINDOWS, 0), NC_OK);
            CHECK(nc_tb_try_consume(&bucket, 1u << 20, 0));
            nc_tb_refill(&bucket, wraps[i].seconds * TPS_WINDOWS);
            CHECK_EQ_U64((uint64_t)bucket.tokens, 1u << 20);
        }
    }
    /* The scenario really is the overflow one: naive 64-bit math wraps here. */
    CHECK(NC_TB_RATE_MAX > UINT64_MAX / (86400ull * 365 * TPS_WINDOWS));
}

/* Every refill, over random states and elapsed times up to the whole clock, equals the exact result. */
static void test_refill_matches_oracle_for_random_states(void)
{
    unsigned n;
    for (n = 0; n < 200000; n++) {
        nc_token_bucket bucket;
        uint64_t rate = 1 + nc_test_random() % NC_TB_RATE_MAX;
        uint64_t tps = 1 + nc_test_random() % NC_TB_TPS_MAX;
        uint64_t burst = 1 + nc_test_random() % NC_TB_BURST_MAX;
        uint64_t elapsed, want_fraction;
        int64_t want;
        switch (n % 4) { /* mix tiny, second-scale, huge and saturating idles */
        case 0: elapsed = nc_test_random() % 1000; break;
        case 1: elapsed = nc_test_random() % (tps * 10); break;
        case 2: elapsed = nc_test_random() % (1ull << 50); break;
        default: elapsed = nc_test_random(); break;
        }
        if (n % 8 == 0) rate = NC_TB_RATE_MAX;
        if (n % 16 == 0) tps = NC_TB_TPS_MAX;
        if (n % 5 == 0) rate = 1 + rate % 1000;
        CHECK_STATUS(nc_tb_init(&bucket, rate, burst, tps, 0), NC_OK);
        /* a random starting level, debt included, and a random sub-byte credit */
        bucket.tokens = (int64_t)(nc_test_random() % (burst + 70000)) - 70000;
        bucket.fraction = nc_test_random() % tps;
        want = oracle_tokens(bucket.tokens, bucket.fraction, rate, tps, bucket.burst, elapsed, &want_fraction);
        nc_tb_refill(&bucket, elapsed);
        if (bucket.tokens != want || bucket.fraction != want_fraction) {
            CHECK_EQ_U64((uint64_t)bucket.tokens, (uint64_t)want);
            CHECK_EQ_U64(bucket.fraction, want_fraction);
            return; /* one reported case is enough */
        }
    }
}

static void test_clock_going_backwards_earns_nothing(void)
{
    nc_token_bucket bucket;
    CHECK_STATUS(nc_tb_init(&bucket, 1000000, 100000, TPS_WINDOWS, 5 * TPS_WINDOWS), NC_OK);
    CHECK(nc_tb_try_consume(&bucket, 100000, 5 * TPS_WINDOWS));
    CHECK(!nc_tb_try_consume(&bucket, 1, 1 * TPS_WINDOWS));
    CHECK_EQ_U64((uint64_t)bucket.tokens, 0);
    /* and time resumes from the later reading, not the earlier one */
    CHECK(nc_tb_try_consume(&bucket, 1000, 5 * TPS_WINDOWS + TPS_WINDOWS / 1000));
    CHECK(!nc_tb_try_consume(&bucket, 1, 5 * TPS_WINDOWS + TPS_WINDOWS / 1000));
}

static void test_oversized_packet_goes_into_debt_and_pays_it_back(void)
{
    nc_token_bucket bucket;
    CHECK_STATUS(nc_tb_init(&bucket, 1000, 1000, TPS_WINDOWS, 0), NC_OK);
    CHECK(nc_tb_try_consume(&bucket, 5000, 0)); /* full bucket: a 64 KB GSO packet must not wait forever */
    CHECK(bucket.tokens == -4000);
    CHECK(!nc_tb_try_consume(&bucket, 1, 4 * TPS_WINDOWS)); /* debt: 4 s to get back to zero */
    CHECK(nc_tb_try_consume(&bucket, 1, 4 * TPS_WINDOWS + TPS_WINDOWS / 1000));
    CHECK(!nc_tb_try_consume(&bucket, 1, 0)); /* not full, so an oversized packet waits */
    CHECK(!nc_tb_try_consume(&bucket, NC_TB_BURST_MAX + 1, UINT64_MAX)); /* never, even when full */
}

static void test_ticks_until_is_the_exact_wait(void)
{
    unsigned n;
    for (n = 0; n < 20000; n++) {
        nc_token_bucket bucket, probe;
        uint64_t rate = 1 + nc_test_random() % (n % 2 ? 1000 : NC_TB_RATE_MAX);
        uint64_t burst = 1 + nc_test_random() % (1u << 24);
        uint64_t bytes = 1 + nc_test_random() % (1u << 25);
        uint64_t wait, start = 1000;
        CHECK_STATUS(nc_tb_init(&bucket, rate, burst, TPS_WINDOWS, start), NC_OK);
        bucket.tokens = (int64_t)(nc_test_random() % burst) - (int64_t)(nc_test_random() % 1000);
        bucket.fraction = nc_test_random() % TPS_WINDOWS;
        wait = nc_tb_ticks_until(&bucket, bytes);
        if (wait == UINT64_MAX) continue;
        probe = bucket;
        if (!nc_tb_try_consume(&probe, bytes, start + wait)) {
            CHECK(!"consume at now + ticks_until failed");
            return;
        }
        if (wait > 0) {
            probe = bucket;
            if (nc_tb_try_consume(&probe, bytes, start + wait - 1)) {
                CHECK(!"consume one tick before ticks_until succeeded");
                return;
            }
        }
    }
    {
        nc_token_bucket slow; /* 1 B/s, 1 TiB burst, empty: ~35000 years of ticks, no overflow */
        CHECK_STATUS(nc_tb_init(&slow, 1, NC_TB_BURST_MAX, TPS_WINDOWS, 0), NC_OK);
        slow.tokens = 0;
        CHECK_EQ_U64(nc_tb_ticks_until(&slow, NC_TB_BURST_MAX), NC_TB_BURST_MAX * TPS_WINDOWS);
        CHECK_EQ_U64(nc_tb_ticks_until(&slow, NC_TB_BURST_MAX + 1), UINT64_MAX);
    }
}

static void test_set_rate_keeps_credit_and_clips_to_new_burst(void)
{
    nc_token_bucket bucket;
    CHECK_STATUS(nc_tb_init(&bucket, 1000, 10000, TPS_WINDOWS, 0), NC_OK);
    CHECK(nc_tb_try_consume(&bucket, 10000, 0));
    CHECK_STATUS(nc_tb_set_rate(&bucket, 2000, 10000, TPS_WINDOWS), NC_OK); /* 1 s earned at the old rate */
    CHECK_EQ_U64((uint64_t)bucket.tokens, 1000);
    nc_tb_refill(&bucket, 2 * TPS_WINDOWS); /* 1 s at the new rate */
    CHECK_EQ_U64((uint64_t)bucket.tokens, 3000);
    CHECK_STATUS(nc_tb_set_rate(&bucket, 2000, 500, 2 * TPS_WINDOWS), NC_OK);
    CHECK_EQ_U64((uint64_t)bucket.tokens, 500);
}

static void test_burst_for(void)
{
    CHECK_EQ_U64(nc_tb_burst_for(1000000, 100, 65536), 100000);
    CHECK_EQ_U64(nc_tb_burst_for(1000, 100, 65536), 65536); /* never below one maximal packet */
    CHECK_EQ_U64(nc_tb_burst_for(NC_TB_RATE_MAX, UINT32_MAX, 1), NC_TB_BURST_MAX);
    CHECK_EQ_U64(nc_tb_burst_for(1999, 1000, 1), 1999);
    CHECK_EQ_U64(nc_tb_burst_for(1, 1, 0), 1);
}

const nc_test_case nc_token_bucket_tests[] = {
    {"token_bucket: init rejects out-of-bounds parameters", test_init_rejects_out_of_bounds},
    {"token_bucket: starts full, then refuses", test_starts_full_then_refuses},
    {"token_bucket: backlogged sender gets exactly burst + rate*time (1 B/s .. 100 GB/s)",
     test_accuracy_across_rates},
    {"token_bucket: long idle at extreme rates refills exactly to burst (no 64-bit overflow)",
     test_long_idle_at_extreme_rates_refills_exactly_to_burst},
    {"token_bucket: refill equals the 128-bit oracle for 200000 random states",
     test_refill_matches_oracle_for_random_states},
    {"token_bucket: clock going backwards earns nothing", test_clock_going_backwards_earns_nothing},
    {"token_bucket: oversized packet goes into debt and pays it back",
     test_oversized_packet_goes_into_debt_and_pays_it_back},
    {"token_bucket: ticks_until is the exact wait", test_ticks_until_is_the_exact_wait},
    {"token_bucket: set_rate keeps credit and clips to the new burst",
     test_set_rate_keeps_credit_and_clips_to_new_burst},
    {"token_bucket: burst_for", test_burst_for},
    {0, 0},
};
