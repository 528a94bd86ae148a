/*
 * ioctl.c - the control device's I/O: IOCTL dispatch through the core's validators, and the event stream
 * (READ_EVENTS requests parked in a manual queue until the event ring has something).
 */
#include "nc_driver.h"

static EVT_WDF_IO_QUEUE_IO_DEVICE_CONTROL nc_evt_io_device_control;

NTSTATUS nc_create_queues(WDFDEVICE device)
{
    NTSTATUS status;
    WDF_IO_QUEUE_CONFIG queue_config;
    WDFQUEUE default_queue;

    /* Sequential: one client, short handlers; READ_EVENTS leaves this queue for the manual one, so a
     * parked read never blocks the next IOCTL. */
    WDF_IO_QUEUE_CONFIG_INIT_DEFAULT_QUEUE(&queue_config, WdfIoQueueDispatchSequential);
    queue_config.EvtIoDeviceControl = nc_evt_io_device_control;
    status = WdfIoQueueCreate(device, &queue_config, WDF_NO_OBJECT_ATTRIBUTES, &default_queue);
    if (!NT_SUCCESS(status)) {
        return status;
    }

    /* Requests in a manual queue are cancellable by the framework (handle closed, thread gone). */
    WDF_IO_QUEUE_CONFIG_INIT(&queue_config, WdfIoQueueDispatchManual);
    return WdfIoQueueCreate(device, &queue_config, WDF_NO_OBJECT_ATTRIBUTES, &g_nc.pending_reads);
}

/* The mapping driver/README.md documents; the addon maps the resulting Win32 errors to problem documents. */
NTSTATUS nc_status_to_ntstatus(nc_status status)
{
    switch (status) {
    case NC_OK: return STATUS_SUCCESS;
    case NC_E_UNKNOWN_IOCTL: return STATUS_INVALID_DEVICE_REQUEST;
    case NC_E_INPUT_SIZE: return STATUS_INFO_LENGTH_MISMATCH;
    case NC_E_OUTPUT_SIZE: return STATUS_BUFFER_TOO_SMALL;
    case NC_E_BAD_VERSION: return STATUS_REVISION_MISMATCH;
    case NC_E_NO_HANDSHAKE: return STATUS_INVALID_DEVICE_STATE;
    case NC_E_FULL: return STATUS_INSUFFICIENT_RESOURCES;
    case NC_E_EXISTS: return STATUS_OBJECT_NAME_COLLISION;
    case NC_E_NOT_FOUND: return STATUS_NOT_FOUND;
    case NC_E_BAD_MAGIC:
    case NC_E_BAD_LENGTH:
    case NC_E_RESERVED_NONZERO:
    case NC_E_OUT_OF_RANGE:
    case NC_E_UNKNOWN_SCOPE:
    case NC_E_INVALID_ARGUMENT:
    default: return STATUS_INVALID_PARAMETER;
    }
}

/* Completes parked READ_EVENTS while the ring has events. Any IRQL <= DISPATCH_LEVEL. */
void nc_service_pending_reads(void)
{
    for (;;) {
        KLOCK_QUEUE_HANDLE lock_handle;
        WDFREQUEST request;
        void *output;
        size_t output_length;
        UINT32 written;
        NTSTATUS status;

        KeAcquireInStackQueuedSpinLock(&g_nc.event_lock, &lock_handle);
        if (g_nc.events.count == 0 && g_nc.events.lost == 0) {
            KeReleaseInStackQueuedSpinLock(&lock_handle);
            return;
        }
        status = WdfIoQueueRetrieveNextRequest(g_nc.pending_reads, &request);
        if (!NT_SUCCESS(status)) {
            KeReleaseInStackQueuedSpinLock(&lock_handle);
            return; /* nobody waiting: the events stay in the ring */
        }
        status = WdfRequestRetrieveOutputBuffer(request, sizeof(nc_events_reply) + sizeof(nc_event), &output,
                                                &output_length);
        written = 0;
        if (NT_SUCCESS(status)) {
            /* The length was validated when the request arrived. */
            written = nc_ring_drain(&g_nc.events, output, (uint32_t)output_length);
        }
        KeReleaseInStackQueuedSpinLock(&lock_handle);
        WdfRequestCompleteWithInformation(request, status, written);
    }
}

void nc_post_event(UINT32 type, UINT32 rule_id, UINT64 flow_id, UINT64 app_key, UINT64 value,
                   UINT32 process_id)
{
    nc_event event;
    KLOCK_QUEUE_HANDLE lock_handle;
    LARGE_INTEGER now;

    if (g_nc.event_slots == NULL) {
        return;
    }
    RtlZeroMemory(&event, sizeof(event));
    KeQuerySystemTimePrecise(&now);
    event.type = type;
    event.rule_id = rule_id;
    event.flow_id = flow_id;
    event.app_key = app_key;
    event.timestamp_100ns = (UINT64)now.QuadPart;
    event.value = value;
    event.process_id = process_id;

    KeAcquireInStackQueuedSpinLock(&g_nc.event_lock, &lock_handle);
    (void)nc_ring_push(&g_nc.events, &event); /* a full ring counts the loss itself */
    KeReleaseInStackQueuedSpinLock(&lock_handle);

    if (g_nc.pending_reads != NULL) {
        nc_service_pending_reads();
    }
}

