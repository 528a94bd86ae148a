/*
 * shaper.c - the data path: flow association, transport classify (pass / clone-absorb-queue), the
 * re-injection timer, and the limits the IOCTLs set. All decisions are the core's; this file holds locks
 * and NET_BUFFER_LISTs.
 *
 * Locking: g_nc.shaper_lock (in-stack queued spin lock, DISPATCH_LEVEL) guards the flow table, rules,
 * domains, queues and the packet pool. Cloning, injecting, freeing clones and FwpsFlow* calls happen with
 * it released. Nothing here allocates except FwpsAllocateCloneNetBufferList0 in classify.
 */
#include "nc_driver.h"

#define NC_ASSOC_OUTBOUND 0x1u
#define NC_ASSOC_INBOUND 0x2u

typedef enum nc_admit { NC_ADMIT_PASS, NC_ADMIT_HOLD } nc_admit;

typedef struct nc_gate_context {
    nc_domain *domain;
    UINT32 direction;
    UINT64 now;
    UINT64 min_wait; /* smallest wait a refusal reported, UINT64 max when none */
} nc_gate_context;

static void NTAPI nc_inject_complete(void *context, NET_BUFFER_LIST *net_buffer_list, BOOLEAN dispatch_level);

/* ---- setup and teardown ---- */

static void *nc_alloc_zeroed(SIZE_T bytes)
{
    return ExAllocatePool2(POOL_FLAG_NON_PAGED, bytes, NC_POOL_TAG);
}

NTSTATUS nc_shaper_init(void)
{
    UINT32 i;
    g_nc.flow_pool = (nc_flow *)nc_alloc_zeroed(sizeof(nc_flow) * NC_FLOW_CAPACITY);
    g_nc.flow_index = (UINT32 *)nc_alloc_zeroed(sizeof(UINT32) * NC_FLOW_INDEX_SIZE);
    g_nc.flow_glue = (nc_flow_glue *)nc_alloc_zeroed(sizeof(nc_flow_glue) * NC_FLOW_CAPACITY);
    g_nc.rules = (nc_rule_slot *)nc_alloc_zeroed(sizeof(nc_rule_slot) * NC_MAX_RULES);
    g_nc.domains = (nc_domain *)nc_alloc_zeroed(sizeof(nc_domain) * NC_MAX_DOMAINS);
    g_nc.packet_pool = (nc_held_packet *)nc_alloc_zeroed(sizeof(nc_held_packet) * NC_PACKET_POOL);
    g_nc.event_slots = (nc_event *)nc_alloc_zeroed(sizeof(nc_event) * NC_EVENT_RING_SIZE);
    if (g_nc.flow_pool == NULL || g_nc.flow_index == NULL || g_nc.flow_glue == NULL || g_nc.rules == NULL ||
        g_nc.domains == NULL || g_nc.packet_pool == NULL || g_nc.event_slots == NULL) {
        return STATUS_INSUFFICIENT_RESOURCES;
    }
    if (nc_ft_init(&g_nc.flow_table, g_nc.flow_pool, NC_FLOW_CAPACITY, g_nc.flow_index, NC_FLOW_INDEX_SIZE) !=
            NC_OK ||
        nc_ring_init(&g_nc.events, g_nc.event_slots, NC_EVENT_RING_SIZE) != NC_OK) {
        return STATUS_INTERNAL_ERROR;
    }
    for (i = 0; i < NC_FLOW_CAPACITY; i++) {
        g_nc.flow_pool[i].driver_context = &g_nc.flow_glue[i];
    }
    for (i = 0; i < NC_PACKET_POOL; i++) {
        g_nc.packet_pool[i].next_free = (i + 1 < NC_PACKET_POOL) ? &g_nc.packet_pool[i + 1] : NULL;
    }
    g_nc.packet_free = &g_nc.packet_pool[0];
    return STATUS_SUCCESS;
}

void nc_shaper_free(void)
{
    void **blocks[] = {(void **)&g_nc.flow_pool, (void **)&g_nc.flow_index, (void **)&g_nc.flow_glue,
                       (void **)&g_nc.rules,     (void **)&g_nc.domains,    (void **)&g_nc.packet_pool,
                       (void **)&g_nc.event_slots};
    UINT32 i;
    for (i = 0; i < sizeof(blocks) / sizeof(blocks[0]); i++) {
        if (*blocks[i] != NULL) {
            ExFreePoolWithTag(*blocks[i], NC_POOL_TAG);
            *blocks[i] = NULL;
        }
    }
}

/* ---- small helpers (shaper_lock held unless said otherwise) ---- */

static nc_flow_glue *nc_glue_of(nc_flow *flow)
{
    return (nc_flow_glue *)flow->driver_context;
}

static UINT32 nc_find_rule_locked(UINT32 rule_id)
{
    UINT32 i;
    for (i = 0; i < NC_MAX_RULES; i++) {
        if (g_nc.rules[i].rule_id == rule_id) return i;
    }
    return NC_MAX_RULES;
}

static nc_rule_slot *nc_rule_of_domain_locked(const nc_domain *domain)
{
    nc_rule_slot *rule = &g_nc.rules[domain->rule_index];
    return rule->rule_id == domain->rule_id ? rule : NULL;
}

static void nc_apply_rates_locked(nc_domain *domain, const nc_rule_slot *rule, UINT64 now)
{
    UINT32 dir;
    for (dir = 0; dir < NC_DIR_COUNT; dir++) {
        UINT64 rate = rule != NULL ? rule->rate[dir] : 0;
        if (rate == 0) {
            domain->has_bucket[dir] = 0; /* unlimited: what is queued drains at the next timer run */
            continue;
        }
        UINT64 burst = nc_tb_burst_for(rate, rule->burst_ms != 0 ? rule->burst_ms : NETCLAMP_BURST_MS_DEFAULT,
                                       NC_BURST_FLOOR_BYTES);
        if (domain->has_bucket[dir]) {
            (void)nc_tb_set_rate(&domain->bucket[dir], rate, burst, now);
        } else if (nc_tb_init(&domain->bucket[dir], rate, burst, NC_TICKS_PER_SECOND, now) == NC_OK) {
            domain->has_bucket[dir] = 1;
        }
    }
}

