/*
 * Validation of every IOCTL input buffer, before the driver acts on any of it.
 *
 * The driver calls nc_validate_request with the IOCTL code, the METHOD_BUFFERED system buffer and both
 * lengths. On NC_OK, *request_out holds an aligned private copy of the input, already checked: the
 * handler reads only that copy. Anything else is refused with the first problem found, in this order:
 * unknown code, missing handshake, input size, magic, version, header length, output size, then fields
 * (reserved/flags non-zero, ranges, scope). The handshake gates everything: before it succeeds on a
 * handle, every other code is refused without its buffer being looked at.
 */
#ifndef NC_VALIDATE_H
#define NC_VALIDATE_H

#include <stdint.h>

#include "../include/netclamp_ioctl.h"
#include "nc_status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Most events one READ_EVENTS may ask for: bounds the system buffer the I/O manager allocates. */
#define NC_EVENTS_MAX_PER_READ 256u

/* Per-handle state (the driver keeps one in its file object context). */
typedef struct nc_session {
    uint32_t handshake_done;
    uint32_t version; /* negotiated protocol version */
} nc_session;

typedef union nc_request {
    nc_msg_header header;
    nc_handshake_request handshake;
    nc_app_limit_request app_limit;
    nc_flow_limit_request flow_limit;
    nc_remove_limit_request remove_limit;
    nc_counters_request counters;
    nc_simple_request simple;
} nc_request;

void nc_session_init(nc_session *session);

/* Marks the handshake done; call after a validated HANDSHAKE request was answered. */
void nc_session_complete_handshake(nc_session *session, const nc_handshake_request *request);

nc_status nc_validate_request(const nc_session *session, uint32_t ioctl_code, const void *input,
                              uint32_t input_length, uint32_t output_length, nc_request *request_out);

#ifdef __cplusplus
}
#endif

#endif /* NC_VALIDATE_H */
