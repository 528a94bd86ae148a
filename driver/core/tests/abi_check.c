/*
 * Compile-only proof that the shared header means the same bytes to every compiler that includes it.
 * Built with `cc -c` (LP64: long is 8 bytes) and `x86_64-w64-mingw32-gcc -c` (LLP64: long is 4 bytes), as C
 * and as C++; the header's own static asserts do the work, the ones below make sure this really is LP64
 * or LLP64 (so the check is not vacuous) and that Windows' own CTL_CODE agrees with the header's fallback.
 */
#if defined(_WIN32)
#include <windows.h>
#include <winioctl.h> /* the real CTL_CODE, defined before the header sees it */
#endif

#include "../../include/netclamp_ioctl.h"

#if defined(_WIN32)
NC_STATIC_ASSERT(sizeof(long) == 4 && sizeof(void *) == 8, "mingw x64 target is LLP64");
NC_STATIC_ASSERT(IOCTL_NETCLAMP_HANDSHAKE == 0x8E43E400u, "winioctl.h CTL_CODE agrees");
NC_STATIC_ASSERT(sizeof(GUID) == sizeof(nc_guid), "GUID and nc_guid agree");
static const GUID netclamp_provider_guid = NETCLAMP_PROVIDER_GUID_INIT; /* the initializers fit GUID */
#define GUID_FIRST_FIELD Data1
#else
NC_STATIC_ASSERT(sizeof(long) == 8 && sizeof(void *) == 8, "host target is LP64");
static const nc_guid netclamp_provider_guid = NETCLAMP_PROVIDER_GUID_INIT;
#define GUID_FIRST_FIELD data1
#endif

#ifdef __cplusplus
extern "C" {
#endif
unsigned netclamp_abi_check_anchor(void);
#ifdef __cplusplus
}
#endif

/* Something to emit, so the object file is not empty and the GUID is used. */
unsigned netclamp_abi_check_anchor(void)
{
    return (unsigned)sizeof(nc_app_limit_request) + (unsigned)netclamp_provider_guid.GUID_FIRST_FIELD;
}
