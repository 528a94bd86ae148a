/*
 * Token bucket in integer arithmetic, safe against 64-bit overflow after any idle period.
 *
 * The naive refill `tokens += rate * elapsed / ticks_per_second` overflows once rate * elapsed exceeds
 * 2^64: at 10 GB/s with 100 ns ticks that is after about 30 minutes of idle, and the bucket then refills
 * to a garbage (often tiny) level. Here the refill splits elapsed time into whole seconds and a remainder,
 * stops counting whole seconds once the bucket would be full, and keeps the sub-byte remainder so that
 * no credit is lost to rounding however often it is called. No 128-bit math, no floating point (the
 * kernel forbids FP in most contexts), no allocation.
 *
 * Bounds that make every product fit 64 bits: rate <= NC_TB_RATE_MAX, ticks_per_second <= NC_TB_TPS_MAX,
 * burst <= NC_TB_BURST_MAX. nc_tb_init refuses anything outside them.
 */
#ifndef NC_TOKEN_BUCKET_H
#define NC_TOKEN_BUCKET_H

#include <stdint.h>

#include "nc_status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define NC_TB_RATE_MAX 100000000000ull /* bytes/s; equals NETCLAMP_RATE_MAX_BYTES_PER_SEC */
#define NC_TB_TPS_MAX 100000000ull     /* 10 ns ticks at the finest; Windows uses 100 ns */
#define NC_TB_BURST_MAX (1ull << 40)   /* 1 TiB: far above any real burst, far below int64 limits */

typedef struct nc_token_bucket {
    uint64_t rate;             /* bytes per second, >= 1 */
    uint64_t ticks_per_second; /* clock resolution, >= 1 */
    int64_t burst;             /* capacity in bytes, >= 1 */
    /* Whole bytes available. Negative after a packet larger than what was left was let through
     * (see nc_tb_try_consume): the debt is paid back before anything else passes. */
    int64_t tokens;
    /* Credit below one byte, in units of 1/ticks_per_second byte: always < ticks_per_second. */
    uint64_t fraction;
    uint64_t last_ticks;
} nc_token_bucket;

/* Starts full. */
nc_status nc_tb_init(nc_token_bucket *bucket, uint64_t rate, uint64_t burst, uint64_t ticks_per_second,
                     uint64_t now_ticks);

/* Changes rate and burst in place, keeping the credit earned so far (clipped to the new burst). */
nc_status nc_tb_set_rate(nc_token_bucket *bucket, uint64_t rate, uint64_t burst, uint64_t now_ticks);

/* Adds the credit earned since the last call. A clock that goes backwards earns nothing. */
void nc_tb_refill(nc_token_bucket *bucket, uint64_t now_ticks);

/* Refills, then takes `bytes` if the bucket holds them. A packet larger than the whole burst would
 * never fit, so a full bucket lets any packet through and goes into debt for the excess: the long-run
 * rate stays exact either way. Returns 1 if the bytes were taken, 0 if the caller must wait. */
int nc_tb_try_consume(nc_token_bucket *bucket, uint64_t bytes, uint64_t now_ticks);

/* Ticks until nc_tb_try_consume(bytes) would succeed (0 = now), saturating at UINT64_MAX. Does not
 * refill: call after nc_tb_refill or nc_tb_try_consume with the same clock. */
uint64_t nc_tb_ticks_until(const nc_token_bucket *bucket, uint64_t bytes);

/* Burst for a rate and a depth in milliseconds, never below `floor_bytes` (one maximal packet). */
uint64_t nc_tb_burst_for(uint64_t rate, uint32_t burst_ms, uint64_t floor_bytes);

#ifdef __cplusplus
}
#endif

#endif /* NC_TOKEN_BUCKET_H */
