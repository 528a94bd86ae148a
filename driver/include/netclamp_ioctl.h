/*
 * netclamp_ioctl.h - the one contract between NetClamp's kernel driver and its user-mode client (the addon).
 *
 * Both sides compile this same file: the driver with the WDK (MSVC, LLP64), the addon with MSVC or
 * mingw-w64 (LLP64), and the portable core's tests with gcc/clang on Linux (LP64). So:
 *   - only <stdint.h> fixed-width types; no `long` (4 bytes on Windows, 8 on Linux), no pointers, no enums
 *     in structs (their size is implementation-defined);
 *   - every struct is laid out with natural alignment and explicit reserved fields, then packed(1), so the
 *     packing changes nothing and the size/offset assertions below prove it on every compiler;
 *   - every request starts with `nc_msg_header` (magic, protocol version, length), so a client built from
 *     another revision of this file is refused instead of misread.
 *
 * Protocol: open the device (exclusive, administrators only), send IOCTL_NETCLAMP_HANDSHAKE first; the
 * driver refuses every other IOCTL on that handle until a handshake with a matching version succeeded.
 * All IOCTLs are METHOD_BUFFERED.
 *
 * Rates are bytes per second; 0 means "no limit in that direction". Times are 100 ns units.
 */
#ifndef NETCLAMP_IOCTL_H
#define NETCLAMP_IOCTL_H

