/* Token bucket: see nc_token_bucket.h for why the refill is shaped the way it is. */
#include "nc_token_bucket.h"

static int nc_tb_params_valid(uint64_t rate, uint64_t burst, uint64_t ticks_per_second)
{
    return rate >= 1 && rate <= NC_TB_RATE_MAX && burst >= 1 && burst <= NC_TB_BURST_MAX &&
           ticks_per_second >= 1 && ticks_per_second <= NC_TB_TPS_MAX;
}

nc_status nc_tb_init(nc_token_bucket *bucket, uint64_t rate, uint64_t burst, uint64_t ticks_per_second,
                     uint64_t now_ticks)
{
    if (bucket == 0 || !nc_tb_params_valid(rate, burst, ticks_per_second)) return NC_E_INVALID_ARGUMENT;
    bucket->rate = rate;
    bucket->ticks_per_second = ticks_per_second;
    bucket->burst = (int64_t)burst;
    bucket->tokens = (int64_t)burst;
    bucket->fraction = 0;
    bucket->last_ticks = now_ticks;
    return NC_OK;
}

nc_status nc_tb_set_rate(nc_token_bucket *bucket, uint64_t rate, uint64_t burst, uint64_t now_ticks)
{
    if (bucket == 0 || !nc_tb_params_valid(rate, burst, bucket->ticks_per_second)) return NC_E_INVALID_ARGUMENT;
    nc_tb_refill(bucket, now_ticks); /* credit earned so far was earned at the old rate */
    bucket->rate = rate;
    bucket->burst = (int64_t)burst;
    if (bucket->tokens >= bucket->burst) {
        bucket->tokens = bucket->burst;
        bucket->fraction = 0;
    }
    return NC_OK;
}

void nc_tb_refill(nc_token_bucket *bucket, uint64_t now_ticks)
{
    uint64_t elapsed, whole_seconds, rest_ticks, deficit, gained, scaled;

    if (now_ticks <= bucket->last_ticks) return; /* no time passed, or the clock stepped back */
    elapsed = now_ticks - bucket->last_ticks;
    bucket->last_ticks = now_ticks;

    if (bucket->tokens >= bucket->burst) {
        bucket->fraction = 0;
        return;
    }
    /* tokens may be negative (debt): deficit <= burst + one maximal packet, < 2^42. */
    deficit = (uint64_t)(bucket->burst - bucket->tokens);

    whole_seconds = elapsed / bucket->ticks_per_second;
    rest_ticks = elapsed % bucket->ticks_per_second;
    /* The overflow guard: once the whole seconds alone fill the bucket, stop multiplying. Past this test
     * whole_seconds * rate <= deficit, so the product fits. */
    if (whole_seconds > deficit / bucket->rate) {
        bucket->tokens = bucket->burst;
        bucket->fraction = 0;
        return;
    }
    gained = whole_seconds * bucket->rate;
    /* rate * rest_ticks + fraction < rate * ticks_per_second <= 1e11 * 1e8 = 1e19 < 2^64. */
    scaled = bucket->rate * rest_ticks + bucket->fraction;
    gained += scaled / bucket->ticks_per_second;
    bucket->fraction = scaled % bucket->ticks_per_second;

    if (gained >= deficit) {
        bucket->tokens = bucket->burst;
        bucket->fraction = 0;
    } else {
        bucket->tokens += (int64_t)gained;
    }
}

int nc_tb_try_consume(nc_token_bucket *bucket, uint64_t bytes, uint64_t now_ticks)
{
    nc_tb_refill(bucket, now_ticks);
    if (bytes == 0) return 1;
    if (bytes > NC_TB_BURST_MAX) return 0; /* not a packet: refuse rather than overflow the debt */
    if (bucket->tokens >= (int64_t)bytes || bucket->tokens >= bucket->burst) {
        bucket->tokens -= (int64_t)bytes;
        return 1;
    }
    return 0;
}

uint64_t nc_tb_ticks_until(const nc_token_bucket *bucket, uint64_t bytes)
{
    uint64_t target, needed, whole, part, tps, ticks, part_ticks, numerator;

    if (bytes > NC_TB_BURST_MAX) return UINT64_MAX;
    /* A packet larger than the burst needs a full bucket, no more. */
    target = bytes < (uint64_t)bucket->burst ? bytes : (uint64_t)bucket->burst;
    if (bucket->tokens >= (int64_t)target) return 0;
    needed = (uint64_t)((int64_t)target - bucket->tokens);
    tps = bucket->ticks_per_second;

    /* ticks = ceil((needed * tps - fraction) / rate), computed without forming needed * tps. */
    whole = needed / bucket->rate;
    part = needed % bucket->rate;
    if (whole > UINT64_MAX / tps) return UINT64_MAX;
    ticks = whole * tps;
    numerator = part * tps; /* part < rate: fits, as in the refill */
    if (numerator >= bucket->fraction) {
        part_ticks = (numerator - bucket->fraction + bucket->rate - 1) / bucket->rate;
        if (ticks > UINT64_MAX - part_ticks) return UINT64_MAX;
        return ticks + part_ticks;
    }
    /* part == 0 here (part * tps < fraction < tps), so whole >= 1 and the fraction shortens the wait. */
    return ticks - bucket->fraction / bucket->rate;
}

uint64_t nc_tb_burst_for(uint64_t rate, uint32_t burst_ms, uint64_t floor_bytes)
{
    /* rate * ms / 1000 in two parts so that neither product can overflow for any u32 ms. */
    uint64_t burst = (rate / 1000) * burst_ms + ((rate % 1000) * burst_ms) / 1000;
    if (burst < floor_bytes) burst = floor_bytes;
    if (burst > NC_TB_BURST_MAX) burst = NC_TB_BURST_MAX;
    if (burst < 1) burst = 1;
    return burst;
}