static void nc_reply_header(nc_msg_header *header, size_t length)
{
    nc_msg_header_init(header, (uint16_t)length);
}

static void nc_evt_io_device_control(WDFQUEUE queue, WDFREQUEST request, size_t output_buffer_length,
                                     size_t input_buffer_length, ULONG io_control_code)
{
    NTSTATUS status;
    nc_status verdict;
    nc_request copy;
    void *input = NULL;
    void *output = NULL;
    size_t length;
    ULONG_PTR information = 0;
    nc_file_context *file_context;

    UNREFERENCED_PARAMETER(queue);

    file_context = nc_get_file_context(WdfRequestGetFileObject(request));

    /* Buffers larger than 4 GiB cannot be a valid request; the validator takes 32-bit lengths. */
    if (input_buffer_length > MAXULONG || output_buffer_length > MAXULONG) {
        WdfRequestComplete(request, STATUS_INVALID_PARAMETER);
        return;
    }
    if (input_buffer_length > 0) {
        status = WdfRequestRetrieveInputBuffer(request, input_buffer_length, &input, &length);
        if (!NT_SUCCESS(status)) {
            WdfRequestComplete(request, status);
            return;
        }
    }
    /* The validator reads the input (METHOD_BUFFERED: the same system buffer as the output) into a private
     * copy before anything is written, and answers first for the handshake gate, before reading it. */
    verdict = nc_validate_request(&file_context->session, io_control_code, input, (uint32_t)input_buffer_length,
                                  (uint32_t)output_buffer_length, &copy);
    if (verdict != NC_OK) {
        WdfRequestComplete(request, nc_status_to_ntstatus(verdict));
        return;
    }
    if (output_buffer_length > 0) {
        status = WdfRequestRetrieveOutputBuffer(request, output_buffer_length, &output, &length);
        if (!NT_SUCCESS(status)) {
            WdfRequestComplete(request, status);
            return;
        }
        RtlZeroMemory(output, output_buffer_length); /* nothing uninitialised goes back to user mode */
    }

    switch (io_control_code) {
    case IOCTL_NETCLAMP_HANDSHAKE: {
        nc_handshake_reply *reply = (nc_handshake_reply *)output;
        nc_reply_header(&reply->header, sizeof(*reply));
        reply->client_nonce = copy.handshake.client_nonce;
        reply->driver_build = NC_DRIVER_BUILD;
        reply->capabilities = NETCLAMP_CAP_SHAPE_OUTBOUND | NETCLAMP_CAP_SHAPE_INBOUND |
                              NETCLAMP_CAP_PER_CONNECTION | NETCLAMP_CAP_EVENTS | NETCLAMP_CAP_IPV6;
        reply->max_app_limits = NC_MAX_RULES;
        reply->max_flows = NC_FLOW_CAPACITY;
        reply->rate_max_bytes_per_sec = NETCLAMP_RATE_MAX_BYTES_PER_SEC;
        nc_session_complete_handshake(&file_context->session, &copy.handshake);
        information = sizeof(*reply);
        status = STATUS_SUCCESS;
        break;
    }
    case IOCTL_NETCLAMP_SET_APP_LIMIT:
        status = nc_shaper_set_app_limit(&copy.app_limit);
        break;
    case IOCTL_NETCLAMP_SET_FLOW_LIMIT:
        status = nc_shaper_set_flow_limit(&copy.flow_limit);
        break;
    case IOCTL_NETCLAMP_REMOVE_LIMIT:
        status = nc_shaper_remove_limit(&copy.remove_limit);
        break;
    case IOCTL_NETCLAMP_READ_COUNTERS: {
        nc_counters_reply *reply = (nc_counters_reply *)output;
        UINT32 total = 0;
        reply->returned = nc_shaper_fill_counters(copy.counters.first_index, copy.counters.max_entries,
                                                  (nc_rule_counters *)(reply + 1), &total);
        reply->total = total;
        nc_reply_header(&reply->header, sizeof(*reply));
        information = sizeof(*reply) + (ULONG_PTR)reply->returned * sizeof(nc_rule_counters);
        status = STATUS_SUCCESS;
        break;
    }
    case IOCTL_NETCLAMP_GET_STATUS: {
        nc_status_reply *reply = (nc_status_reply *)output;
        nc_shaper_fill_status(reply);
        nc_reply_header(&reply->header, sizeof(*reply));
        information = sizeof(*reply);
        status = STATUS_SUCCESS;
        break;
    }
    case IOCTL_NETCLAMP_READ_EVENTS:
        /* Park it; then serve the queue once, in case an event arrived before the request was parked. */
        status = WdfRequestForwardToIoQueue(request, g_nc.pending_reads);
        if (NT_SUCCESS(status)) {
            nc_service_pending_reads();
            return;
        }
        break;
    default:
        /* The validator knows every code; reaching this is a mismatch between it and this switch. */
        status = STATUS_INVALID_DEVICE_REQUEST;
        break;
    }
    WdfRequestCompleteWithInformation(request, status, information);
}
