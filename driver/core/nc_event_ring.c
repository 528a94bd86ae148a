/* Event ring for the pended READ_EVENTS. See nc_event_ring.h. */
#include <string.h>

#include "nc_event_ring.h"

nc_status nc_ring_init(nc_event_ring *ring, nc_event *slots, uint32_t capacity)
{
    if (ring == 0 || slots == 0 || capacity == 0) return NC_E_INVALID_ARGUMENT;
    ring->slots = slots;
    ring->capacity = capacity;
    ring->head = 0;
    ring->count = 0;
    ring->lost = 0;
    ring->lost_total = 0;
    return NC_OK;
}

nc_status nc_ring_push(nc_event_ring *ring, const nc_event *event)
{
    uint32_t tail;
    if (ring->count == ring->capacity) {
        if (ring->lost != UINT32_MAX) ring->lost++;
        ring->lost_total++;
        return NC_E_FULL;
    }
    tail = (uint32_t)(((uint64_t)ring->head + ring->count) % ring->capacity);
    ring->slots[tail] = *event;
    ring->count++;
    return NC_OK;
}

uint32_t nc_ring_drain(nc_event_ring *ring, void *output, uint32_t output_length)
{
    nc_events_reply reply;
    unsigned char *cursor = (unsigned char *)output;
    uint32_t room, taken = 0;

    if (output == 0 || output_length < sizeof(reply)) return 0;
    room = (uint32_t)((output_length - sizeof(reply)) / sizeof(nc_event));
    cursor += sizeof(reply);
    while (taken < room && ring->count > 0) {
        /* memcpy: the output buffer carries no alignment promise for the records after the header */
        memcpy(cursor, &ring->slots[ring->head], sizeof(nc_event));
        cursor += sizeof(nc_event);
        ring->head = (ring->head + 1) % ring->capacity;
        ring->count--;
        taken++;
    }
    memset(&reply, 0, sizeof reply);
    nc_msg_header_init(&reply.header, (uint16_t)sizeof reply);
    reply.count = taken;
    reply.lost = ring->lost;
    ring->lost = 0;
    memcpy(output, &reply, sizeof reply);
    return (uint32_t)(sizeof reply + (uint64_t)taken * sizeof(nc_event));
}
