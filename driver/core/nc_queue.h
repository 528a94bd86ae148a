/*
 * One shaping domain's packet queue (one app budget, one direction) and its scheduler.
 *
 * Packets the bucket cannot pass right now are held here, per flow in FIFO order, under a byte cap for
 * the whole queue (a full queue drops: TCP backs off, UDP loses, memory stays bounded). The timer or
 * worker that re-injects drains it with deficit round robin across the domain's flows, so one bulk flow
 * cannot starve a small one of the same app, whatever their packet sizes.
 *
 * The caller decides, per packet, whether it may go now through a gate callback: the gate checks the
 * flow's own limit (SKIP this flow if exhausted) and the domain's bucket (STOP if exhausted), and takes
 * the tokens when it answers SEND.
 *
 * Ordering rule for the caller (classify): a packet of a flow that already has packets queued in this
 * direction must be queued too (nc_aq_flow_backlogged), or it would overtake them.
 */
#ifndef NC_QUEUE_H
#define NC_QUEUE_H

#include <stdint.h>

#include "nc_flow_table.h"
#include "nc_status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct nc_app_queue {
    uint32_t direction; /* NC_DIR_* : which lane of each flow this queue uses */
    uint32_t quantum;   /* DRR bytes granted per flow per round */
    uint64_t byte_cap;
    uint64_t queued_bytes;
    uint32_t queued_packets;
    uint32_t active_flows;
    nc_flow *active_head; /* flows with packets queued here, in round order */
    nc_flow *active_tail;
    uint64_t dropped_packets; /* refused by the cap */
    uint64_t dropped_bytes;
} nc_app_queue;

typedef enum nc_sched_verdict {
    NC_SCHED_SEND = 0,  /* take this packet now (the gate has consumed its tokens) */
    NC_SCHED_SKIP_FLOW, /* this flow may not send now; serve others */
    NC_SCHED_STOP       /* nothing in this queue may send now */
} nc_sched_verdict;

typedef nc_sched_verdict (*nc_sched_gate)(void *context, nc_flow *flow, const nc_packet *packet);

/* quantum >= 1 (use at least one maximal packet to keep rounds short); byte_cap >= 1. */
nc_status nc_aq_init(nc_app_queue *queue, uint32_t direction, uint64_t byte_cap, uint32_t quantum);

/* Appends a packet (bytes >= 1) to the flow's FIFO. NC_E_FULL when it would exceed the byte cap (the
 * caller drops it; counted in dropped_*), NC_E_INVALID_ARGUMENT when the flow is queued in another queue
 * or the packet is empty. */
nc_status nc_aq_enqueue(nc_app_queue *queue, nc_flow *flow, nc_packet *packet);

/* The next packet DRR serves, removed from the queue, or NULL when the queue is empty or the gate says
 * nothing may go. *flow_out (optional) receives its flow. */
nc_packet *nc_aq_dequeue(nc_app_queue *queue, nc_sched_gate gate, void *context, nc_flow **flow_out);

/* Detaches every packet of the flow from the queue (flow deleted, limit removed) and returns them as a
 * chain through nc_packet.next for the caller to re-inject or free. */
nc_packet *nc_aq_flush_flow(nc_app_queue *queue, nc_flow *flow);

int nc_aq_flow_backlogged(const nc_app_queue *queue, const nc_flow *flow);

#ifdef __cplusplus
}
#endif

#endif /* NC_QUEUE_H */
