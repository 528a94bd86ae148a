/* Per-app queue: byte cap, FIFO order, DRR fairness (Jain index), gates, flush, and the scheduler driving
 * token buckets the way the driver's re-injection timer will. */
#include <string.h>

#include "../nc_queue.h"
#include "nc_test.h"

#define TPS 10000000ull
#define MAX_FLOWS 16u
#define PACKETS_PER_FLOW 64u

static nc_flow test_flows[MAX_FLOWS];
static nc_packet packet_pool[MAX_FLOWS][PACKETS_PER_FLOW];

static void reset_flows(void)
{
    uint32_t i;
    memset(test_flows, 0, sizeof test_flows);
    memset(packet_pool, 0, sizeof packet_pool);
    for (i = 0; i < MAX_FLOWS; i++) test_flows[i].flow_id = 1000 + i;
}

static double jain_index(const uint64_t *shares, uint32_t count)
{
    double sum = 0, sum_squares = 0;
    uint32_t i;
    for (i = 0; i < count; i++) {
        sum += (double)shares[i];
        sum_squares += (double)shares[i] * (double)shares[i];
    }
    return sum_squares == 0 ? 0 : (sum * sum) / (count * sum_squares);
}

static void test_init_rejects_bad_parameters(void)
{
    nc_app_queue queue;
    CHECK_STATUS(nc_aq_init(&queue, 2, 1000, 1500), NC_E_INVALID_ARGUMENT);
    CHECK_STATUS(nc_aq_init(&queue, NC_DIR_OUTBOUND, 0, 1500), NC_E_INVALID_ARGUMENT);
    CHECK_STATUS(nc_aq_init(&queue, NC_DIR_OUTBOUND, 1000, 0), NC_E_INVALID_ARGUMENT);
    CHECK_STATUS(nc_aq_init(0, NC_DIR_OUTBOUND, 1000, 1500), NC_E_INVALID_ARGUMENT);
}

static void test_byte_cap_is_never_exceeded(void)
{
    nc_app_queue queue;
    nc_packet big = {0, 10001, 0}, empty = {0, 0, 0};
    uint32_t i, accepted = 0;
    reset_flows();
    CHECK_STATUS(nc_aq_init(&queue, NC_DIR_OUTBOUND, 10000, 1500), NC_OK);
    for (i = 0; i < 10; i++) { /* exactly the cap: 10 x 1000 */
        packet_pool[i % 3][i].bytes = 1000;
        if (nc_aq_enqueue(&queue, &test_flows[i % 3], &packet_pool[i % 3][i]) == NC_OK) accepted++;
    }
    CHECK_EQ_U64(accepted, 10);
    CHECK_EQ_U64(queue.queued_bytes, 10000);
    packet_pool[5][0].bytes = 1;
    CHECK_STATUS(nc_aq_enqueue(&queue, &test_flows[5], &packet_pool[5][0]), NC_E_FULL);
    CHECK_EQ_U64(queue.dropped_packets, 1);
    CHECK_EQ_U64(queue.dropped_bytes, 1);
    CHECK_EQ_U64(queue.queued_bytes, 10000);
    CHECK(test_flows[5].lanes[NC_DIR_OUTBOUND].queue == 0); /* a refused packet does not activate its flow */
    CHECK(nc_aq_dequeue(&queue, 0, 0, 0) != 0);
    CHECK_EQ_U64(queue.queued_bytes, 9000);
    CHECK_STATUS(nc_aq_enqueue(&queue, &test_flows[5], &packet_pool[5][0]), NC_OK);
    CHECK_STATUS(nc_aq_enqueue(&queue, &test_flows[6], &big), NC_E_FULL); /* larger than the whole cap */
    CHECK_STATUS(nc_aq_enqueue(&queue, &test_flows[6], &empty), NC_E_INVALID_ARGUMENT);
    CHECK(queue.queued_bytes <= queue.byte_cap);
}

