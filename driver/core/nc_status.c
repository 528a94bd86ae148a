#include "nc_status.h"

const char *nc_status_name(nc_status status)
{
    switch (status) {
    case NC_OK: return "NC_OK";
    case NC_E_INVALID_ARGUMENT: return "NC_E_INVALID_ARGUMENT";
    case NC_E_UNKNOWN_IOCTL: return "NC_E_UNKNOWN_IOCTL";
    case NC_E_INPUT_SIZE: return "NC_E_INPUT_SIZE";
    case NC_E_OUTPUT_SIZE: return "NC_E_OUTPUT_SIZE";
    case NC_E_BAD_MAGIC: return "NC_E_BAD_MAGIC";
    case NC_E_BAD_VERSION: return "NC_E_BAD_VERSION";
    case NC_E_BAD_LENGTH: return "NC_E_BAD_LENGTH";
    case NC_E_NO_HANDSHAKE: return "NC_E_NO_HANDSHAKE";
    case NC_E_RESERVED_NONZERO: return "NC_E_RESERVED_NONZERO";
    case NC_E_OUT_OF_RANGE: return "NC_E_OUT_OF_RANGE";
    case NC_E_UNKNOWN_SCOPE: return "NC_E_UNKNOWN_SCOPE";
    case NC_E_FULL: return "NC_E_FULL";
    case NC_E_EXISTS: return "NC_E_EXISTS";
    case NC_E_NOT_FOUND: return "NC_E_NOT_FOUND";
    }
    return "NC_E_UNKNOWN";
}
