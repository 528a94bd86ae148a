/*
 * The driver's flow table: fixed capacity, caller-provided storage, keyed by the 64-bit WFP flow id.
 *
 * Flow records live in a pool and never move while in use, so the queue and the driver may hold pointers
 * to them; only the hash index (open addressing, linear probing, backward-shift deletion so no tombstones
 * pile up) moves entries around. The index is at least twice the pool, so probes stay short.
 *
 * Not thread-safe: the driver serialises access with its own lock (a spin lock at DISPATCH_LEVEL).
 */
#ifndef NC_FLOW_TABLE_H
#define NC_FLOW_TABLE_H

#include <stdint.h>

#include "nc_status.h"
#include "nc_token_bucket.h"

#ifdef __cplusplus
extern "C" {
#endif

#define NC_DIR_OUTBOUND 0u
#define NC_DIR_INBOUND 1u
#define NC_DIR_COUNT 2u

/* Embedded (intrusively) in the driver's own packet record, which carries the cloned NET_BUFFER_LIST and
 * what re-injection needs. The core only links and measures packets; it never allocates or frees them. */
typedef struct nc_packet {
    struct nc_packet *next;
    uint32_t bytes;
    uint32_t reserved;
} nc_packet;

struct nc_app_queue;

/* One direction of one flow: its FIFO of held packets and its deficit-round-robin state. */
typedef struct nc_flow_lane {
    nc_packet *head;
    nc_packet *tail;
    uint64_t queued_bytes;
    uint32_t queued_packets;
    uint64_t deficit;                 /* DRR credit in bytes */
    struct nc_app_queue *queue;       /* the queue the flow is active in, or NULL */
    struct nc_flow *active_next;      /* links in that queue's round */
    struct nc_flow *active_prev;
    nc_token_bucket limit;            /* a per-connection limit, when has_limit */
    uint32_t has_limit;
    uint32_t in_turn;                 /* DRR: this round's quantum has been granted */
    uint64_t bytes_passed;            /* counters: what went through (directly or after queueing) */
} nc_flow_lane;

typedef struct nc_flow {
    uint64_t flow_id; /* 0 = free record */
    uint64_t app_key;
    uint32_t rule_id;
    uint32_t process_id;
    nc_flow_lane lanes[NC_DIR_COUNT];
    void *driver_context; /* whatever the WDK glue attaches (bucket instance, layer ids, ...) */
    uint32_t next_free;   /* pool free list, as index + 1; 0 = end */
    uint32_t reserved;
} nc_flow;

typedef struct nc_flow_table {
    nc_flow *flows;
    uint32_t capacity;
    uint32_t count;
    uint32_t *index; /* 0 = empty, else pool index + 1 */
    uint32_t index_mask;
    uint32_t free_head; /* pool index + 1; 0 = pool exhausted */
} nc_flow_table;

/* `flows` holds `capacity` records; `index` holds `index_size` slots, a power of two >= 2 * capacity. */
nc_status nc_ft_init(nc_flow_table *table, nc_flow *flows, uint32_t capacity, uint32_t *index,
                     uint32_t index_size);

/* Adds a flow. *status_out (optional) is NC_OK, NC_E_EXISTS (returns the existing record),
 * NC_E_FULL or NC_E_INVALID_ARGUMENT (flow id 0) (both return NULL). */
nc_flow *nc_ft_insert(nc_flow_table *table, uint64_t flow_id, uint64_t app_key, uint32_t rule_id,
                      uint32_t process_id, nc_status *status_out);

nc_flow *nc_ft_find(const nc_flow_table *table, uint64_t flow_id);

/* Frees the record. Refuses (NC_E_INVALID_ARGUMENT) while it still has packets queued in either direction:
 * the caller flushes them first (nc_aq_flush_flow), since only it can free them. */
nc_status nc_ft_remove(nc_flow_table *table, uint64_t flow_id);

/* Longest probe sequence currently in the index (for tests and diagnostics). */
uint32_t nc_ft_max_probe(const nc_flow_table *table);

#ifdef __cplusplus
}
#endif

#endif /* NC_FLOW_TABLE_H */