static void test_random_traffic_respects_cap_and_accounting(void)
{
    nc_app_queue queue;
    uint64_t offered = 0, dequeued = 0, dropped = 0;
    uint32_t step, used[MAX_FLOWS] = {0};
    reset_flows();
    CHECK_STATUS(nc_aq_init(&queue, NC_DIR_INBOUND, 50000, 9000), NC_OK);
    for (step = 0; step < 200000; step++) {
        uint32_t f = (uint32_t)(nc_test_random() % MAX_FLOWS);
        if (nc_test_random() % 3 != 0 && used[f] < PACKETS_PER_FLOW) {
            /* packets are recycled once dequeued: find a free one of this flow by index */
            nc_packet *packet = &packet_pool[f][used[f]];
            packet->bytes = 1 + (uint32_t)(nc_test_random() % 9000);
            offered += packet->bytes;
            if (nc_aq_enqueue(&queue, &test_flows[f], packet) == NC_OK) used[f]++;
            else dropped += packet->bytes;
        } else {
            nc_flow *flow;
            nc_packet *packet = nc_aq_dequeue(&queue, 0, 0, &flow);
            if (packet) {
                uint32_t owner = (uint32_t)(flow - test_flows);
                dequeued += packet->bytes;
                /* FIFO per flow and slots reused LIFO would break order; the model keeps it simple: a
                 * flow's slots are reused only when it has drained completely. */
                if (flow->lanes[NC_DIR_INBOUND].queued_packets == 0) used[owner] = 0;
            }
        }
        if (queue.queued_bytes > queue.byte_cap) { CHECK(!"cap exceeded"); return; }
    }
    CHECK_EQ_U64(offered, dequeued + dropped + queue.queued_bytes);
    CHECK_EQ_U64(dropped, queue.dropped_bytes);
    CHECK(dropped > 0); /* the run did push against the cap */
}

static void test_fifo_within_a_flow(void)
{
    nc_app_queue queue;
    uint32_t i;
    reset_flows();
    CHECK_STATUS(nc_aq_init(&queue, NC_DIR_OUTBOUND, 1u << 20, 1500), NC_OK);
    for (i = 0; i < 20; i++) {
        packet_pool[0][i].bytes = 100 + i;
        CHECK_STATUS(nc_aq_enqueue(&queue, &test_flows[0], &packet_pool[0][i]), NC_OK);
    }
    CHECK(nc_aq_flow_backlogged(&queue, &test_flows[0]));
    for (i = 0; i < 20; i++) CHECK(nc_aq_dequeue(&queue, 0, 0, 0) == &packet_pool[0][i]);
    CHECK(nc_aq_dequeue(&queue, 0, 0, 0) == 0);
    CHECK(!nc_aq_flow_backlogged(&queue, &test_flows[0]));
    CHECK_EQ_U64(queue.active_flows, 0);
    CHECK_EQ_U64(queue.queued_packets, 0);
}

/* All flows backlogged with very different packet sizes: DRR gives each the same bytes. */
static void test_drr_fairness_across_packet_sizes(void)
{
    static const uint32_t sizes[] = {64, 200, 576, 1500, 1500, 9000, 16000, 65535};
    enum { FLOWS = sizeof sizes / sizeof sizes[0] };
    nc_app_queue queue;
    uint64_t served[FLOWS] = {0}, total = 0, most = 0, least = UINT64_MAX;
    uint32_t i;
    double jain;
    reset_flows();
    CHECK_STATUS(nc_aq_init(&queue, NC_DIR_OUTBOUND, 1u << 30, 65535), NC_OK);
    for (i = 0; i < FLOWS; i++) {
        uint32_t p;
        for (p = 0; p < 4; p++) {
            packet_pool[i][p].bytes = sizes[i];
            CHECK_STATUS(nc_aq_enqueue(&queue, &test_flows[i], &packet_pool[i][p]), NC_OK);
        }
    }
    while (total < 200ull * 1000 * 1000) {
        nc_flow *flow;
        nc_packet *packet = nc_aq_dequeue(&queue, 0, 0, &flow);
        uint32_t owner;
        if (packet == 0) { CHECK(!"backlogged queue returned nothing"); return; }
        owner = (uint32_t)(flow - test_flows);
        served[owner] += packet->bytes;
        total += packet->bytes;
        CHECK_STATUS(nc_aq_enqueue(&queue, flow, packet), NC_OK); /* keep every flow backlogged */
    }
    for (i = 0; i < FLOWS; i++) {
        if (served[i] > most) most = served[i];
        if (served[i] < least) least = served[i];
    }
    jain = jain_index(served, FLOWS);
    printf("    DRR over %u flows, packets 64..65535 B, %llu MB served: Jain %.6f, max/min %.4f\n", (unsigned)FLOWS,
           (unsigned long long)(total / 1000000), jain, (double)most / (double)least);
    CHECK(jain > 0.999);
    CHECK((double)most / (double)least < 1.01);
}

/* Per-connection limit inside an app budget, driven like the driver's re-injection timer. */
typedef struct gate_state {
    nc_token_bucket app_bucket;
    uint64_t now;
} gate_state;

static nc_sched_verdict limit_gate(void *context, nc_flow *flow, const nc_packet *packet)
{
    gate_state *state = (gate_state *)context;
    nc_flow_lane *lane = &flow->lanes[NC_DIR_OUTBOUND];
    /* Check both before taking from either, so a refusal costs no tokens. */
    nc_tb_refill(&state->app_bucket, state->now);
    if (nc_tb_ticks_until(&state->app_bucket, packet->bytes) != 0) return NC_SCHED_STOP;
    if (lane->has_limit) {
        nc_tb_refill(&lane->limit, state->now);
        if (nc_tb_ticks_until(&lane->limit, packet->bytes) != 0) return NC_SCHED_SKIP_FLOW;
        nc_tb_try_consume(&lane->limit, packet->bytes, state->now);
    }
    nc_tb_try_consume(&state->app_bucket, packet->bytes, state->now);
    return NC_SCHED_SEND;
}

