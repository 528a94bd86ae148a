/* The shared header at run time: the app key hash, distinct codes and GUIDs. Its layout is proven at
 * compile time (static asserts), here and in abi_check.c under mingw-w64 (LLP64). */
#include <string.h>

#include "../../include/netclamp_ioctl.h"
#include "nc_test.h"

static void test_app_key_is_fnv1a_64(void)
{
    /* Published FNV-1a 64 test vectors. */
    CHECK_EQ_U64(nc_app_key_from_app_id((const uint8_t *)"", 0), 0xcbf29ce484222325ull);
    CHECK_EQ_U64(nc_app_key_from_app_id((const uint8_t *)"a", 1), 0xaf63dc4c8601ec8cull);
    CHECK_EQ_U64(nc_app_key_from_app_id((const uint8_t *)"foobar", 6), 0x85944171f73967e8ull);
    {
        /* An app id blob as WFP has it: UTF-16LE device path with its NUL; case matters byte-wise. */
        static const char path[] = "\\device\\harddiskvolume3\\windows\\system32\\curl.exe";
        uint8_t blob[2 * sizeof path];
        size_t i;
        uint64_t key;
        for (i = 0; i < sizeof path; i++) {
            blob[2 * i] = (uint8_t)path[i];
            blob[2 * i + 1] = 0;
        }
        key = nc_app_key_from_app_id(blob, (uint32_t)sizeof blob);
        CHECK(key != 0);
        blob[20] ^= 0x20; /* one letter's case */
        CHECK(nc_app_key_from_app_id(blob, (uint32_t)sizeof blob) != key);
    }
}

static void test_ioctl_codes_are_distinct_and_decode(void)
{
    static const uint32_t codes[] = {IOCTL_NETCLAMP_HANDSHAKE,     IOCTL_NETCLAMP_SET_APP_LIMIT,
                                     IOCTL_NETCLAMP_SET_FLOW_LIMIT, IOCTL_NETCLAMP_REMOVE_LIMIT,
                                     IOCTL_NETCLAMP_READ_COUNTERS,  IOCTL_NETCLAMP_GET_STATUS,
                                     IOCTL_NETCLAMP_READ_EVENTS};
    size_t i, j;
    for (i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        CHECK((codes[i] >> 16) == NETCLAMP_DEVICE_TYPE);
        CHECK((codes[i] & 3) == METHOD_BUFFERED);
        CHECK(((codes[i] >> 2) & 0xFFF) == 0x900 + i);
        CHECK(((codes[i] >> 14) & 3) != 0); /* every call needs at least read access */
        for (j = i + 1; j < sizeof codes / sizeof codes[0]; j++) CHECK(codes[i] != codes[j]);
    }
    /* state-changing calls need write access */
    CHECK(((IOCTL_NETCLAMP_SET_APP_LIMIT >> 14) & FILE_WRITE_ACCESS) != 0);
    CHECK(((IOCTL_NETCLAMP_SET_FLOW_LIMIT >> 14) & FILE_WRITE_ACCESS) != 0);
    CHECK(((IOCTL_NETCLAMP_REMOVE_LIMIT >> 14) & FILE_WRITE_ACCESS) != 0);
}

static void test_guids_are_distinct(void)
{
    static const nc_guid guids[] = {
        NETCLAMP_PROVIDER_GUID_INIT,
        NETCLAMP_SUBLAYER_GUID_INIT,
        NETCLAMP_CALLOUT_FLOW_ESTABLISHED_V4_GUID_INIT,
        NETCLAMP_CALLOUT_FLOW_ESTABLISHED_V6_GUID_INIT,
        NETCLAMP_CALLOUT_OUTBOUND_TRANSPORT_V4_GUID_INIT,
        NETCLAMP_CALLOUT_OUTBOUND_TRANSPORT_V6_GUID_INIT,
        NETCLAMP_CALLOUT_INBOUND_TRANSPORT_V4_GUID_INIT,
        NETCLAMP_CALLOUT_INBOUND_TRANSPORT_V6_GUID_INIT,
    };
    size_t i, j;
    for (i = 0; i < sizeof guids / sizeof guids[0]; i++) {
        CHECK((guids[i].data3 >> 12) == 4); /* version 4 (random) */
        for (j = i + 1; j < sizeof guids / sizeof guids[0]; j++) CHECK(memcmp(&guids[i], &guids[j], sizeof guids[i]) != 0);
    }
}

static void test_header_init_frames_requests(void)
{
    nc_app_limit_request request;
    memset(&request, 0xAB, sizeof request);
    nc_msg_header_init(&request.header, (uint16_t)sizeof request);
    CHECK(request.header.magic == NETCLAMP_MAGIC);
    CHECK(request.header.version == NETCLAMP_PROTOCOL_VERSION);
    CHECK(request.header.length == 48);
    /* on the wire the magic reads "NCLK" (little-endian hosts: x86, x64, arm64) */
    CHECK(memcmp(&request.header.magic, "NCLK", 4) == 0);
}

const nc_test_case nc_header_tests[] = {
    {"header: app key is FNV-1a 64 over the app id blob", test_app_key_is_fnv1a_64},
    {"header: IOCTL codes are distinct and decode as declared", test_ioctl_codes_are_distinct_and_decode},
    {"header: GUIDs are distinct version-4 GUIDs", test_guids_are_distinct},
    {"header: nc_msg_header_init frames requests", test_header_init_frames_requests},
    {0, 0},
};