static nc_domain *nc_domain_acquire_locked(UINT32 rule_index, UINT64 key, UINT64 now)
{
    const nc_rule_slot *rule = &g_nc.rules[rule_index];
    nc_domain *free_domain = NULL;
    UINT32 i, dir;
    for (i = 0; i < NC_MAX_DOMAINS; i++) {
        nc_domain *domain = &g_nc.domains[i];
        if (domain->flows == 0) {
            if (free_domain == NULL) free_domain = domain;
        } else if (domain->rule_id == rule->rule_id && domain->key == key) {
            domain->flows++;
            return domain;
        }
    }
    if (free_domain == NULL) return NULL;
    RtlZeroMemory(free_domain, sizeof(*free_domain));
    free_domain->flows = 1;
    free_domain->rule_id = rule->rule_id;
    free_domain->rule_index = rule_index;
    free_domain->key = key;
    for (dir = 0; dir < NC_DIR_COUNT; dir++) {
        (void)nc_aq_init(&free_domain->queue[dir], dir, NC_QUEUE_BYTE_CAP, NC_DRR_QUANTUM);
    }
    nc_apply_rates_locked(free_domain, rule, now);
    return free_domain;
}

static nc_held_packet *nc_record_pop_locked(void)
{
    nc_held_packet *record = g_nc.packet_free;
    if (record != NULL) {
        g_nc.packet_free = record->next_free;
        record->next_free = NULL;
    }
    return record;
}

static void nc_record_push_locked(nc_held_packet *record)
{
    record->clone = NULL;
    record->link.next = NULL;
    record->next_free = g_nc.packet_free;
    g_nc.packet_free = record;
}

/* Frees the clones of a detached chain and returns its records to the pool. Lock NOT held on entry. */
static void nc_drop_chain(nc_packet *chain)
{
    KLOCK_QUEUE_HANDLE lock_handle;
    nc_packet *packet = chain;
    while (packet != NULL) {
        nc_held_packet *record = CONTAINING_RECORD(packet, nc_held_packet, link);
        packet = packet->next;
        if (record->clone != NULL) {
            FwpsFreeCloneNetBufferList0(record->clone, 0);
        }
        KeAcquireInStackQueuedSpinLock(&g_nc.shaper_lock, &lock_handle);
        g_nc.bytes_queued -= record->link.bytes;
        g_nc.packets_dropped++;
        nc_record_push_locked(record);
        KeReleaseInStackQueuedSpinLock(&lock_handle);
    }
}

/* Detaches a flow whose contexts are all gone: its queued packets (returned as a chain to drop), its table
 * record, its domain reference. */
static nc_packet *nc_flow_release_locked(nc_flow *flow)
{
    nc_flow_glue *glue = nc_glue_of(flow);
    nc_domain *domain = glue->domain;
    nc_packet *chain = NULL;
    UINT32 dir;

    if (domain != NULL) {
        for (dir = 0; dir < NC_DIR_COUNT; dir++) {
            nc_packet *flushed = nc_aq_flush_flow(&domain->queue[dir], flow);
            while (flushed != NULL) {
                nc_packet *next = flushed->next;
                flushed->next = chain;
                chain = flushed;
                flushed = next;
            }
        }
        nc_rule_slot *rule = nc_rule_of_domain_locked(domain);
        if (rule != NULL && rule->active_flows > 0) rule->active_flows--;
        if (domain->flows > 0) domain->flows--; /* 0 frees the domain: its queues are empty now */
    }
    if (flow->lanes[NC_DIR_OUTBOUND].has_limit || flow->lanes[NC_DIR_INBOUND].has_limit) {
        g_nc.flow_limits--;
    }
    glue->domain = NULL;
    glue->association_mask = 0;
    (void)nc_ft_remove(&g_nc.flow_table, flow->flow_id);
    return chain;
}

static void nc_arm_timer(UINT64 wait_ticks)
{
    if (g_nc.unloading || g_nc.reinject_timer == NULL) return;
    if (wait_ticks < NC_TIMER_MIN_TICKS) wait_ticks = NC_TIMER_MIN_TICKS;
    if (wait_ticks > NC_TICKS_PER_SECOND) wait_ticks = NC_TICKS_PER_SECOND;
    if (InterlockedCompareExchange(&g_nc.timer_armed, 1, 0) == 0) {
        WdfTimerStart(g_nc.reinject_timer, -(LONGLONG)wait_ticks); /* negative: relative, 100 ns units */
    }
}

/* ---- token decisions ---- */

/* Whether `bytes` may pass now for this flow and domain; takes the tokens only when both agree, so a
 * refusal by one bucket never spends the other's. *wait_out: ticks until the refusing bucket would agree. */
static int nc_take_tokens_locked(nc_flow *flow, nc_domain *domain, UINT32 dir, UINT64 bytes, UINT64 now,
                                 UINT64 *wait_out, int *flow_refused)
{
    nc_flow_lane *lane = &flow->lanes[dir];
    UINT64 wait;
    *flow_refused = 0;
    if (lane->has_limit) {
        nc_tb_refill(&lane->limit, now);
        wait = nc_tb_ticks_until(&lane->limit, bytes);
        if (wait != 0) {
            *wait_out = wait;
            *flow_refused = 1;
            return 0;
        }
    }
    if (domain->has_bucket[dir]) {
        nc_tb_refill(&domain->bucket[dir], now);
        wait = nc_tb_ticks_until(&domain->bucket[dir], bytes);
        if (wait != 0) {
            *wait_out = wait;
            return 0;
        }
        (void)nc_tb_try_consume(&domain->bucket[dir], bytes, now);
    }
    if (lane->has_limit) (void)nc_tb_try_consume(&lane->limit, bytes, now);
    *wait_out = 0;
    return 1;
}

static nc_sched_verdict nc_gate(void *context, nc_flow *flow, const nc_packet *packet)
{
    nc_gate_context *gate = (nc_gate_context *)context;
    UINT64 wait = 0;
    int flow_refused;
    if (nc_take_tokens_locked(flow, gate->domain, gate->direction, packet->bytes, gate->now, &wait,
                              &flow_refused)) {
        return NC_SCHED_SEND;
    }
    if (wait < gate->min_wait) gate->min_wait = wait;
    return flow_refused ? NC_SCHED_SKIP_FLOW : NC_SCHED_STOP;
}