static void test_scheduler_with_app_and_connection_limits(void)
{
    enum { FLOWS = 4 };
    const uint64_t app_rate = 10000000, limited_rate = 1000000, seconds = 20;
    nc_app_queue queue;
    gate_state state;
    uint64_t served[FLOWS] = {0}, total = 0;
    uint32_t i;
    reset_flows();
    CHECK_STATUS(nc_aq_init(&queue, NC_DIR_OUTBOUND, 1u << 30, 1500), NC_OK);
    CHECK_STATUS(nc_tb_init(&state.app_bucket, app_rate, 15000, TPS, 0), NC_OK);
    CHECK_STATUS(nc_tb_init(&test_flows[0].lanes[NC_DIR_OUTBOUND].limit, limited_rate, 3000, TPS, 0), NC_OK);
    test_flows[0].lanes[NC_DIR_OUTBOUND].has_limit = 1;
    for (i = 0; i < FLOWS; i++) {
        uint32_t p;
        for (p = 0; p < 8; p++) {
            packet_pool[i][p].bytes = 1500;
            CHECK_STATUS(nc_aq_enqueue(&queue, &test_flows[i], &packet_pool[i][p]), NC_OK);
        }
    }
    /* a 1 ms timer, as the driver will run */
    for (state.now = 0; state.now <= seconds * TPS; state.now += TPS / 1000) {
        nc_flow *flow;
        nc_packet *packet;
        while ((packet = nc_aq_dequeue(&queue, limit_gate, &state, &flow)) != 0) {
            served[flow - test_flows] += packet->bytes;
            total += packet->bytes;
            CHECK_STATUS(nc_aq_enqueue(&queue, flow, packet), NC_OK);
        }
    }
    printf("    app 10 MB/s, flow 0 capped at 1 MB/s, 20 s: flow0 %.3f MB/s, others %.3f/%.3f/%.3f, total %.3f\n",
           served[0] / 20e6, served[1] / 20e6, served[2] / 20e6, served[3] / 20e6, total / 20e6);
    /* exact bounds: budget + one burst, minus at most one packet of rounding per flow */
    CHECK(total <= app_rate * seconds + 15000 && total + 1500 * FLOWS >= app_rate * seconds);
    CHECK(served[0] <= limited_rate * seconds + 3000 && served[0] + 1500 >= limited_rate * seconds);
    for (i = 1; i < FLOWS; i++) {
        double share = (double)served[i] / (double)(total - served[0]);
        CHECK(share > 0.33 && share < 0.34); /* the rest is split evenly */
    }
}

static nc_sched_verdict skip_all_gate(void *context, nc_flow *flow, const nc_packet *packet)
{
    (void)flow;
    (void)packet;
    ++*(uint32_t *)context;
    return NC_SCHED_SKIP_FLOW;
}

static nc_sched_verdict stop_gate(void *context, nc_flow *flow, const nc_packet *packet)
{
    (void)context;
    (void)flow;
    (void)packet;
    return NC_SCHED_STOP;
}

static void test_gates_stop_without_losing_packets(void)
{
    nc_app_queue queue;
    uint32_t i, asked = 0;
    reset_flows();
    CHECK_STATUS(nc_aq_init(&queue, NC_DIR_OUTBOUND, 1u << 20, 1500), NC_OK);
    for (i = 0; i < 5; i++) {
        packet_pool[i][0].bytes = 1000;
        CHECK_STATUS(nc_aq_enqueue(&queue, &test_flows[i], &packet_pool[i][0]), NC_OK);
    }
    CHECK(nc_aq_dequeue(&queue, stop_gate, 0, 0) == 0);
    CHECK(nc_aq_dequeue(&queue, skip_all_gate, &asked, 0) == 0);
    /* every flow asked, none more than twice (once while the round's quanta are handed out), then it gives
     * up instead of spinning */
    CHECK(asked >= 5 && asked <= 10);
    CHECK_EQ_U64(queue.queued_packets, 5);
    CHECK_EQ_U64(queue.queued_bytes, 5000);
    for (i = 0; i < 5; i++) CHECK(nc_aq_dequeue(&queue, 0, 0, 0) != 0);
    CHECK(nc_aq_dequeue(&queue, 0, 0, 0) == 0);
}