#include <stddef.h> /* offsetof */
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- static assertions that work in C99 (MSVC's older C modes), C11 and C++11 ---- */
#define NC_CONCAT_INNER(a, b) a##b
#define NC_CONCAT(a, b) NC_CONCAT_INNER(a, b)
#if defined(__cplusplus)
#define NC_STATIC_ASSERT(cond, msg) static_assert(cond, msg)
#elif defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
#define NC_STATIC_ASSERT(cond, msg) _Static_assert(cond, msg)
#else
/* A negative array size is a compile error; the typedef name carries the line for the diagnostic. */
#define NC_STATIC_ASSERT(cond, msg) typedef char NC_CONCAT(nc_static_assert_line_, __LINE__)[(cond) ? 1 : -1]
#endif

/* ---- device names ---- */
#define NETCLAMP_NT_DEVICE_NAME_W L"\\Device\\NetClamp"
#define NETCLAMP_DOS_DEVICE_NAME_W L"\\DosDevices\\NetClamp" /* the symbolic link the driver creates */
#define NETCLAMP_USER_DEVICE_PATH_W L"\\\\.\\NetClamp"      /* what CreateFileW opens */
#define NETCLAMP_USER_DEVICE_PATH_A "\\\\.\\NetClamp"

/* ---- IOCTL codes ---- */
/* Outside Windows (the Linux unit tests) the WDK/SDK macros do not exist: same bit layout as winioctl.h. */
#ifndef CTL_CODE
#define CTL_CODE(DeviceType, Function, Method, Access) \
    (((uint32_t)(DeviceType) << 16) | ((uint32_t)(Access) << 14) | ((uint32_t)(Function) << 2) | (uint32_t)(Method))
#endif
#ifndef METHOD_BUFFERED
#define METHOD_BUFFERED 0
#endif
#ifndef FILE_READ_ACCESS
#define FILE_READ_ACCESS 0x0001
#endif
#ifndef FILE_WRITE_ACCESS
#define FILE_WRITE_ACCESS 0x0002
#endif

/* Device types 0x8000-0xFFFF and function codes 0x800-0xFFF are reserved for vendors. */
#define NETCLAMP_DEVICE_TYPE 0x8E43u

#define IOCTL_NETCLAMP_HANDSHAKE \
    CTL_CODE(NETCLAMP_DEVICE_TYPE, 0x900, METHOD_BUFFERED, FILE_READ_ACCESS | FILE_WRITE_ACCESS)
#define IOCTL_NETCLAMP_SET_APP_LIMIT \
    CTL_CODE(NETCLAMP_DEVICE_TYPE, 0x901, METHOD_BUFFERED, FILE_WRITE_ACCESS)
#define IOCTL_NETCLAMP_SET_FLOW_LIMIT \
    CTL_CODE(NETCLAMP_DEVICE_TYPE, 0x902, METHOD_BUFFERED, FILE_WRITE_ACCESS)
#define IOCTL_NETCLAMP_REMOVE_LIMIT \
    CTL_CODE(NETCLAMP_DEVICE_TYPE, 0x903, METHOD_BUFFERED, FILE_WRITE_ACCESS)
#define IOCTL_NETCLAMP_READ_COUNTERS \
    CTL_CODE(NETCLAMP_DEVICE_TYPE, 0x904, METHOD_BUFFERED, FILE_READ_ACCESS)
#define IOCTL_NETCLAMP_GET_STATUS \
    CTL_CODE(NETCLAMP_DEVICE_TYPE, 0x905, METHOD_BUFFERED, FILE_READ_ACCESS)
/* Pended by the driver until at least one event is queued (or the handle closes / the IRP is cancelled). */
#define IOCTL_NETCLAMP_READ_EVENTS \
    CTL_CODE(NETCLAMP_DEVICE_TYPE, 0x906, METHOD_BUFFERED, FILE_READ_ACCESS)

/* The codes are part of the wire contract: pin their values so a macro change cannot move them silently. */
NC_STATIC_ASSERT(IOCTL_NETCLAMP_HANDSHAKE == 0x8E43E400u, "handshake ioctl code");
NC_STATIC_ASSERT(IOCTL_NETCLAMP_SET_APP_LIMIT == 0x8E43A404u, "set app limit ioctl code");
NC_STATIC_ASSERT(IOCTL_NETCLAMP_READ_EVENTS == 0x8E436418u, "read events ioctl code");

/* ---- protocol identity ---- */
#define NETCLAMP_MAGIC 0x4B4C434Eu /* "NCLK" little-endian */
#define NETCLAMP_PROTOCOL_VERSION 1u

/* ---- limits the driver enforces (and the validators check) ---- */
/* 100 GB/s (800 Gbit/s). Bounded so that rate * (ticks within one second) fits 64 bits in the token
 * bucket's refill; the addon must refuse (or treat as "no limit") anything faster. */
#define NETCLAMP_RATE_MAX_BYTES_PER_SEC 100000000000ull
#define NETCLAMP_BURST_MS_DEFAULT 100u
#define NETCLAMP_BURST_MS_MAX 10000u
#define NETCLAMP_RULE_ID_MAX 0x7FFFFFFFu /* the service's rule ids are 1 .. 2^31-1 */
#define NETCLAMP_COUNTERS_MAX_ENTRIES 4096u

/* Limit scopes, as in the REST contract's `limit_scope`. */
#define NETCLAMP_SCOPE_PER_APP 1u        /* one budget per (rule, executable) */
#define NETCLAMP_SCOPE_PER_PROCESS 2u    /* one budget per (rule, process id) */
#define NETCLAMP_SCOPE_PER_CONNECTION 3u /* one budget per flow the rule's filters matched */

/* What IOCTL_NETCLAMP_REMOVE_LIMIT removes. */
#define NETCLAMP_REMOVE_APP_LIMIT 1u  /* by rule id */
#define NETCLAMP_REMOVE_FLOW_LIMIT 2u /* by flow id */

/* nc_handshake_reply.capabilities */
#define NETCLAMP_CAP_SHAPE_OUTBOUND 0x00000001u
#define NETCLAMP_CAP_SHAPE_INBOUND 0x00000002u
#define NETCLAMP_CAP_PER_CONNECTION 0x00000004u
#define NETCLAMP_CAP_EVENTS 0x00000008u
#define NETCLAMP_CAP_IPV6 0x00000010u

/* nc_status_reply.state_flags */
#define NETCLAMP_STATE_CALLOUTS_REGISTERED 0x00000001u
#define NETCLAMP_STATE_BFE_RUNNING 0x00000002u
#define NETCLAMP_STATE_SHAPING_ACTIVE 0x00000004u

/* nc_event.type */
#define NETCLAMP_EVENT_FLOW_ESTABLISHED 1u
#define NETCLAMP_EVENT_FLOW_DELETED 2u
#define NETCLAMP_EVENT_QUEUE_OVERFLOW 3u /* value = bytes dropped since the previous overflow event */
#define NETCLAMP_EVENT_BFE_STATE 4u      /* value = 1 running, 0 stopped */

#pragma pack(push, 1)

/* Starts every request and every reply. `length` is sizeof the whole fixed-size struct it heads. */
typedef struct nc_msg_header {
    uint32_t magic;   /* NETCLAMP_MAGIC */
    uint16_t version; /* NETCLAMP_PROTOCOL_VERSION */
    uint16_t length;
} nc_msg_header;

/* IOCTL_NETCLAMP_HANDSHAKE in */
typedef struct nc_handshake_request {
    nc_msg_header header;
    uint64_t client_nonce; /* echoed in the reply, so the client knows the reply is for this handle */
    uint32_t flags;        /* none defined: must be 0 */
    uint32_t reserved;     /* must be 0 */
} nc_handshake_request;

/* IOCTL_NETCLAMP_HANDSHAKE out */
typedef struct nc_handshake_reply {
    nc_msg_header header;
    uint64_t client_nonce;
    uint32_t driver_build; /* 0xMMmmpppp */
    uint32_t capabilities; /* NETCLAMP_CAP_* */
    uint32_t max_app_limits;
    uint32_t max_flows;
    uint64_t rate_max_bytes_per_sec;
} nc_handshake_reply;

/* IOCTL_NETCLAMP_SET_APP_LIMIT in (no output): insert or replace the limit of one LIMIT rule.
 * The WFP filters the addon installs for that rule carry rule_id in their context; the driver uses it at
 * flow establishment to find this limit. */
typedef struct nc_app_limit_request {
    nc_msg_header header;
    uint32_t rule_id;  /* 1 .. NETCLAMP_RULE_ID_MAX */
    uint32_t scope;    /* NETCLAMP_SCOPE_* */
    uint64_t app_key;  /* nc_app_key_from_app_id() of the rule's executable; 0 = every app its filters match */
    uint64_t up_bytes_per_sec;   /* 0 = unlimited; at least one direction must be limited */
    uint64_t down_bytes_per_sec;
    uint32_t burst_ms; /* bucket depth in ms of rate; 0 = NETCLAMP_BURST_MS_DEFAULT */
    uint32_t flags;    /* none defined: must be 0 */
} nc_app_limit_request;

/* IOCTL_NETCLAMP_SET_FLOW_LIMIT in (no output): a limit on one connection, on top of its app's limit. */
typedef struct nc_flow_limit_request {
    nc_msg_header header;
    uint64_t flow_id; /* as reported by NETCLAMP_EVENT_FLOW_ESTABLISHED; never 0 */
    uint64_t up_bytes_per_sec;
    uint64_t down_bytes_per_sec;
    uint32_t burst_ms;
    uint32_t flags; /* must be 0 */
} nc_flow_limit_request;

/* IOCTL_NETCLAMP_REMOVE_LIMIT in (no output). Removing an unknown limit succeeds. */
typedef struct nc_remove_limit_request {
    nc_msg_header header;
    uint32_t kind;    /* NETCLAMP_REMOVE_* */
    uint32_t rule_id; /* kind APP: the rule; kind FLOW: must be 0 */
    uint64_t flow_id; /* kind FLOW: the flow; kind APP: must be 0 */
} nc_remove_limit_request;

/* IOCTL_NETCLAMP_READ_COUNTERS in. The output buffer must hold the reply plus max_entries entries. */
typedef struct nc_counters_request {
    nc_msg_header header;
    uint32_t first_index; /* paging through the driver's rule table */
    uint32_t max_entries; /* 1 .. NETCLAMP_COUNTERS_MAX_ENTRIES */
} nc_counters_request;

/* IOCTL_NETCLAMP_READ_COUNTERS out: this, then `returned` nc_rule_counters. */
typedef struct nc_counters_reply {
    nc_msg_header header;
    uint32_t total;    /* entries in the driver's table */
    uint32_t returned; /* entries following this struct */
    uint64_t reserved;
} nc_counters_reply;

typedef struct nc_rule_counters {
    uint32_t rule_id;
    uint32_t active_flows;
    uint64_t bytes_up;   /* cumulative since the limit was set */
    uint64_t bytes_down;
    uint64_t packets_delayed; /* queued at least once before re-injection */
    uint64_t packets_dropped; /* queue full */
    uint64_t bytes_queued;    /* right now */
} nc_rule_counters;

/* IOCTL_NETCLAMP_GET_STATUS and IOCTL_NETCLAMP_READ_EVENTS in: the bare header. */
typedef struct nc_simple_request {
    nc_msg_header header;
} nc_simple_request;

/* IOCTL_NETCLAMP_GET_STATUS out */
typedef struct nc_status_reply {
    nc_msg_header header;
    uint32_t state_flags; /* NETCLAMP_STATE_* */
    uint32_t app_limits;
    uint32_t flow_limits;
    uint32_t active_flows;
    uint64_t bytes_queued;
    uint64_t packets_injected;
    uint64_t packets_dropped;
    uint64_t events_lost;
    uint64_t uptime_100ns;
} nc_status_reply;

/* IOCTL_NETCLAMP_READ_EVENTS out: this, then `count` nc_event. The output length must be the reply plus a
 * whole number (>= 1) of events. */
typedef struct nc_events_reply {
    nc_msg_header header;
    uint32_t count;
    uint32_t lost; /* events dropped because nobody read them in time, since the previous reply */
} nc_events_reply;

typedef struct nc_event {
    uint32_t type; /* NETCLAMP_EVENT_* */
    uint32_t rule_id;
    uint64_t flow_id;
    uint64_t app_key;
    uint64_t timestamp_100ns; /* system time (FILETIME epoch) */
    uint64_t value;
    uint32_t process_id;
    uint32_t reserved;
} nc_event;

/* A GUID laid out as Windows lays it out; lets portable code and tests handle the GUIDs below. */
typedef struct nc_guid {
    uint32_t data1;
    uint16_t data2;
    uint16_t data3;
    uint8_t data4[8];
} nc_guid;

#pragma pack(pop)

/* ---- layout proofs: identical under LP64 (Linux) and LLP64 (Windows), C and C++ ---- */
NC_STATIC_ASSERT(sizeof(nc_msg_header) == 8, "nc_msg_header size");
NC_STATIC_ASSERT(sizeof(nc_handshake_request) == 24, "nc_handshake_request size");
NC_STATIC_ASSERT(offsetof(nc_handshake_request, client_nonce) == 8, "nc_handshake_request.client_nonce");
NC_STATIC_ASSERT(sizeof(nc_handshake_reply) == 40, "nc_handshake_reply size");
NC_STATIC_ASSERT(offsetof(nc_handshake_reply, rate_max_bytes_per_sec) == 32, "nc_handshake_reply.rate_max");
NC_STATIC_ASSERT(sizeof(nc_app_limit_request) == 48, "nc_app_limit_request size");
NC_STATIC_ASSERT(offsetof(nc_app_limit_request, rule_id) == 8, "nc_app_limit_request.rule_id");
NC_STATIC_ASSERT(offsetof(nc_app_limit_request, app_key) == 16, "nc_app_limit_request.app_key");
NC_STATIC_ASSERT(offsetof(nc_app_limit_request, up_bytes_per_sec) == 24, "nc_app_limit_request.up");
NC_STATIC_ASSERT(offsetof(nc_app_limit_request, down_bytes_per_sec) == 32, "nc_app_limit_request.down");
NC_STATIC_ASSERT(offsetof(nc_app_limit_request, burst_ms) == 40, "nc_app_limit_request.burst_ms");
NC_STATIC_ASSERT(sizeof(nc_flow_limit_request) == 40, "nc_flow_limit_request size");
NC_STATIC_ASSERT(offsetof(nc_flow_limit_request, flow_id) == 8, "nc_flow_limit_request.flow_id");
NC_STATIC_ASSERT(offsetof(nc_flow_limit_request, burst_ms) == 32, "nc_flow_limit_request.burst_ms");
NC_STATIC_ASSERT(sizeof(nc_remove_limit_request) == 24, "nc_remove_limit_request size");
NC_STATIC_ASSERT(offsetof(nc_remove_limit_request, flow_id) == 16, "nc_remove_limit_request.flow_id");
NC_STATIC_ASSERT(sizeof(nc_counters_request) == 16, "nc_counters_request size");
NC_STATIC_ASSERT(sizeof(nc_counters_reply) == 24, "nc_counters_reply size");
NC_STATIC_ASSERT(sizeof(nc_rule_counters) == 48, "nc_rule_counters size");
NC_STATIC_ASSERT(offsetof(nc_rule_counters, bytes_up) == 8, "nc_rule_counters.bytes_up");
NC_STATIC_ASSERT(sizeof(nc_simple_request) == 8, "nc_simple_request size");
NC_STATIC_ASSERT(sizeof(nc_status_reply) == 64, "nc_status_reply size");
NC_STATIC_ASSERT(offsetof(nc_status_reply, bytes_queued) == 24, "nc_status_reply.bytes_queued");
NC_STATIC_ASSERT(sizeof(nc_events_reply) == 16, "nc_events_reply size");
NC_STATIC_ASSERT(sizeof(nc_event) == 48, "nc_event size");
NC_STATIC_ASSERT(offsetof(nc_event, timestamp_100ns) == 24, "nc_event.timestamp_100ns");
NC_STATIC_ASSERT(offsetof(nc_event, process_id) == 40, "nc_event.process_id");
NC_STATIC_ASSERT(sizeof(nc_guid) == 16, "nc_guid size");
/* The length field is 16 bits: every fixed struct must fit it. */
NC_STATIC_ASSERT(sizeof(nc_status_reply) < 0x10000, "struct sizes fit nc_msg_header.length");

/* ---- GUIDs (initializers for GUID / nc_guid: {data1, data2, data3, {data4}}) ---- */
/* NetClamp's WFP provider and sublayer, persistent; the addon owns the filters in them. */
#define NETCLAMP_PROVIDER_GUID_INIT \
    {0x7a3840b6, 0xb1da, 0x4045, {0xa8, 0xc3, 0x96, 0xd7, 0x4f, 0x1a, 0xc5, 0xe5}}
#define NETCLAMP_SUBLAYER_GUID_INIT \
    {0xdd9d8ebf, 0x1b04, 0x4a7d, {0x83, 0x4e, 0xff, 0x4a, 0x0d, 0xa7, 0x31, 0x76}}
/* The driver's callouts (registered by the driver with FwpsCalloutRegister, added by the addon with
 * FwpmCalloutAdd0 and referenced by the addon's filters, which must use FWP_ACTION_CALLOUT_TERMINATING or
 * _INSPECTION with FWPM_FILTER_FLAG_PERMIT_IF_CALLOUT_UNREGISTERED so traffic flows if the driver is gone). */
#define NETCLAMP_CALLOUT_FLOW_ESTABLISHED_V4_GUID_INIT \
    {0x20f94afe, 0x942e, 0x42fe, {0x92, 0xfd, 0x18, 0x0d, 0xe3, 0xb5, 0x21, 0xa9}}
#define NETCLAMP_CALLOUT_FLOW_ESTABLISHED_V6_GUID_INIT \
    {0x847681dc, 0x26c7, 0x499d, {0x86, 0x43, 0x5c, 0xd4, 0x5a, 0xa4, 0xb5, 0x86}}
#define NETCLAMP_CALLOUT_OUTBOUND_TRANSPORT_V4_GUID_INIT \
    {0x521d6eba, 0x94ad, 0x4bca, {0xb5, 0x7a, 0x8a, 0x98, 0x3a, 0x35, 0x20, 0x0f}}
#define NETCLAMP_CALLOUT_OUTBOUND_TRANSPORT_V6_GUID_INIT \
    {0x7fb9aecc, 0xecfc, 0x4f43, {0x9d, 0x15, 0x9e, 0x10, 0xec, 0x48, 0xb3, 0x81}}
#define NETCLAMP_CALLOUT_INBOUND_TRANSPORT_V4_GUID_INIT \
    {0x5138bb5e, 0x4792, 0x4246, {0x8a, 0xe2, 0x04, 0x14, 0x47, 0x53, 0x07, 0x1d}}
#define NETCLAMP_CALLOUT_INBOUND_TRANSPORT_V6_GUID_INIT \
    {0x20eaf54f, 0xa42a, 0x4a8e, {0xb3, 0x47, 0x0b, 0xc3, 0x87, 0xaa, 0x3a, 0xda}}

/* ---- the app key both sides compute ----
 * 64-bit FNV-1a over the exact bytes of the WFP app id blob: what FwpmGetAppIdFromFileName0 returns in user
 * mode and what FWPS_FIELD_*_ALE_APP_ID carries in the kernel (the same NT device path, NUL included).
 * 0 is reserved for "any app", so a hash that lands on 0 is mapped to 1. */
#define NETCLAMP_FNV1A64_OFFSET 0xcbf29ce484222325ull
#define NETCLAMP_FNV1A64_PRIME 0x00000100000001b3ull

static inline uint64_t nc_app_key_from_app_id(const uint8_t *app_id, uint32_t app_id_size)
{
    uint64_t hash = NETCLAMP_FNV1A64_OFFSET;
    uint32_t i;
    for (i = 0; i < app_id_size; i++) {
        hash ^= app_id[i];
        hash *= NETCLAMP_FNV1A64_PRIME;
    }
    return hash == 0 ? 1 : hash;
}

/* Fills a request header for `length` bytes (the client side of the framing). */
static inline void nc_msg_header_init(nc_msg_header *header, uint16_t length)
{
    header->magic = NETCLAMP_MAGIC;
    header->version = (uint16_t)NETCLAMP_PROTOCOL_VERSION;
    header->length = length;
}

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* NETCLAMP_IOCTL_H */
