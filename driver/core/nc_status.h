/*
 * Result codes of the portable core. The WDK glue maps them to NTSTATUS (nc_status_name exists for logs
 * and tests); the user-mode client sees the NTSTATUS as a Win32 error and maps that to a problem document.
 */
#ifndef NC_STATUS_H
#define NC_STATUS_H

#ifdef __cplusplus
extern "C" {
#endif

typedef enum nc_status {
    NC_OK = 0,
    NC_E_INVALID_ARGUMENT,   /* a core API was called with arguments outside its documented bounds */
    NC_E_UNKNOWN_IOCTL,      /* STATUS_INVALID_DEVICE_REQUEST */
    NC_E_INPUT_SIZE,         /* STATUS_INFO_LENGTH_MISMATCH */
    NC_E_OUTPUT_SIZE,        /* STATUS_BUFFER_TOO_SMALL (or too large / not whole records) */
    NC_E_BAD_MAGIC,          /* STATUS_INVALID_PARAMETER */
    NC_E_BAD_VERSION,        /* STATUS_REVISION_MISMATCH */
    NC_E_BAD_LENGTH,         /* header.length disagrees with the buffer: STATUS_INVALID_PARAMETER */
    NC_E_NO_HANDSHAKE,       /* STATUS_INVALID_DEVICE_STATE */
    NC_E_RESERVED_NONZERO,   /* STATUS_INVALID_PARAMETER */
    NC_E_OUT_OF_RANGE,       /* STATUS_INVALID_PARAMETER */
    NC_E_UNKNOWN_SCOPE,      /* STATUS_INVALID_PARAMETER */
    NC_E_FULL,               /* table or queue full: STATUS_INSUFFICIENT_RESOURCES */
    NC_E_EXISTS,             /* STATUS_OBJECT_NAME_COLLISION */
    NC_E_NOT_FOUND           /* STATUS_NOT_FOUND */
} nc_status;

const char *nc_status_name(nc_status status);

#ifdef __cplusplus
}
#endif

#endif /* NC_STATUS_H */