static void test_new_flow_is_served_within_one_round(void)
{
    nc_app_queue queue;
    uint32_t i, p, before = 0;
    nc_flow *flow;
    nc_packet *packet;
    reset_flows();
    CHECK_STATUS(nc_aq_init(&queue, NC_DIR_OUTBOUND, 1u << 30, 1500), NC_OK);
    for (i = 0; i < 7; i++) {
        for (p = 0; p < 32; p++) {
            packet_pool[i][p].bytes = 1500;
            CHECK_STATUS(nc_aq_enqueue(&queue, &test_flows[i], &packet_pool[i][p]), NC_OK);
        }
    }
    for (i = 0; i < 20; i++) nc_aq_dequeue(&queue, 0, 0, 0); /* bulk flows mid-round */
    packet_pool[7][0].bytes = 60; /* an interactive packet (a keystroke, a DNS reply) */
    CHECK_STATUS(nc_aq_enqueue(&queue, &test_flows[7], &packet_pool[7][0]), NC_OK);
    while ((packet = nc_aq_dequeue(&queue, 0, 0, &flow)) != 0 && flow != &test_flows[7]) before++;
    CHECK(flow == &test_flows[7]);
    CHECK(before <= 7); /* at most one packet from each bulk flow goes first */
}

static void test_flush_flow_returns_its_packets_in_order(void)
{
    nc_app_queue queue;
    nc_packet *chain;
    uint32_t i;
    reset_flows();
    CHECK_STATUS(nc_aq_init(&queue, NC_DIR_INBOUND, 1u << 20, 1500), NC_OK);
    for (i = 0; i < 6; i++) {
        packet_pool[i % 2][i].bytes = 100;
        CHECK_STATUS(nc_aq_enqueue(&queue, &test_flows[i % 2], &packet_pool[i % 2][i]), NC_OK);
    }
    chain = nc_aq_flush_flow(&queue, &test_flows[1]);
    CHECK(chain == &packet_pool[1][1] && chain->next == &packet_pool[1][3] && chain->next->next == &packet_pool[1][5]);
    CHECK(chain->next->next->next == 0);
    CHECK_EQ_U64(queue.queued_bytes, 300);
    CHECK_EQ_U64(queue.queued_packets, 3);
    CHECK_EQ_U64(queue.active_flows, 1);
    CHECK(nc_aq_flush_flow(&queue, &test_flows[1]) == 0); /* flushing twice is harmless */
    for (i = 0; i < 3; i++) CHECK(nc_aq_dequeue(&queue, 0, 0, 0) == &packet_pool[0][i * 2]);
    CHECK(nc_aq_dequeue(&queue, 0, 0, 0) == 0);
}

static void test_flow_cannot_join_two_queues_in_one_direction(void)
{
    nc_app_queue first, second, inbound;
    reset_flows();
    CHECK_STATUS(nc_aq_init(&first, NC_DIR_OUTBOUND, 1u << 20, 1500), NC_OK);
    CHECK_STATUS(nc_aq_init(&second, NC_DIR_OUTBOUND, 1u << 20, 1500), NC_OK);
    CHECK_STATUS(nc_aq_init(&inbound, NC_DIR_INBOUND, 1u << 20, 1500), NC_OK);
    packet_pool[0][0].bytes = packet_pool[0][1].bytes = packet_pool[0][2].bytes = 100;
    CHECK_STATUS(nc_aq_enqueue(&first, &test_flows[0], &packet_pool[0][0]), NC_OK);
    CHECK_STATUS(nc_aq_enqueue(&second, &test_flows[0], &packet_pool[0][1]), NC_E_INVALID_ARGUMENT);
    CHECK_STATUS(nc_aq_enqueue(&inbound, &test_flows[0], &packet_pool[0][2]), NC_OK); /* other lane */
}

const nc_test_case nc_queue_tests[] = {
    {"queue: init rejects bad parameters", test_init_rejects_bad_parameters},
    {"queue: byte cap is never exceeded", test_byte_cap_is_never_exceeded},
    {"queue: 200000 random operations keep cap and byte accounting", test_random_traffic_respects_cap_and_accounting},
    {"queue: FIFO within a flow", test_fifo_within_a_flow},
    {"queue: DRR fairness across packet sizes (Jain index)", test_drr_fairness_across_packet_sizes},
    {"queue: scheduler with app and per-connection token buckets", test_scheduler_with_app_and_connection_limits},
    {"queue: STOP and all-SKIP gates return without losing packets", test_gates_stop_without_losing_packets},
    {"queue: a new flow is served within one round", test_new_flow_is_served_within_one_round},
    {"queue: flush_flow returns its packets in order", test_flush_flow_returns_its_packets_in_order},
    {"queue: a flow cannot join two queues in one direction", test_flow_cannot_join_two_queues_in_one_direction},
    {0, 0},
};
