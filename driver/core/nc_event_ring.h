/*
 * Driver events waiting for the client's pended READ_EVENTS: a fixed ring in caller-provided storage.
 *
 * When the client falls behind, new events are dropped (not old ones overwritten), so what it does read is
 * a gap-free prefix, and the next reply's `lost` says how many were dropped: the service then knows to
 * re-read state (counters, status) instead of trusting its event-built picture.
 */
#ifndef NC_EVENT_RING_H
#define NC_EVENT_RING_H

#include <stdint.h>

#include "../include/netclamp_ioctl.h"
#include "nc_status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct nc_event_ring {
    nc_event *slots;
    uint32_t capacity;
    uint32_t head;  /* oldest queued event */
    uint32_t count;
    uint32_t lost;  /* dropped since the last drain */
    uint64_t lost_total;
} nc_event_ring;

nc_status nc_ring_init(nc_event_ring *ring, nc_event *slots, uint32_t capacity);

/* Queues a copy of the event; NC_E_FULL (and counted as lost) when the ring is full. */
nc_status nc_ring_push(nc_event_ring *ring, const nc_event *event);

/* Fills a READ_EVENTS output buffer (already validated: an nc_events_reply followed by whole nc_event
 * records) with as many queued events as fit, oldest first, and the lost count; resets the lost count.
 * Returns the number of bytes written (the reply header plus the events), which is what the IRP's
 * information field must carry. */
uint32_t nc_ring_drain(nc_event_ring *ring, void *output, uint32_t output_length);

#ifdef __cplusplus
}
#endif

#endif /* NC_EVENT_RING_H */