static UINT64 nc_nbl_bytes(const NET_BUFFER_LIST *net_buffer_list)
{
    UINT64 bytes = 0;
    const NET_BUFFER *buffer;
    for (buffer = NET_BUFFER_LIST_FIRST_NB(net_buffer_list); buffer != NULL; buffer = NET_BUFFER_NEXT_NB(buffer)) {
        bytes += NET_BUFFER_DATA_LENGTH(buffer);
    }
    return bytes;
}

static BOOLEAN nc_layer_is_v6(UINT16 layer_id)
{
    return layer_id == FWPS_LAYER_ALE_FLOW_ESTABLISHED_V6 || layer_id == FWPS_LAYER_OUTBOUND_TRANSPORT_V6 ||
           layer_id == FWPS_LAYER_INBOUND_TRANSPORT_V6;
}

/* ---- callouts ---- */

NTSTATUS NTAPI nc_callout_notify(FWPS_CALLOUT_NOTIFY_TYPE notify_type, const GUID *filter_key,
                                 FWPS_FILTER3 *filter)
{
    /* Filters are the addon's business; the rule id travels in each filter's context, read at classify. */
    UNREFERENCED_PARAMETER(notify_type);
    UNREFERENCED_PARAMETER(filter_key);
    UNREFERENCED_PARAMETER(filter);
    return STATUS_SUCCESS;
}

void NTAPI nc_flow_established_classify(const FWPS_INCOMING_VALUES0 *in_fixed_values,
                                        const FWPS_INCOMING_METADATA_VALUES0 *in_meta_values,
                                        void *layer_data, const void *classify_context,
                                        const FWPS_FILTER3 *filter, UINT64 flow_context,
                                        FWPS_CLASSIFY_OUT0 *classify_out)
{
    KLOCK_QUEUE_HANDLE lock_handle;
    const BOOLEAN is_v6 = nc_layer_is_v6(in_fixed_values->layerId);
    const FWP_BYTE_BLOB *app_id;
    UINT64 app_key = 0, flow_id, domain_key, now;
    UINT32 rule_id, rule_index, process_id = 0, mask = NC_ASSOC_OUTBOUND | NC_ASSOC_INBOUND, failed = 0;
    nc_rule_slot *rule;
    nc_flow *flow;
    nc_domain *domain;
    nc_status status;
    nc_packet *chain = NULL;

    UNREFERENCED_PARAMETER(layer_data);
    UNREFERENCED_PARAMETER(classify_context);
    UNREFERENCED_PARAMETER(flow_context);

    /* An inspection point: never decide the connection's fate here, whatever happens below. */
    if (classify_out->rights & FWPS_RIGHT_ACTION_WRITE) {
        classify_out->actionType = FWP_ACTION_CONTINUE;
    }
    if (g_nc.unloading || !FWPS_IS_METADATA_FIELD_PRESENT(in_meta_values, FWPS_METADATA_FIELD_FLOW_HANDLE)) {
        return;
    }
    flow_id = in_meta_values->flowHandle;
    rule_id = (UINT32)filter->context; /* the addon's filter carries the LIMIT rule id, never a pointer */
    app_id = in_fixed_values->incomingValue[is_v6 ? FWPS_FIELD_ALE_FLOW_ESTABLISHED_V6_ALE_APP_ID
                                                  : FWPS_FIELD_ALE_FLOW_ESTABLISHED_V4_ALE_APP_ID]
                 .value.byteBlob;
    if (app_id != NULL && app_id->data != NULL) {
        app_key = nc_app_key_from_app_id(app_id->data, app_id->size);
    }
    if (FWPS_IS_METADATA_FIELD_PRESENT(in_meta_values, FWPS_METADATA_FIELD_PROCESS_ID)) {
        process_id = (UINT32)in_meta_values->processId;
    }
    now = nc_now_ticks();

    KeAcquireInStackQueuedSpinLock(&g_nc.shaper_lock, &lock_handle);
    rule_index = nc_find_rule_locked(rule_id);
    if (rule_id == 0 || rule_index == NC_MAX_RULES) {
        KeReleaseInStackQueuedSpinLock(&lock_handle); /* no limit (yet): the flow stays unshaped */
        return;
    }
    rule = &g_nc.rules[rule_index];
    if (rule->app_key != 0 && rule->app_key != app_key) {
        KeReleaseInStackQueuedSpinLock(&lock_handle);
        return;
    }
    flow = nc_ft_insert(&g_nc.flow_table, flow_id, app_key, rule_id, process_id, &status);
    if (status != NC_OK) {
        KeReleaseInStackQueuedSpinLock(&lock_handle); /* table full (unshaped) or already known */
        return;
    }
    domain_key = rule->scope == NETCLAMP_SCOPE_PER_PROCESS      ? process_id
                 : rule->scope == NETCLAMP_SCOPE_PER_CONNECTION ? flow_id
                                                                : app_key;
    domain = nc_domain_acquire_locked(rule_index, domain_key, now);
    if (domain == NULL) {
        (void)nc_ft_remove(&g_nc.flow_table, flow_id);
        KeReleaseInStackQueuedSpinLock(&lock_handle);
        return;
    }
    rule->active_flows++;
    nc_glue_of(flow)->domain = domain;
    nc_glue_of(flow)->address_family = is_v6 ? AF_INET6 : AF_INET;
    nc_glue_of(flow)->association_mask = (UINT16)mask; /* set before associating: flow-delete clears bits */
    KeReleaseInStackQueuedSpinLock(&lock_handle);

    if (!NT_SUCCESS(FwpsFlowAssociateContext0(
            flow_id, is_v6 ? FWPS_LAYER_OUTBOUND_TRANSPORT_V6 : FWPS_LAYER_OUTBOUND_TRANSPORT_V4,
            g_nc.callout_ids[is_v6 ? NC_CALLOUT_OUTBOUND_TRANSPORT_V6 : NC_CALLOUT_OUTBOUND_TRANSPORT_V4],
            (UINT64)(ULONG_PTR)flow))) {
        failed |= NC_ASSOC_OUTBOUND;
    }
    if (!NT_SUCCESS(FwpsFlowAssociateContext0(
            flow_id, is_v6 ? FWPS_LAYER_INBOUND_TRANSPORT_V6 : FWPS_LAYER_INBOUND_TRANSPORT_V4,
            g_nc.callout_ids[is_v6 ? NC_CALLOUT_INBOUND_TRANSPORT_V6 : NC_CALLOUT_INBOUND_TRANSPORT_V4],
            (UINT64)(ULONG_PTR)flow))) {
        failed |= NC_ASSOC_INBOUND;
    }
    if (failed != 0) {
        KeAcquireInStackQueuedSpinLock(&g_nc.shaper_lock, &lock_handle);
        nc_glue_of(flow)->association_mask &= (UINT16)~failed;
        if (nc_glue_of(flow)->association_mask == 0) {
            chain = nc_flow_release_locked(flow);
        }
        KeReleaseInStackQueuedSpinLock(&lock_handle);
        nc_drop_chain(chain);
        if (failed == mask) return;
    }
    nc_post_event(NETCLAMP_EVENT_FLOW_ESTABLISHED, rule_id, flow_id, app_key, 0, process_id);
}

