/* IOCTL input validators. See nc_validate.h for the order of checks. */
#include <string.h>

#include "nc_validate.h"

void nc_session_init(nc_session *session)
{
    session->handshake_done = 0;
    session->version = 0;
}

void nc_session_complete_handshake(nc_session *session, const nc_handshake_request *request)
{
    session->version = request->header.version;
    session->handshake_done = 1;
}

static int nc_rate_valid(uint64_t rate)
{
    return rate <= NETCLAMP_RATE_MAX_BYTES_PER_SEC;
}

/* A limit request limits at least one direction, at rates and a burst the bucket can represent. */
static nc_status nc_check_rates(uint64_t up, uint64_t down, uint32_t burst_ms)
{
    if (!nc_rate_valid(up) || !nc_rate_valid(down)) return NC_E_OUT_OF_RANGE;
    if (up == 0 && down == 0) return NC_E_OUT_OF_RANGE; /* "no limit" is a REMOVE, not a SET */
    if (burst_ms > NETCLAMP_BURST_MS_MAX) return NC_E_OUT_OF_RANGE;
    return NC_OK;
}

static int nc_rule_id_valid(uint32_t rule_id)
{
    return rule_id >= 1 && rule_id <= NETCLAMP_RULE_ID_MAX;
}

static nc_status nc_check_fields(uint32_t ioctl_code, const nc_request *request)
{
    switch (ioctl_code) {
    case IOCTL_NETCLAMP_HANDSHAKE:
        if (request->handshake.flags != 0 || request->handshake.reserved != 0) return NC_E_RESERVED_NONZERO;
        return NC_OK;
    case IOCTL_NETCLAMP_SET_APP_LIMIT: {
        const nc_app_limit_request *limit = &request->app_limit;
        if (limit->flags != 0) return NC_E_RESERVED_NONZERO;
        if (!nc_rule_id_valid(limit->rule_id)) return NC_E_OUT_OF_RANGE;
        if (limit->scope != NETCLAMP_SCOPE_PER_APP && limit->scope != NETCLAMP_SCOPE_PER_PROCESS &&
            limit->scope != NETCLAMP_SCOPE_PER_CONNECTION)
            return NC_E_UNKNOWN_SCOPE;
        return nc_check_rates(limit->up_bytes_per_sec, limit->down_bytes_per_sec, limit->burst_ms);
    }
    case IOCTL_NETCLAMP_SET_FLOW_LIMIT: {
        const nc_flow_limit_request *limit = &request->flow_limit;
        if (limit->flags != 0) return NC_E_RESERVED_NONZERO;
        if (limit->flow_id == 0) return NC_E_OUT_OF_RANGE;
        return nc_check_rates(limit->up_bytes_per_sec, limit->down_bytes_per_sec, limit->burst_ms);
    }
    case IOCTL_NETCLAMP_REMOVE_LIMIT: {
        const nc_remove_limit_request *remove = &request->remove_limit;
        if (remove->kind == NETCLAMP_REMOVE_APP_LIMIT) {
            if (remove->flow_id != 0) return NC_E_RESERVED_NONZERO;
            return nc_rule_id_valid(remove->rule_id) ? NC_OK : NC_E_OUT_OF_RANGE;
        }
        if (remove->kind == NETCLAMP_REMOVE_FLOW_LIMIT) {
            if (remove->rule_id != 0) return NC_E_RESERVED_NONZERO;
            return remove->flow_id != 0 ? NC_OK : NC_E_OUT_OF_RANGE;
        }
        return NC_E_OUT_OF_RANGE;
    }
    case IOCTL_NETCLAMP_READ_COUNTERS:
        if (request->counters.max_entries < 1 || request->counters.max_entries > NETCLAMP_COUNTERS_MAX_ENTRIES)
            return NC_E_OUT_OF_RANGE;
        return NC_OK;
    default: /* GET_STATUS, READ_EVENTS: the header is the whole request */
        return NC_OK;
    }
}

/* Expected input size, or 0 for an unknown code. */
static uint32_t nc_input_size(uint32_t ioctl_code)
{
    switch (ioctl_code) {
    case IOCTL_NETCLAMP_HANDSHAKE: return sizeof(nc_handshake_request);
    case IOCTL_NETCLAMP_SET_APP_LIMIT: return sizeof(nc_app_limit_request);
    case IOCTL_NETCLAMP_SET_FLOW_LIMIT: return sizeof(nc_flow_limit_request);
    case IOCTL_NETCLAMP_REMOVE_LIMIT: return sizeof(nc_remove_limit_request);
    case IOCTL_NETCLAMP_READ_COUNTERS: return sizeof(nc_counters_request);
    case IOCTL_NETCLAMP_GET_STATUS: return sizeof(nc_simple_request);
    case IOCTL_NETCLAMP_READ_EVENTS: return sizeof(nc_simple_request);
    default: return 0;
    }
}

static int nc_output_size_valid(uint32_t ioctl_code, const nc_request *request, uint32_t output_length)
{
    switch (ioctl_code) {
    case IOCTL_NETCLAMP_HANDSHAKE: return output_length == sizeof(nc_handshake_reply);
    case IOCTL_NETCLAMP_GET_STATUS: return output_length == sizeof(nc_status_reply);
    case IOCTL_NETCLAMP_READ_COUNTERS:
        /* max_entries is range-checked later; the product of a u32 and 48 fits 64 bits. */
        return (uint64_t)output_length ==
               sizeof(nc_counters_reply) + (uint64_t)request->counters.max_entries * sizeof(nc_rule_counters);
    case IOCTL_NETCLAMP_READ_EVENTS: {
        uint32_t records;
        if (output_length < sizeof(nc_events_reply) + sizeof(nc_event)) return 0;
        if ((output_length - sizeof(nc_events_reply)) % sizeof(nc_event) != 0) return 0;
        records = (uint32_t)((output_length - sizeof(nc_events_reply)) / sizeof(nc_event));
        return records <= NC_EVENTS_MAX_PER_READ;
    }
    default: /* the SET and REMOVE calls answer with a status only */
        return output_length == 0;
    }
}

nc_status nc_validate_request(const nc_session *session, uint32_t ioctl_code, const void *input,
                              uint32_t input_length, uint32_t output_length, nc_request *request_out)
{
    uint32_t expected = nc_input_size(ioctl_code);
    nc_status status;

    if (session == 0 || request_out == 0) return NC_E_INVALID_ARGUMENT;
    if (expected == 0) return NC_E_UNKNOWN_IOCTL;
    if (ioctl_code != IOCTL_NETCLAMP_HANDSHAKE && !session->handshake_done) return NC_E_NO_HANDSHAKE;
    if (input == 0 || input_length != expected) return NC_E_INPUT_SIZE;

    /* Work on a private copy from here on: a user buffer can change under us, a copy cannot. */
    memset(request_out, 0, sizeof(*request_out));
    memcpy(request_out, input, expected);

    if (request_out->header.magic != NETCLAMP_MAGIC) return NC_E_BAD_MAGIC;
    if (request_out->header.version != NETCLAMP_PROTOCOL_VERSION) return NC_E_BAD_VERSION;
    if (session->handshake_done && request_out->header.version != session->version) return NC_E_BAD_VERSION;
    if (request_out->header.length != expected) return NC_E_BAD_LENGTH;
    if (!nc_output_size_valid(ioctl_code, request_out, output_length)) return NC_E_OUTPUT_SIZE;

    status = nc_check_fields(ioctl_code, request_out);
    return status;
}
