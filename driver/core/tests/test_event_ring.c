/* Event ring: order, wrap-around, partial drains, and the lost count when the client falls behind. */
#include <string.h>

#include "../nc_event_ring.h"
#include "nc_test.h"

static nc_event make_event(uint64_t sequence)
{
    nc_event event;
    memset(&event, 0, sizeof event);
    event.type = NETCLAMP_EVENT_FLOW_ESTABLISHED;
    event.flow_id = sequence;
    event.timestamp_100ns = sequence * 10;
    return event;
}

static void test_drain_returns_events_in_order_across_wraps(void)
{
    nc_event slots[5];
    nc_event_ring ring;
    unsigned char output[sizeof(nc_events_reply) + 3 * sizeof(nc_event)];
    uint64_t next_pushed = 1, next_expected = 1;
    unsigned round;
    CHECK_STATUS(nc_ring_init(&ring, slots, 5), NC_OK);
    for (round = 0; round < 50; round++) {
        nc_events_reply reply;
        uint32_t written, i, pushes = 1 + round % 4;
        for (i = 0; i < pushes; i++) {
            nc_event event = make_event(next_pushed);
            if (nc_ring_push(&ring, &event) == NC_OK) next_pushed++;
        }
        written = nc_ring_drain(&ring, output, sizeof output);
        memcpy(&reply, output, sizeof reply);
        CHECK(reply.header.magic == NETCLAMP_MAGIC && reply.header.length == sizeof reply);
        CHECK_EQ_U64(written, sizeof reply + reply.count * sizeof(nc_event));
        CHECK(reply.count <= 3);
        for (i = 0; i < reply.count; i++) {
            nc_event event;
            memcpy(&event, output + sizeof reply + i * sizeof(nc_event), sizeof event);
            CHECK_EQ_U64(event.flow_id, next_expected);
            next_expected++;
        }
    }
    CHECK(next_expected > 40); /* the run did move a lot of events through 5 slots */
}

static void test_full_ring_drops_new_events_and_reports_them(void)
{
    nc_event slots[4];
    nc_event_ring ring;
    unsigned char output[sizeof(nc_events_reply) + 8 * sizeof(nc_event)];
    nc_events_reply reply;
    nc_event first;
    uint64_t i;
    CHECK_STATUS(nc_ring_init(&ring, slots, 4), NC_OK);
    for (i = 1; i <= 10; i++) {
        nc_event event = make_event(i);
        CHECK_STATUS(nc_ring_push(&ring, &event), i <= 4 ? NC_OK : NC_E_FULL);
    }
    CHECK_EQ_U64(nc_ring_drain(&ring, output, sizeof output), sizeof reply + 4 * sizeof(nc_event));
    memcpy(&reply, output, sizeof reply);
    memcpy(&first, output + sizeof reply, sizeof first);
    CHECK_EQ_U64(reply.count, 4);
    CHECK_EQ_U64(reply.lost, 6);
    CHECK_EQ_U64(first.flow_id, 1); /* the oldest survive: the client reads a gap-free prefix */
    CHECK_EQ_U64(nc_ring_drain(&ring, output, sizeof output), sizeof reply);
    memcpy(&reply, output, sizeof reply);
    CHECK_EQ_U64(reply.count, 0);
    CHECK_EQ_U64(reply.lost, 0); /* reported once */
    CHECK_EQ_U64(ring.lost_total, 6);
}

static void test_drain_refuses_a_buffer_without_room_for_the_reply(void)
{
    nc_event slots[2];
    nc_event_ring ring;
    unsigned char output[sizeof(nc_events_reply)];
    nc_event event = make_event(7);
    CHECK_STATUS(nc_ring_init(&ring, slots, 2), NC_OK);
    CHECK_STATUS(nc_ring_push(&ring, &event), NC_OK);
    CHECK_EQ_U64(nc_ring_drain(&ring, output, sizeof output - 1), 0);
    CHECK_EQ_U64(nc_ring_drain(&ring, 0, 100), 0);
    CHECK_EQ_U64(ring.count, 1); /* nothing was taken */
    CHECK_STATUS(nc_ring_init(&ring, slots, 0), NC_E_INVALID_ARGUMENT);
}

const nc_test_case nc_event_ring_tests[] = {
    {"event_ring: drains in order across wrap-arounds", test_drain_returns_events_in_order_across_wraps},
    {"event_ring: a full ring drops new events and reports them once", test_full_ring_drops_new_events_and_reports_them},
    {"event_ring: drain refuses a buffer without room for the reply", test_drain_refuses_a_buffer_without_room_for_the_reply},
    {0, 0},
};