void NTAPI nc_transport_flow_delete(UINT16 layer_id, UINT32 callout_id, UINT64 flow_context)
{
    KLOCK_QUEUE_HANDLE lock_handle;
    nc_flow *flow = (nc_flow *)(ULONG_PTR)flow_context;
    nc_packet *chain = NULL;
    UINT32 bit, rule_id = 0;
    UINT64 flow_id = 0, app_key = 0;
    UINT32 process_id = 0;
    BOOLEAN released = FALSE;

    UNREFERENCED_PARAMETER(callout_id);
    if (flow == NULL) return;
    bit = (layer_id == FWPS_LAYER_OUTBOUND_TRANSPORT_V4 || layer_id == FWPS_LAYER_OUTBOUND_TRANSPORT_V6)
              ? NC_ASSOC_OUTBOUND
              : NC_ASSOC_INBOUND;

    KeAcquireInStackQueuedSpinLock(&g_nc.shaper_lock, &lock_handle);
    nc_glue_of(flow)->association_mask &= (UINT16)~bit;
    if (nc_glue_of(flow)->association_mask == 0 && flow->flow_id != 0) {
        flow_id = flow->flow_id;
        rule_id = flow->rule_id;
        app_key = flow->app_key;
        process_id = flow->process_id;
        chain = nc_flow_release_locked(flow);
        released = TRUE;
    }
    KeReleaseInStackQueuedSpinLock(&lock_handle);

    nc_drop_chain(chain); /* the connection is gone: its held packets have nowhere to go */
    if (released) {
        nc_post_event(NETCLAMP_EVENT_FLOW_DELETED, rule_id, flow_id, app_key, 0, process_id);
    }
}

