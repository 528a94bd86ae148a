/*
 * nc_driver.h - internal declarations of NetClamp's KMDF WFP callout driver (the WDK glue).
 *
 * Everything that decides (bucket arithmetic, flow bookkeeping, queue caps, DRR, IOCTL validation, the
 * event ring) lives in driver/core and is unit-tested on Linux. This layer only moves NET_BUFFER_LISTs,
 * WDF requests and WFP registrations around the core, under spin locks.
 *
 * Layers (the pick): ALE_FLOW_ESTABLISHED_V4/V6 to learn a flow and attach a context, then the TRANSPORT
 * layers (OUTBOUND_TRANSPORT_V4/V6, INBOUND_TRANSPORT_V4/V6) to shape it. Transport rather than stream:
 * it sees TCP and UDP alike, one IP packet per classify, and it is where clone/absorb/re-inject is
 * supported for both directions; the stream layer would need stream injection and sees no UDP.
 */
#ifndef NC_DRIVER_H
#define NC_DRIVER_H

#ifdef NETCLAMP_WDK_STUB_CHECK
/* Linux syntax check only (test/driver/glue.test.ts): mingw's real ntddk.h plus hand-written declarations
 * of the WDF/FWPS/NDIS names this driver uses. Never part of a real build. */
#include "wdk_stub_check.h"
#else
#include <ntddk.h>
#include <wdf.h>
#pragma warning(push)
#pragma warning(disable : 4201) /* nameless struct/union in the NDIS and FWPS headers */
#include <ndis.h>
#include <fwpsk.h>
#pragma warning(pop)
#include <fwpmk.h>
#endif

#include "../include/netclamp_ioctl.h"
#include "../core/nc_event_ring.h"
#include "../core/nc_flow_table.h"
#include "../core/nc_queue.h"
#include "../core/nc_status.h"
#include "../core/nc_token_bucket.h"
#include "../core/nc_validate.h"

#define NC_POOL_TAG 'lCcN' /* "NcCl" in pool dumps */

/* 0xMMmmpppp: 0.1.0 */
#define NC_DRIVER_BUILD 0x00010000u

/* Fixed capacities: everything the data path touches is allocated once at DriverEntry, so classify never
 * allocates anything but the NBL clone. */
#define NC_MAX_RULES 256u           /* app limits (one per LIMIT rule) */
#define NC_MAX_DOMAINS 1024u        /* bucket instances: (rule, app), (rule, pid) or (rule, flow) */
#define NC_FLOW_CAPACITY 16384u     /* shaped flows at once */
#define NC_FLOW_INDEX_SIZE 32768u   /* power of two, >= 2 x capacity */
#define NC_PACKET_POOL 16384u       /* held packets at once, over all queues */
#define NC_EVENT_RING_SIZE 1024u
#define NC_QUEUE_BYTE_CAP (4u * 1024u * 1024u) /* per domain and direction */
#define NC_DRR_QUANTUM 65535u       /* one maximal packet: a DRR round is a single pass */
#define NC_BURST_FLOOR_BYTES 65536u /* a bucket holds at least one LSO send */
#define NC_CONTROL_DATA_MAX 128u    /* outbound ancillary data kept inline; larger is passed unshaped */
#define NC_INJECT_BUDGET 512u       /* packets per timer run, so one DPC stays short */
#define NC_TIMER_MIN_TICKS 5000u    /* 0.5 ms: never re-arm sooner */
#define NC_TIMER_IDLE_TICKS 100000u /* 10 ms: re-arm when a queue waits on a flow limit only */
#define NC_TICKS_PER_SECOND 10000000ull /* KeQueryInterruptTime: 100 ns */

/* Callout slots, in registration order. */
typedef enum nc_callout_slot {
    NC_CALLOUT_FLOW_ESTABLISHED_V4 = 0,
    NC_CALLOUT_FLOW_ESTABLISHED_V6,
    NC_CALLOUT_OUTBOUND_TRANSPORT_V4,
    NC_CALLOUT_OUTBOUND_TRANSPORT_V6,
    NC_CALLOUT_INBOUND_TRANSPORT_V4,
    NC_CALLOUT_INBOUND_TRANSPORT_V6,
    NC_CALLOUT_COUNT
} nc_callout_slot;

/* One LIMIT rule as the service sent it, plus its counters. rule_id 0 = free slot. */
typedef struct nc_rule_slot {
    UINT32 rule_id;
    UINT32 scope;
    UINT64 app_key;
    UINT64 rate[NC_DIR_COUNT]; /* bytes/s, 0 = unlimited */
    UINT32 burst_ms;
    UINT32 active_flows;
    UINT64 bytes[NC_DIR_COUNT];
    UINT64 packets_delayed;
    UINT64 packets_dropped;
} nc_rule_slot;

/* One bucket instance and its two queues. A domain keeps working after its rule is removed or replaced
 * by another rule id (it then has no buckets and drains), until its last flow goes. */
typedef struct nc_domain {
    UINT32 flows; /* 0 = free */
    UINT32 rule_id;
    UINT32 rule_index;
    UINT32 reserved;
    UINT64 key; /* app key, process id or flow id, by the rule's scope */
    UINT32 has_bucket[NC_DIR_COUNT];
    nc_token_bucket bucket[NC_DIR_COUNT];
    nc_app_queue queue[NC_DIR_COUNT];
} nc_domain;

