/* Byte-capped per-domain queue with deficit round robin across flows. See nc_queue.h. */
#include "nc_queue.h"

nc_status nc_aq_init(nc_app_queue *queue, uint32_t direction, uint64_t byte_cap, uint32_t quantum)
{
    if (queue == 0 || direction >= NC_DIR_COUNT || byte_cap == 0 || quantum == 0) return NC_E_INVALID_ARGUMENT;
    queue->direction = direction;
    queue->quantum = quantum;
    queue->byte_cap = byte_cap;
    queue->queued_bytes = 0;
    queue->queued_packets = 0;
    queue->active_flows = 0;
    queue->active_head = 0;
    queue->active_tail = 0;
    queue->dropped_packets = 0;
    queue->dropped_bytes = 0;
    return NC_OK;
}

static void nc_aq_append_active(nc_app_queue *queue, nc_flow *flow)
{
    nc_flow_lane *lane = &flow->lanes[queue->direction];
    lane->active_next = 0;
    lane->active_prev = queue->active_tail;
    if (queue->active_tail) queue->active_tail->lanes[queue->direction].active_next = flow;
    else queue->active_head = flow;
    queue->active_tail = flow;
}

static void nc_aq_unlink_active(nc_app_queue *queue, nc_flow *flow)
{
    nc_flow_lane *lane = &flow->lanes[queue->direction];
    if (lane->active_prev) lane->active_prev->lanes[queue->direction].active_next = lane->active_next;
    else queue->active_head = lane->active_next;
    if (lane->active_next) lane->active_next->lanes[queue->direction].active_prev = lane->active_prev;
    else queue->active_tail = lane->active_prev;
    lane->active_next = 0;
    lane->active_prev = 0;
}

/* End of the flow's turn in this round: to the back of the line. */
static void nc_aq_rotate(nc_app_queue *queue, nc_flow *flow)
{
    if (queue->active_tail == flow) return;
    nc_aq_unlink_active(queue, flow);
    nc_aq_append_active(queue, flow);
}

nc_status nc_aq_enqueue(nc_app_queue *queue, nc_flow *flow, nc_packet *packet)
{
    nc_flow_lane *lane;
    if (queue == 0 || flow == 0 || packet == 0 || packet->bytes == 0) return NC_E_INVALID_ARGUMENT;
    lane = &flow->lanes[queue->direction];
    if (lane->queue != 0 && lane->queue != queue) return NC_E_INVALID_ARGUMENT;
    if (packet->bytes > queue->byte_cap - queue->queued_bytes) { /* queued_bytes <= byte_cap always */
        queue->dropped_packets++;
        queue->dropped_bytes += packet->bytes;
        return NC_E_FULL;
    }
    packet->next = 0;
    if (lane->tail) lane->tail->next = packet;
    else lane->head = packet;
    lane->tail = packet;
    lane->queued_bytes += packet->bytes;
    lane->queued_packets++;
    queue->queued_bytes += packet->bytes;
    queue->queued_packets++;
    if (lane->queue == 0) {
        /* A flow joining the round starts without credit, as in DRR: it gets its quantum when its turn
         * comes, which is within one round. */
        lane->queue = queue;
        lane->deficit = 0;
        lane->in_turn = 0;
        nc_aq_append_active(queue, flow);
        queue->active_flows++;
    }
    return NC_OK;
}

static nc_packet *nc_aq_pop_head(nc_app_queue *queue, nc_flow *flow)
{
    nc_flow_lane *lane = &flow->lanes[queue->direction];
    nc_packet *packet = lane->head;
    lane->head = packet->next;
    if (lane->head == 0) lane->tail = 0;
    packet->next = 0;
    lane->queued_bytes -= packet->bytes;
    lane->queued_packets--;
    queue->queued_bytes -= packet->bytes;
    queue->queued_packets--;
    if (lane->head == 0) {
        /* An idle flow keeps no credit: DRR's rule that stops a flow from saving up for a burst. */
        nc_aq_unlink_active(queue, flow);
        lane->queue = 0;
        lane->deficit = 0;
        lane->in_turn = 0;
        queue->active_flows--;
    }
    return packet;
}

nc_packet *nc_aq_dequeue(nc_app_queue *queue, nc_sched_gate gate, void *context, nc_flow **flow_out)
{
    /* Consecutive SKIP verdicts since the last quantum grant. Grants stop once every flow has credit for
     * its head packet, so when every active flow has been skipped in a row, nobody can go. */
    uint32_t skipped_in_a_row = 0;

    if (flow_out) *flow_out = 0;
    while (queue->active_head != 0) {
        nc_flow *flow = queue->active_head;
        nc_flow_lane *lane = &flow->lanes[queue->direction];
        nc_packet *packet = lane->head;
        nc_sched_verdict verdict;

        if (!lane->in_turn) {
            /* Start of the flow's turn: one quantum. Credit stays below quantum + one packet, since a turn
             * ends (below) only when the credit no longer covers the head packet. */
            lane->deficit += queue->quantum;
            lane->in_turn = 1;
            skipped_in_a_row = 0;
        }
        if (lane->deficit < packet->bytes) {
            lane->in_turn = 0; /* turn over; the credit carries to the next round */
            nc_aq_rotate(queue, flow);
            continue;
        }
        verdict = gate ? gate(context, flow, packet) : NC_SCHED_SEND;
        if (verdict == NC_SCHED_STOP) return 0;
        if (verdict == NC_SCHED_SKIP_FLOW) {
            /* Held back by its own limit: to the back of the line, still in its turn, so waiting does not
             * earn it extra quanta. */
            if (++skipped_in_a_row >= queue->active_flows) return 0;
            nc_aq_rotate(queue, flow);
            continue;
        }
        /* SEND: the flow keeps its turn while its credit lasts (it stays at the head). */
        lane->deficit -= packet->bytes;
        packet = nc_aq_pop_head(queue, flow);
        if (flow_out) *flow_out = flow;
        return packet;
    }
    return 0;
}

nc_packet *nc_aq_flush_flow(nc_app_queue *queue, nc_flow *flow)
{
    nc_flow_lane *lane;
    nc_packet *chain;
    if (queue == 0 || flow == 0) return 0;
    lane = &flow->lanes[queue->direction];
    if (lane->queue != queue) return 0;
    chain = lane->head;
    queue->queued_bytes -= lane->queued_bytes;
    queue->queued_packets -= lane->queued_packets;
    nc_aq_unlink_active(queue, flow);
    queue->active_flows--;
    lane->head = 0;
    lane->tail = 0;
    lane->queued_bytes = 0;
    lane->queued_packets = 0;
    lane->deficit = 0;
    lane->in_turn = 0;
    lane->queue = 0;
    return chain;
}

int nc_aq_flow_backlogged(const nc_app_queue *queue, const nc_flow *flow)
{
    return flow->lanes[queue->direction].queue == queue && flow->lanes[queue->direction].head != 0;
}