void NTAPI nc_transport_classify(const FWPS_INCOMING_VALUES0 *in_fixed_values,
                                 const FWPS_INCOMING_METADATA_VALUES0 *in_meta_values, void *layer_data,
                                 const void *classify_context, const FWPS_FILTER3 *filter,
                                 UINT64 flow_context, FWPS_CLASSIFY_OUT0 *classify_out)
{
    KLOCK_QUEUE_HANDLE lock_handle;
    NET_BUFFER_LIST *net_buffer_list = (NET_BUFFER_LIST *)layer_data;
    NET_BUFFER_LIST *clone = NULL;
    nc_flow *flow = (nc_flow *)(ULONG_PTR)flow_context;
    const UINT16 layer_id = in_fixed_values->layerId;
    const BOOLEAN is_v6 = nc_layer_is_v6(layer_id);
    const UINT32 dir = (layer_id == FWPS_LAYER_OUTBOUND_TRANSPORT_V4 || layer_id == FWPS_LAYER_OUTBOUND_TRANSPORT_V6)
                           ? NC_DIR_OUTBOUND
                           : NC_DIR_INBOUND;
    HANDLE injection = is_v6 ? g_nc.injection_v6 : g_nc.injection_v4;
    FWPS_PACKET_INJECTION_STATE injection_state;
    UINT64 bytes, now, wait = 0, flow_id;
    UINT32 retreat = 0;
    nc_domain *domain;
    nc_rule_slot *rule;
    nc_held_packet *record;
    int flow_refused;
    BOOLEAN queued = FALSE;

    UNREFERENCED_PARAMETER(classify_context);
    UNREFERENCED_PARAMETER(filter);

    /* Without the right to write, another callout has decided: leave the packet alone. */
    if ((classify_out->rights & FWPS_RIGHT_ACTION_WRITE) == 0) return;
    classify_out->actionType = FWP_ACTION_CONTINUE; /* the default: untouched */
    if (net_buffer_list == NULL || flow == NULL || g_nc.unloading) return;

    injection_state = FwpsQueryPacketInjectionState0(injection, net_buffer_list, NULL);
    if (injection_state == FWPS_PACKET_INJECTED_BY_SELF ||
        injection_state == FWPS_PACKET_PREVIOUSLY_INJECTED_BY_SELF) {
        return; /* ours, already paid for */
    }
    /* The first packet of a connection that ALE has not authorised yet must not be re-injected by us. */
    if (FWPS_IS_METADATA_FIELD_PRESENT(in_meta_values, FWPS_METADATA_FIELD_ALE_CLASSIFY_REQUIRED)) return;
    if (dir == NC_DIR_INBOUND) {
        /* Decrypted IPsec packets cannot be re-injected at the transport layer. */
        UINT32 flags = in_fixed_values
                           ->incomingValue[is_v6 ? FWPS_FIELD_INBOUND_TRANSPORT_V6_FLAGS
                                                 : FWPS_FIELD_INBOUND_TRANSPORT_V4_FLAGS]
                           .value.uint32;
        if (flags & FWP_CONDITION_FLAG_IS_IPSEC_SECURED) return;
        if (!FWPS_IS_METADATA_FIELD_PRESENT(in_meta_values, FWPS_METADATA_FIELD_IP_HEADER_SIZE) ||
            !FWPS_IS_METADATA_FIELD_PRESENT(in_meta_values, FWPS_METADATA_FIELD_TRANSPORT_HEADER_SIZE)) {
            return;
        }
        retreat = in_meta_values->ipHeaderSize + in_meta_values->transportHeaderSize;
    } else if (FWPS_IS_METADATA_FIELD_PRESENT(in_meta_values, FWPS_METADATA_FIELD_TRANSPORT_CONTROL_DATA) &&
               in_meta_values->controlDataLength > NC_CONTROL_DATA_MAX) {
        return; /* would need an allocation to keep: pass unshaped (rare: large ancillary data) */
    }

    bytes = nc_nbl_bytes(net_buffer_list) + retreat;
    if (bytes == 0 || bytes > MAXUINT32) return;
    now = nc_now_ticks();

    /* Decide. A flow with a backlog in this direction queues behind it, or it would be reordered. */
    KeAcquireInStackQueuedSpinLock(&g_nc.shaper_lock, &lock_handle);
    domain = nc_glue_of(flow)->domain;
    flow_id = flow->flow_id;
    if (domain == NULL || flow_id == 0) {
        KeReleaseInStackQueuedSpinLock(&lock_handle);
        return;
    }
    rule = nc_rule_of_domain_locked(domain);
    if (!nc_aq_flow_backlogged(&domain->queue[dir], flow) &&
        nc_take_tokens_locked(flow, domain, dir, bytes, now, &wait, &flow_refused)) {
        flow->lanes[dir].bytes_passed += bytes;
        if (rule != NULL) rule->bytes[dir] += bytes;
        KeReleaseInStackQueuedSpinLock(&lock_handle);
        return;
    }
    record = nc_record_pop_locked();
    if (record == NULL) {
        g_nc.packets_dropped++;
        g_nc.overflow_bytes_unreported += bytes;
        if (rule != NULL) rule->packets_dropped++;
    }
    KeReleaseInStackQueuedSpinLock(&lock_handle);

    if (record != NULL) {
        /* Clone. Inbound, the stack hands us the NBL at the transport payload; receive injection wants it
         * at the IP header, so the clone is taken with the headers in front and the original restored. */
        NTSTATUS status;
        if (retreat != 0) {
            if (NdisRetreatNetBufferDataStart(NET_BUFFER_LIST_FIRST_NB(net_buffer_list), retreat, 0, NULL) !=
                NDIS_STATUS_SUCCESS) {
                retreat = MAXUINT32; /* marks failure below; the original was not moved */
            }
        }
        status = retreat == MAXUINT32 ? STATUS_UNSUCCESSFUL
                                      : FwpsAllocateCloneNetBufferList0(net_buffer_list, NULL, NULL, 0, &clone);
        if (retreat != 0 && retreat != MAXUINT32) {
            NdisAdvanceNetBufferDataStart(NET_BUFFER_LIST_FIRST_NB(net_buffer_list), retreat, FALSE, NULL);
        }
        if (!NT_SUCCESS(status)) clone = NULL;

        if (clone != NULL) {
            record->clone = clone;
            record->link.bytes = (uint32_t)bytes;
            record->link.next = NULL;
            record->address_family = is_v6 ? AF_INET6 : AF_INET;
            record->direction = (UINT8)dir;
            record->compartment_id =
                FWPS_IS_METADATA_FIELD_PRESENT(in_meta_values, FWPS_METADATA_FIELD_COMPARTMENT_ID)
                    ? (COMPARTMENT_ID)in_meta_values->compartmentId
                    : UNSPECIFIED_COMPARTMENT_ID;
            if (dir == NC_DIR_OUTBOUND) {
                record->endpoint_handle = in_meta_values->transportEndpointHandle;
                record->remote_scope_id = in_meta_values->remoteScopeId;
                if (is_v6) {
                    RtlCopyMemory(record->remote_address,
                                  in_fixed_values->incomingValue[FWPS_FIELD_OUTBOUND_TRANSPORT_V6_IP_REMOTE_ADDRESS]
                                      .value.byteArray16->byteArray16,
                                  16);
                } else {
                    /* WFP gives the v4 address in host order; the send parameters want network order. */
                    UINT32 address = RtlUlongByteSwap(
                        in_fixed_values->incomingValue[FWPS_FIELD_OUTBOUND_TRANSPORT_V4_IP_REMOTE_ADDRESS]
                            .value.uint32);
                    RtlCopyMemory(record->remote_address, &address, sizeof(address));
                }
                record->control_data_length = 0;
                if (FWPS_IS_METADATA_FIELD_PRESENT(in_meta_values, FWPS_METADATA_FIELD_TRANSPORT_CONTROL_DATA) &&
                    in_meta_values->controlData != NULL) {
                    record->control_data_length = in_meta_values->controlDataLength;
                    RtlCopyMemory(record->control_data, in_meta_values->controlData, record->control_data_length);
                }
            } else {
                record->interface_index =
                    in_fixed_values->incomingValue[is_v6 ? FWPS_FIELD_INBOUND_TRANSPORT_V6_INTERFACE_INDEX
                                                         : FWPS_FIELD_INBOUND_TRANSPORT_V4_INTERFACE_INDEX]
                        .value.uint32;
                record->sub_interface_index =
                    in_fixed_values->incomingValue[is_v6 ? FWPS_FIELD_INBOUND_TRANSPORT_V6_SUB_INTERFACE_INDEX
                                                         : FWPS_FIELD_INBOUND_TRANSPORT_V4_SUB_INTERFACE_INDEX]
                        .value.uint32;
            }
        }

        KeAcquireInStackQueuedSpinLock(&g_nc.shaper_lock, &lock_handle);
        /* The flow may have been deleted while the lock was released: then the packet goes nowhere. */
        if (clone != NULL && flow->flow_id == flow_id && nc_glue_of(flow)->domain == domain &&
            nc_aq_enqueue(&domain->queue[dir], flow, &record->link) == NC_OK) {
            queued = TRUE;
            record->rule_index = domain->rule_index;
            g_nc.bytes_queued += bytes;
            if (rule != NULL && rule == nc_rule_of_domain_locked(domain)) rule->packets_delayed++;
        } else {
            g_nc.packets_dropped++;
            g_nc.overflow_bytes_unreported += bytes;
            if (rule != NULL && rule == nc_rule_of_domain_locked(domain)) rule->packets_dropped++;
            nc_record_push_locked(record);
        }
        KeReleaseInStackQueuedSpinLock(&lock_handle);
        if (!queued && clone != NULL) FwpsFreeCloneNetBufferList0(clone, 0);
    }

    /* Held or dropped: either way the original goes no further. */
    classify_out->actionType = FWP_ACTION_BLOCK;
    classify_out->flags |= FWPS_CLASSIFY_OUT_FLAG_ABSORB;
    classify_out->rights &= ~FWPS_RIGHT_ACTION_WRITE;
    nc_arm_timer(queued ? wait : NC_TIMER_IDLE_TICKS);
}