/* Per-flow glue state, parallel to the core's flow pool (same index), reached via nc_flow.driver_context. */
typedef struct nc_flow_glue {
    nc_domain *domain;
    UINT16 address_family; /* AF_INET / AF_INET6 */
    UINT16 association_mask; /* bit 0 outbound, bit 1 inbound: transport callouts holding this context */
} nc_flow_glue;

/* A held packet: the clone and what re-injection needs. Pre-allocated; nc_packet first for the core. */
typedef struct nc_held_packet {
    nc_packet link;
    NET_BUFFER_LIST *clone;
    struct nc_held_packet *next_free;
    UINT32 rule_index;
    UINT16 address_family;
    UINT8 direction; /* NC_DIR_* */
    UINT8 reserved;
    COMPARTMENT_ID compartment_id;
    /* outbound */
    UINT64 endpoint_handle;
    SCOPE_ID remote_scope_id;
    UINT8 remote_address[16]; /* network byte order */
    UINT32 control_data_length;
    UINT8 control_data[NC_CONTROL_DATA_MAX];
    FWPS_TRANSPORT_SEND_PARAMS0 send_params; /* must outlive the asynchronous send: kept with the clone */
    /* inbound */
    IF_INDEX interface_index;
    IF_INDEX sub_interface_index;
} nc_held_packet;

/* Per-handle state (file object context). */
typedef struct nc_file_context {
    nc_session session;
} nc_file_context;
WDF_DECLARE_CONTEXT_TYPE_WITH_NAME(nc_file_context, nc_get_file_context)

typedef struct nc_globals {
    WDFDRIVER driver;
    WDFDEVICE control_device;
    PDEVICE_OBJECT wdm_device;
    WDFQUEUE pending_reads; /* manual queue holding READ_EVENTS until an event arrives */
    WDFTIMER reinject_timer;
    WDFWAITLOCK registration_lock; /* serialises callout (un)registration: DriverEntry vs BFE callback */

    HANDLE bfe_subscription;
    HANDLE injection_v4;
    HANDLE injection_v6;
    UINT32 callout_ids[NC_CALLOUT_COUNT];
    BOOLEAN callouts_registered;
    volatile LONG bfe_running;
    volatile LONG unloading;
    volatile LONG timer_armed;

    /* Data path state, under shaper_lock (DISPATCH_LEVEL). */
    KSPIN_LOCK shaper_lock;
    nc_flow_table flow_table;
    nc_flow *flow_pool;
    UINT32 *flow_index;
    nc_flow_glue *flow_glue;
    nc_rule_slot *rules;
    UINT32 rule_count;
    nc_domain *domains;
    nc_held_packet *packet_pool;
    nc_held_packet *packet_free;
    UINT64 bytes_queued;
    UINT64 packets_injected;
    UINT64 packets_dropped;
    UINT64 overflow_bytes_unreported;
    UINT32 flow_limits;

    /* In-flight injections: unload waits for their completions before destroying the handles. */
    volatile LONG injections_in_flight;
    KEVENT injections_drained;

    /* Events, under event_lock. */
    KSPIN_LOCK event_lock;
    nc_event_ring events;
    nc_event *event_slots;

    UINT64 load_time_100ns;
} nc_globals;

extern nc_globals g_nc;

/* driver.c */
NTSTATUS nc_register_callouts(void);
void nc_unregister_callouts(void);
UINT64 nc_now_ticks(void);

/* ioctl.c */
NTSTATUS nc_create_queues(WDFDEVICE device);
NTSTATUS nc_status_to_ntstatus(nc_status status);
void nc_post_event(UINT32 type, UINT32 rule_id, UINT64 flow_id, UINT64 app_key, UINT64 value,
                   UINT32 process_id);
void nc_service_pending_reads(void);

/* shaper.c */
NTSTATUS nc_shaper_init(void);
void nc_shaper_free(void);
NTSTATUS nc_shaper_set_app_limit(const nc_app_limit_request *request);
NTSTATUS nc_shaper_set_flow_limit(const nc_flow_limit_request *request);
NTSTATUS nc_shaper_remove_limit(const nc_remove_limit_request *request);
void nc_shaper_fill_status(nc_status_reply *reply);
UINT32 nc_shaper_fill_counters(UINT32 first_index, UINT32 max_entries, nc_rule_counters *entries,
                               UINT32 *total_out);
void nc_shaper_detach_all_flows(void);
void nc_shaper_flush_all(void);
EVT_WDF_TIMER nc_reinject_timer_fn;

/* WFP callout functions (shaper.c). */
void NTAPI nc_flow_established_classify(const FWPS_INCOMING_VALUES0 *in_fixed_values,
                                        const FWPS_INCOMING_METADATA_VALUES0 *in_meta_values,
                                        void *layer_data, const void *classify_context,
                                        const FWPS_FILTER3 *filter, UINT64 flow_context,
                                        FWPS_CLASSIFY_OUT0 *classify_out);
void NTAPI nc_transport_classify(const FWPS_INCOMING_VALUES0 *in_fixed_values,
                                 const FWPS_INCOMING_METADATA_VALUES0 *in_meta_values, void *layer_data,
                                 const void *classify_context, const FWPS_FILTER3 *filter,
                                 UINT64 flow_context, FWPS_CLASSIFY_OUT0 *classify_out);
NTSTATUS NTAPI nc_callout_notify(FWPS_CALLOUT_NOTIFY_TYPE notify_type, const GUID *filter_key,
                                 FWPS_FILTER3 *filter);
void NTAPI nc_transport_flow_delete(UINT16 layer_id, UINT32 callout_id, UINT64 flow_context);

#endif /* NC_DRIVER_H */