/* ---- re-injection (timer DPC, never classify) ---- */

static void nc_record_done(nc_held_packet *record, BOOLEAN injected)
{
    KLOCK_QUEUE_HANDLE lock_handle;
    if (record->clone != NULL) FwpsFreeCloneNetBufferList0(record->clone, 0);
    KeAcquireInStackQueuedSpinLock(&g_nc.shaper_lock, &lock_handle);
    if (injected) {
        g_nc.packets_injected++;
    } else {
        g_nc.packets_dropped++;
    }
    nc_record_push_locked(record);
    KeReleaseInStackQueuedSpinLock(&lock_handle);
}

static void NTAPI nc_inject_complete(void *context, NET_BUFFER_LIST *net_buffer_list, BOOLEAN dispatch_level)
{
    nc_held_packet *record = (nc_held_packet *)context;
    UNREFERENCED_PARAMETER(dispatch_level);
    record->clone = net_buffer_list;
    nc_record_done(record, NT_SUCCESS(NET_BUFFER_LIST_STATUS(net_buffer_list)));
    if (InterlockedDecrement(&g_nc.injections_in_flight) == 0 && g_nc.unloading) {
        KeSetEvent(&g_nc.injections_drained, IO_NO_INCREMENT, FALSE);
    }
}

static void nc_inject(nc_held_packet *record)
{
    NTSTATUS status;
    HANDLE injection = record->address_family == AF_INET6 ? g_nc.injection_v6 : g_nc.injection_v4;

    InterlockedIncrement(&g_nc.injections_in_flight);
    if (record->direction == NC_DIR_OUTBOUND) {
        FWPS_TRANSPORT_SEND_PARAMS0 *params = &record->send_params;
        RtlZeroMemory(params, sizeof(*params));
        params->remoteAddress = record->remote_address;
        params->remoteScopeId = record->remote_scope_id;
        if (record->control_data_length != 0) {
            params->controlData = (WSACMSGHDR *)record->control_data;
            params->controlDataLength = record->control_data_length;
        }
        status = FwpsInjectTransportSendAsync0(injection, NULL, record->endpoint_handle, 0, params,
                                               record->address_family, record->compartment_id, record->clone,
                                               nc_inject_complete, record);
    } else {
        status = FwpsInjectTransportReceiveAsync0(injection, NULL, NULL, 0, record->address_family,
                                                  record->compartment_id, record->interface_index,
                                                  record->sub_interface_index, record->clone, nc_inject_complete,
                                                  record);
    }
    if (!NT_SUCCESS(status)) {
        /* No completion will come: free here. */
        nc_record_done(record, FALSE);
        if (InterlockedDecrement(&g_nc.injections_in_flight) == 0 && g_nc.unloading) {
            KeSetEvent(&g_nc.injections_drained, IO_NO_INCREMENT, FALSE);
        }
    }
}

void nc_reinject_timer_fn(WDFTIMER timer)
{
    KLOCK_QUEUE_HANDLE lock_handle;
    nc_packet *ready_head = NULL, *ready_tail = NULL;
    UINT64 now, next_wait = MAXUINT64, overflow;
    UINT32 budget = NC_INJECT_BUDGET, i, dir;
    BOOLEAN backlog = FALSE;

    UNREFERENCED_PARAMETER(timer);
    InterlockedExchange(&g_nc.timer_armed, 0);
    now = nc_now_ticks();

    /* Collect what the buckets allow, DRR across each domain's flows, under the lock... */
    KeAcquireInStackQueuedSpinLock(&g_nc.shaper_lock, &lock_handle);
    for (i = 0; i < NC_MAX_DOMAINS; i++) {
        nc_domain *domain = &g_nc.domains[i];
        if (domain->flows == 0) continue;
        for (dir = 0; dir < NC_DIR_COUNT; dir++) {
            nc_app_queue *queue = &domain->queue[dir];
            nc_gate_context gate = {domain, dir, now, MAXUINT64};
            nc_rule_slot *rule = nc_rule_of_domain_locked(domain);
            while (queue->queued_packets != 0 && budget != 0) {
                nc_flow *flow = NULL;
                nc_packet *packet = nc_aq_dequeue(queue, nc_gate, &gate, &flow);
                if (packet == NULL) break;
                budget--;
                g_nc.bytes_queued -= packet->bytes;
                if (flow != NULL) flow->lanes[dir].bytes_passed += packet->bytes;
                if (rule != NULL) rule->bytes[dir] += packet->bytes;
                packet->next = NULL;
                if (ready_tail != NULL) ready_tail->next = packet; else ready_head = packet;
                ready_tail = packet;
            }
            if (queue->queued_packets != 0) {
                backlog = TRUE;
                if (gate.min_wait < next_wait) next_wait = gate.min_wait;
            }
        }
    }
    overflow = g_nc.overflow_bytes_unreported;
    g_nc.overflow_bytes_unreported = 0;
    KeReleaseInStackQueuedSpinLock(&lock_handle);

    /* ...and inject without it, in DRR order. */
    while (ready_head != NULL) {
        nc_packet *packet = ready_head;
        ready_head = packet->next;
        packet->next = NULL;
        nc_inject(CONTAINING_RECORD(packet, nc_held_packet, link));
    }
    if (overflow != 0) {
        nc_post_event(NETCLAMP_EVENT_QUEUE_OVERFLOW, 0, 0, 0, overflow, 0);
    }
    if (backlog) {
        /* Budget exhausted: come back at once; otherwise when the nearest bucket allows. */
        nc_arm_timer(budget == 0 ? 0 : (next_wait == MAXUINT64 ? NC_TIMER_IDLE_TICKS : next_wait));
    }
}

/* ---- limits (IOCTL handlers, PASSIVE_LEVEL) ---- */

NTSTATUS nc_shaper_set_app_limit(const nc_app_limit_request *request)
{
    KLOCK_QUEUE_HANDLE lock_handle;
    UINT32 index, i;
    UINT64 now = nc_now_ticks();
    nc_rule_slot *rule;

    KeAcquireInStackQueuedSpinLock(&g_nc.shaper_lock, &lock_handle);
    index = nc_find_rule_locked(request->rule_id);
    if (index == NC_MAX_RULES) {
        index = nc_find_rule_locked(0);
        if (index == NC_MAX_RULES) {
            KeReleaseInStackQueuedSpinLock(&lock_handle);
            return nc_status_to_ntstatus(NC_E_FULL);
        }
        RtlZeroMemory(&g_nc.rules[index], sizeof(g_nc.rules[index]));
        g_nc.rule_count++;
    }
    rule = &g_nc.rules[index];
    rule->rule_id = request->rule_id;
    rule->scope = request->scope;
    rule->app_key = request->app_key;
    rule->rate[NC_DIR_OUTBOUND] = request->up_bytes_per_sec;
    rule->rate[NC_DIR_INBOUND] = request->down_bytes_per_sec;
    rule->burst_ms = request->burst_ms;
    /* Existing domains of the rule take the new rates at once (credit kept, clipped to the new burst). */
    for (i = 0; i < NC_MAX_DOMAINS; i++) {
        nc_domain *domain = &g_nc.domains[i];
        if (domain->flows != 0 && domain->rule_id == rule->rule_id) {
            domain->rule_index = index;
            nc_apply_rates_locked(domain, rule, now);
        }
    }
    KeReleaseInStackQueuedSpinLock(&lock_handle);
    nc_arm_timer(0); /* a raised limit releases held packets sooner */
    return STATUS_SUCCESS;
}

NTSTATUS nc_shaper_set_flow_limit(const nc_flow_limit_request *request)
{
    KLOCK_QUEUE_HANDLE lock_handle;
    UINT64 now = nc_now_ticks();
    UINT64 rates[NC_DIR_COUNT] = {request->up_bytes_per_sec, request->down_bytes_per_sec};
    UINT32 dir, had_limit;
    nc_flow *flow;

    KeAcquireInStackQueuedSpinLock(&g_nc.shaper_lock, &lock_handle);
    flow = nc_ft_find(&g_nc.flow_table, request->flow_id);
    if (flow == NULL) {
        KeReleaseInStackQueuedSpinLock(&lock_handle);
        return nc_status_to_ntstatus(NC_E_NOT_FOUND);
    }
    had_limit = flow->lanes[NC_DIR_OUTBOUND].has_limit | flow->lanes[NC_DIR_INBOUND].has_limit;
    for (dir = 0; dir < NC_DIR_COUNT; dir++) {
        nc_flow_lane *lane = &flow->lanes[dir];
        if (rates[dir] == 0) {
            lane->has_limit = 0;
            continue;
        }
        UINT64 burst = nc_tb_burst_for(rates[dir], request->burst_ms != 0 ? request->burst_ms
                                                                          : NETCLAMP_BURST_MS_DEFAULT,
                                       NC_BURST_FLOOR_BYTES);
        if (lane->has_limit) {
            (void)nc_tb_set_rate(&lane->limit, rates[dir], burst, now);
        } else if (nc_tb_init(&lane->limit, rates[dir], burst, NC_TICKS_PER_SECOND, now) == NC_OK) {
            lane->has_limit = 1;
        }
    }
    if (!had_limit && (flow->lanes[NC_DIR_OUTBOUND].has_limit | flow->lanes[NC_DIR_INBOUND].has_limit)) {
        g_nc.flow_limits++;
    }
    KeReleaseInStackQueuedSpinLock(&lock_handle);
    nc_arm_timer(0);
    return STATUS_SUCCESS;
}

NTSTATUS nc_shaper_remove_limit(const nc_remove_limit_request *request)
{
    KLOCK_QUEUE_HANDLE lock_handle;
    UINT32 i;

    KeAcquireInStackQueuedSpinLock(&g_nc.shaper_lock, &lock_handle);
    if (request->kind == NETCLAMP_REMOVE_APP_LIMIT) {
        UINT32 index = nc_find_rule_locked(request->rule_id);
        if (index != NC_MAX_RULES) {
            RtlZeroMemory(&g_nc.rules[index], sizeof(g_nc.rules[index]));
            g_nc.rule_count--;
            /* Its domains lose their buckets and drain; new flows of the rule are no longer shaped. */
            for (i = 0; i < NC_MAX_DOMAINS; i++) {
                nc_domain *domain = &g_nc.domains[i];
                if (domain->flows != 0 && domain->rule_id == request->rule_id) {
                    nc_apply_rates_locked(domain, NULL, 0);
                }
            }
        }
    } else {
        nc_flow *flow = nc_ft_find(&g_nc.flow_table, request->flow_id);
        if (flow != NULL && (flow->lanes[NC_DIR_OUTBOUND].has_limit | flow->lanes[NC_DIR_INBOUND].has_limit)) {
            flow->lanes[NC_DIR_OUTBOUND].has_limit = 0;
            flow->lanes[NC_DIR_INBOUND].has_limit = 0;
            g_nc.flow_limits--;
        }
    }
    KeReleaseInStackQueuedSpinLock(&lock_handle);
    nc_arm_timer(0); /* removing an unknown limit succeeds too (the header's contract) */
    return STATUS_SUCCESS;
}

/* ---- reporting ---- */

void nc_shaper_fill_status(nc_status_reply *reply)
{
    KLOCK_QUEUE_HANDLE lock_handle;
    LARGE_INTEGER now;

    KeAcquireInStackQueuedSpinLock(&g_nc.shaper_lock, &lock_handle);
    reply->app_limits = g_nc.rule_count;
    reply->flow_limits = g_nc.flow_limits;
    reply->active_flows = g_nc.flow_table.count;
    reply->bytes_queued = g_nc.bytes_queued;
    reply->packets_injected = g_nc.packets_injected;
    reply->packets_dropped = g_nc.packets_dropped;
    reply->state_flags = (g_nc.callouts_registered ? NETCLAMP_STATE_CALLOUTS_REGISTERED : 0) |
                         (g_nc.bfe_running ? NETCLAMP_STATE_BFE_RUNNING : 0) |
                         (g_nc.bytes_queued != 0 ? NETCLAMP_STATE_SHAPING_ACTIVE : 0);
    KeReleaseInStackQueuedSpinLock(&lock_handle);

    KeAcquireInStackQueuedSpinLock(&g_nc.event_lock, &lock_handle);
    reply->events_lost = g_nc.events.lost_total;
    KeReleaseInStackQueuedSpinLock(&lock_handle);

    KeQuerySystemTimePrecise(&now);
    reply->uptime_100ns = (UINT64)now.QuadPart - g_nc.load_time_100ns;
}

UINT32 nc_shaper_fill_counters(UINT32 first_index, UINT32 max_entries, nc_rule_counters *entries,
                               UINT32 *total_out)
{
    KLOCK_QUEUE_HANDLE lock_handle;
    UINT32 i, d, seen = 0, returned = 0;

    KeAcquireInStackQueuedSpinLock(&g_nc.shaper_lock, &lock_handle);
    for (i = 0; i < NC_MAX_RULES && returned < max_entries; i++) {
        const nc_rule_slot *rule = &g_nc.rules[i];
        nc_rule_counters *entry;
        if (rule->rule_id == 0) continue;
        if (seen++ < first_index) continue; /* pages count in-use rules, in slot order */
        entry = &entries[returned++];
        entry->rule_id = rule->rule_id;
        entry->active_flows = rule->active_flows;
        entry->bytes_up = rule->bytes[NC_DIR_OUTBOUND];
        entry->bytes_down = rule->bytes[NC_DIR_INBOUND];
        entry->packets_delayed = rule->packets_delayed;
        entry->packets_dropped = rule->packets_dropped;
        entry->bytes_queued = 0;
        for (d = 0; d < NC_MAX_DOMAINS; d++) {
            const nc_domain *domain = &g_nc.domains[d];
            if (domain->flows != 0 && domain->rule_id == rule->rule_id) {
                entry->bytes_queued += domain->queue[NC_DIR_OUTBOUND].queued_bytes +
                                       domain->queue[NC_DIR_INBOUND].queued_bytes;
            }
        }
    }
    *total_out = g_nc.rule_count;
    KeReleaseInStackQueuedSpinLock(&lock_handle);
    return returned;
}

/* ---- unload ---- */

/* Removes every flow context we associated (PASSIVE_LEVEL). The filter engine calls the flow-delete
 * callback for each, which frees the flow's held packets; until this is done the callouts cannot be
 * unregistered. */
void nc_shaper_detach_all_flows(void)
{
    UINT32 i;
    for (i = 0; i < NC_FLOW_CAPACITY; i++) {
        KLOCK_QUEUE_HANDLE lock_handle;
        nc_flow *flow = &g_nc.flow_pool[i];
        UINT64 flow_id;
        UINT32 mask;
        BOOLEAN is_v6;
        nc_packet *chain = NULL;

        KeAcquireInStackQueuedSpinLock(&g_nc.shaper_lock, &lock_handle);
        flow_id = flow->flow_id;
        mask = g_nc.flow_glue[i].association_mask;
        is_v6 = g_nc.flow_glue[i].address_family == AF_INET6;
        KeReleaseInStackQueuedSpinLock(&lock_handle);
        if (flow_id == 0 || mask == 0) continue;

        if (mask & NC_ASSOC_OUTBOUND) {
            (void)FwpsFlowRemoveContext0(
                flow_id, is_v6 ? FWPS_LAYER_OUTBOUND_TRANSPORT_V6 : FWPS_LAYER_OUTBOUND_TRANSPORT_V4,
                g_nc.callout_ids[is_v6 ? NC_CALLOUT_OUTBOUND_TRANSPORT_V6 : NC_CALLOUT_OUTBOUND_TRANSPORT_V4]);
        }
        if (mask & NC_ASSOC_INBOUND) {
            (void)FwpsFlowRemoveContext0(
                flow_id, is_v6 ? FWPS_LAYER_INBOUND_TRANSPORT_V6 : FWPS_LAYER_INBOUND_TRANSPORT_V4,
                g_nc.callout_ids[is_v6 ? NC_CALLOUT_INBOUND_TRANSPORT_V6 : NC_CALLOUT_INBOUND_TRANSPORT_V4]);
        }
        /* If the engine had already dropped the context (flow racing to its end), release it ourselves. */
        KeAcquireInStackQueuedSpinLock(&g_nc.shaper_lock, &lock_handle);
        if (flow->flow_id == flow_id && g_nc.flow_glue[i].association_mask != 0) {
            chain = nc_flow_release_locked(flow);
        }
        KeReleaseInStackQueuedSpinLock(&lock_handle);
        nc_drop_chain(chain);
    }
}

/* Drops whatever is still held (after the timer stopped); leaves the flow table empty. */
void nc_shaper_flush_all(void)
{
    UINT32 i;
    for (i = 0; i < NC_FLOW_CAPACITY; i++) {
        KLOCK_QUEUE_HANDLE lock_handle;
        nc_packet *chain = NULL;
        KeAcquireInStackQueuedSpinLock(&g_nc.shaper_lock, &lock_handle);
        if (g_nc.flow_pool[i].flow_id != 0) {
            chain = nc_flow_release_locked(&g_nc.flow_pool[i]);
        }
        KeReleaseInStackQueuedSpinLock(&lock_handle);
        nc_drop_chain(chain);
    }
}
