/* IOCTL validators: every valid request accepted, every malformed one refused with the right reason. */
#include <stdlib.h>
#include <string.h>

#include "../nc_validate.h"
#include "nc_test.h"

typedef struct fixture {
    uint32_t code;
    const char *name;
    nc_request request; /* a valid input */
    uint32_t input_length;
    uint32_t output_length; /* a valid output length */
} fixture;

enum { FIXTURES = 7 };
static fixture fixtures[FIXTURES];

static void build_fixtures(void)
{
    fixture *f;
    memset(fixtures, 0, sizeof fixtures);

    f = &fixtures[0];
    f->code = IOCTL_NETCLAMP_HANDSHAKE;
    f->name = "HANDSHAKE";
    f->input_length = sizeof(nc_handshake_request);
    f->output_length = sizeof(nc_handshake_reply);
    f->request.handshake.client_nonce = 0x1122334455667788ull;

    f = &fixtures[1];
    f->code = IOCTL_NETCLAMP_SET_APP_LIMIT;
    f->name = "SET_APP_LIMIT";
    f->input_length = sizeof(nc_app_limit_request);
    f->request.app_limit.rule_id = 42;
    f->request.app_limit.scope = NETCLAMP_SCOPE_PER_APP;
    f->request.app_limit.app_key = 0xDEADBEEFCAFEF00Dull;
    f->request.app_limit.up_bytes_per_sec = 262144;
    f->request.app_limit.down_bytes_per_sec = 1048576;
    f->request.app_limit.burst_ms = 100;

    f = &fixtures[2];
    f->code = IOCTL_NETCLAMP_SET_FLOW_LIMIT;
    f->name = "SET_FLOW_LIMIT";
    f->input_length = sizeof(nc_flow_limit_request);
    f->request.flow_limit.flow_id = 0x7777;
    f->request.flow_limit.down_bytes_per_sec = 5000;

    f = &fixtures[3];
    f->code = IOCTL_NETCLAMP_REMOVE_LIMIT;
    f->name = "REMOVE_LIMIT";
    f->input_length = sizeof(nc_remove_limit_request);
    f->request.remove_limit.kind = NETCLAMP_REMOVE_APP_LIMIT;
    f->request.remove_limit.rule_id = 42;

    f = &fixtures[4];
    f->code = IOCTL_NETCLAMP_READ_COUNTERS;
    f->name = "READ_COUNTERS";
    f->input_length = sizeof(nc_counters_request);
    f->request.counters.max_entries = 16;
    f->output_length = sizeof(nc_counters_reply) + 16 * sizeof(nc_rule_counters);

    f = &fixtures[5];
    f->code = IOCTL_NETCLAMP_GET_STATUS;
    f->name = "GET_STATUS";
    f->input_length = sizeof(nc_simple_request);
    f->output_length = sizeof(nc_status_reply);

    f = &fixtures[6];
    f->code = IOCTL_NETCLAMP_READ_EVENTS;
    f->name = "READ_EVENTS";
    f->input_length = sizeof(nc_simple_request);
    f->output_length = sizeof(nc_events_reply) + 32 * sizeof(nc_event);

    for (f = fixtures; f < fixtures + FIXTURES; f++) nc_msg_header_init(&f->request.header, (uint16_t)f->input_length);
}

static nc_session open_session(void)
{
    nc_session session;
    nc_request parsed;
    nc_session_init(&session);
    build_fixtures();
    if (nc_validate_request(&session, IOCTL_NETCLAMP_HANDSHAKE, &fixtures[0].request, fixtures[0].input_length,
                            fixtures[0].output_length, &parsed) == NC_OK)
        nc_session_complete_handshake(&session, &parsed.handshake);
    return session;
}

static nc_status validate(const nc_session *session, const fixture *f, const nc_request *request)
{
    nc_request parsed;
    return nc_validate_request(session, f->code, request, f->input_length, f->output_length, &parsed);
}

/* Validates a modified copy of fixture i; `edit` changes the copy through the union. */
#define EXPECT_EDIT(session, i, edit, expected)                      \
    do {                                                             \
        nc_request copy_ = fixtures[i].request;                      \
        nc_request *r = &copy_;                                      \
        edit;                                                        \
        CHECK_STATUS(validate(&(session), &fixtures[i], r), expected); \
    } while (0)

static void test_every_valid_request_is_accepted(void)
{
    nc_session session = open_session();
    nc_request parsed;
    int i;
    CHECK(session.handshake_done == 1 && session.version == NETCLAMP_PROTOCOL_VERSION);
    for (i = 0; i < FIXTURES; i++) {
        nc_status status = validate(&session, &fixtures[i], &fixtures[i].request);
        if (status != NC_OK) printf("    %s: %s\n", fixtures[i].name, nc_status_name(status));
        CHECK_STATUS(status, NC_OK);
    }
    /* The parsed copy equals the input and is independent of it. */
    {
        nc_request input = fixtures[1].request;
        CHECK_STATUS(nc_validate_request(&session, fixtures[1].code, &input, fixtures[1].input_length, 0, &parsed), NC_OK);
        input.app_limit.up_bytes_per_sec = UINT64_MAX; /* a racing user thread */
        CHECK_EQ_U64(parsed.app_limit.up_bytes_per_sec, 262144);
        CHECK(memcmp(&parsed.app_limit, &fixtures[1].request.app_limit, sizeof parsed.app_limit) == 0);
    }
    /* boundaries that are still valid */
    EXPECT_EDIT(session, 1, r->app_limit.rule_id = NETCLAMP_RULE_ID_MAX, NC_OK);
    EXPECT_EDIT(session, 1, r->app_limit.up_bytes_per_sec = NETCLAMP_RATE_MAX_BYTES_PER_SEC, NC_OK);
    EXPECT_EDIT(session, 1, (r->app_limit.up_bytes_per_sec = 1, r->app_limit.down_bytes_per_sec = 0), NC_OK);
    EXPECT_EDIT(session, 1, r->app_limit.burst_ms = NETCLAMP_BURST_MS_MAX, NC_OK);
    EXPECT_EDIT(session, 1, r->app_limit.burst_ms = 0, NC_OK);
    EXPECT_EDIT(session, 1, r->app_limit.app_key = 0, NC_OK);
    EXPECT_EDIT(session, 1, r->app_limit.scope = NETCLAMP_SCOPE_PER_PROCESS, NC_OK);
    EXPECT_EDIT(session, 1, r->app_limit.scope = NETCLAMP_SCOPE_PER_CONNECTION, NC_OK);
    EXPECT_EDIT(session, 3, (r->remove_limit.kind = NETCLAMP_REMOVE_FLOW_LIMIT, r->remove_limit.rule_id = 0,
                             r->remove_limit.flow_id = 9), NC_OK);
    EXPECT_EDIT(session, 0, r->handshake.client_nonce = 0, NC_OK);
}

static void test_nothing_but_the_handshake_before_the_handshake(void)
{
    nc_session session;
    int i;
    nc_session_init(&session);
    build_fixtures();
    for (i = 1; i < FIXTURES; i++) CHECK_STATUS(validate(&session, &fixtures[i], &fixtures[i].request), NC_E_NO_HANDSHAKE);
    /* a failed handshake opens nothing */
    EXPECT_EDIT(session, 0, r->header.version = 2, NC_E_BAD_VERSION);
    CHECK(session.handshake_done == 0);
    CHECK_STATUS(validate(&session, &fixtures[5], &fixtures[5].request), NC_E_NO_HANDSHAKE);
}

static void test_unknown_codes_are_refused(void)
{
    nc_session session = open_session();
    nc_request parsed;
    static const uint32_t unknown[] = {
        0,
        CTL_CODE(NETCLAMP_DEVICE_TYPE, 0x907, METHOD_BUFFERED, FILE_READ_ACCESS),
        CTL_CODE(NETCLAMP_DEVICE_TYPE, 0x8FF, METHOD_BUFFERED, FILE_READ_ACCESS),
        CTL_CODE(NETCLAMP_DEVICE_TYPE, 0x900, 3 /* METHOD_NEITHER */, FILE_READ_ACCESS | FILE_WRITE_ACCESS),
        CTL_CODE(NETCLAMP_DEVICE_TYPE, 0x901, METHOD_BUFFERED, FILE_READ_ACCESS), /* right function, less access */
        CTL_CODE(0x8E44, 0x904, METHOD_BUFFERED, FILE_READ_ACCESS),                 /* other device type */
        0xFFFFFFFFu,
    };
    size_t i;
    for (i = 0; i < sizeof unknown / sizeof unknown[0]; i++)
        CHECK_STATUS(nc_validate_request(&session, unknown[i], &fixtures[0].request, sizeof(nc_handshake_request),
                                         sizeof(nc_handshake_reply), &parsed),
                     NC_E_UNKNOWN_IOCTL);
    CHECK_STATUS(nc_validate_request(0, IOCTL_NETCLAMP_GET_STATUS, &fixtures[5].request, 8, 64, &parsed),
                 NC_E_INVALID_ARGUMENT);
    CHECK_STATUS(nc_validate_request(&session, IOCTL_NETCLAMP_GET_STATUS, &fixtures[5].request, 8, 64, 0),
                 NC_E_INVALID_ARGUMENT);
}

static void test_wrong_input_sizes_are_refused(void)
{
    nc_session session = open_session();
    unsigned char big[sizeof(nc_request) + 64];
    nc_request parsed;
    int i;
    for (i = 0; i < FIXTURES; i++) {
        const fixture *f = &fixtures[i];
        static const int deltas[] = {-1, 1, 8, -8};
        size_t d;
        memset(big, 0, sizeof big);
        memcpy(big, &f->request, f->input_length);
        for (d = 0; d < sizeof deltas / sizeof deltas[0]; d++) {
            uint32_t length = (uint32_t)((int)f->input_length + deltas[d]);
            CHECK_STATUS(nc_validate_request(&session, f->code, big, length, f->output_length, &parsed), NC_E_INPUT_SIZE);
        }
        CHECK_STATUS(nc_validate_request(&session, f->code, big, 0, f->output_length, &parsed), NC_E_INPUT_SIZE);
        CHECK_STATUS(nc_validate_request(&session, f->code, 0, f->input_length, f->output_length, &parsed), NC_E_INPUT_SIZE);
        CHECK_STATUS(nc_validate_request(&session, f->code, 0, 0, f->output_length, &parsed), NC_E_INPUT_SIZE);
        CHECK_STATUS(nc_validate_request(&session, f->code, big, 0xFFFFFFFFu, f->output_length, &parsed), NC_E_INPUT_SIZE);
    }
}

static void test_bad_headers_are_refused(void)
{
    nc_session session = open_session();
    int i;
    for (i = 0; i < FIXTURES; i++) {
        EXPECT_EDIT(session, i, r->header.magic = 0, NC_E_BAD_MAGIC);
        EXPECT_EDIT(session, i, r->header.magic = NETCLAMP_MAGIC ^ 0x80000000u, NC_E_BAD_MAGIC);
        EXPECT_EDIT(session, i, r->header.magic = 0x4E434C4Bu /* byte-swapped */, NC_E_BAD_MAGIC);
        EXPECT_EDIT(session, i, r->header.version = 0, NC_E_BAD_VERSION);
        EXPECT_EDIT(session, i, r->header.version = NETCLAMP_PROTOCOL_VERSION + 1, NC_E_BAD_VERSION);
        EXPECT_EDIT(session, i, r->header.version = 0xFFFF, NC_E_BAD_VERSION);
        EXPECT_EDIT(session, i, r->header.length = 0, NC_E_BAD_LENGTH);
        EXPECT_EDIT(session, i, r->header.length = (uint16_t)(fixtures[i].input_length + 8), NC_E_BAD_LENGTH);
        EXPECT_EDIT(session, i, r->header.length = (uint16_t)(fixtures[i].input_length - 1), NC_E_BAD_LENGTH);
    }
}

static void test_wrong_output_sizes_are_refused(void)
{
    nc_session session = open_session();
    nc_request parsed;
    int i;
    for (i = 0; i < FIXTURES; i++) {
        const fixture *f = &fixtures[i];
        uint32_t wrong[4], w;
        wrong[0] = f->output_length + 1;
        wrong[1] = f->output_length ? f->output_length - 1 : 8;
        wrong[2] = f->output_length ? 0 : sizeof(nc_status_reply);
        wrong[3] = 0xFFFFFFFFu;
        for (w = 0; w < 4; w++)
            CHECK_STATUS(nc_validate_request(&session, f->code, &f->request, f->input_length, wrong[w], &parsed),
                         NC_E_OUTPUT_SIZE);
    }
    /* counters: room for more or fewer entries than asked */
    CHECK_STATUS(nc_validate_request(&session, fixtures[4].code, &fixtures[4].request, fixtures[4].input_length,
                                     sizeof(nc_counters_reply) + 15 * sizeof(nc_rule_counters), &parsed),
                 NC_E_OUTPUT_SIZE);
    /* events: not a whole number of records, no record at all, more than one read may take */
    CHECK_STATUS(nc_validate_request(&session, fixtures[6].code, &fixtures[6].request, 8,
                                     sizeof(nc_events_reply) + sizeof(nc_event) + 4, &parsed),
                 NC_E_OUTPUT_SIZE);
    CHECK_STATUS(nc_validate_request(&session, fixtures[6].code, &fixtures[6].request, 8, sizeof(nc_events_reply), &parsed),
                 NC_E_OUTPUT_SIZE);
    CHECK_STATUS(nc_validate_request(&session, fixtures[6].code, &fixtures[6].request, 8,
                                     sizeof(nc_events_reply) + (NC_EVENTS_MAX_PER_READ + 1) * sizeof(nc_event), &parsed),
                 NC_E_OUTPUT_SIZE);
    CHECK_STATUS(nc_validate_request(&session, fixtures[6].code, &fixtures[6].request, 8,
                                     sizeof(nc_events_reply) + NC_EVENTS_MAX_PER_READ * sizeof(nc_event), &parsed),
                 NC_OK);
}

static void test_reserved_and_flag_fields_must_be_zero(void)
{
    nc_session session = open_session();
    EXPECT_EDIT(session, 0, r->handshake.flags = 1, NC_E_RESERVED_NONZERO);
    EXPECT_EDIT(session, 0, r->handshake.reserved = 0x80000000u, NC_E_RESERVED_NONZERO);
    EXPECT_EDIT(session, 1, r->app_limit.flags = 4, NC_E_RESERVED_NONZERO);
    EXPECT_EDIT(session, 2, r->flow_limit.flags = 1, NC_E_RESERVED_NONZERO);
    EXPECT_EDIT(session, 3, r->remove_limit.flow_id = 5, NC_E_RESERVED_NONZERO); /* APP removal names a flow */
    EXPECT_EDIT(session, 3, (r->remove_limit.kind = NETCLAMP_REMOVE_FLOW_LIMIT, r->remove_limit.flow_id = 5,
                             r->remove_limit.rule_id = 42), NC_E_RESERVED_NONZERO);
}

static void test_out_of_range_values_are_refused(void)
{
    nc_session session = open_session();
    /* app limit */
    EXPECT_EDIT(session, 1, r->app_limit.rule_id = 0, NC_E_OUT_OF_RANGE);
    EXPECT_EDIT(session, 1, r->app_limit.rule_id = NETCLAMP_RULE_ID_MAX + 1, NC_E_OUT_OF_RANGE);
    EXPECT_EDIT(session, 1, r->app_limit.rule_id = 0xFFFFFFFFu, NC_E_OUT_OF_RANGE);
    EXPECT_EDIT(session, 1, r->app_limit.up_bytes_per_sec = NETCLAMP_RATE_MAX_BYTES_PER_SEC + 1, NC_E_OUT_OF_RANGE);
    EXPECT_EDIT(session, 1, r->app_limit.down_bytes_per_sec = UINT64_MAX, NC_E_OUT_OF_RANGE);
    EXPECT_EDIT(session, 1, r->app_limit.down_bytes_per_sec = 1ull << 63, NC_E_OUT_OF_RANGE); /* negative as int64 */
    EXPECT_EDIT(session, 1, (r->app_limit.up_bytes_per_sec = 0, r->app_limit.down_bytes_per_sec = 0), NC_E_OUT_OF_RANGE);
    EXPECT_EDIT(session, 1, r->app_limit.burst_ms = NETCLAMP_BURST_MS_MAX + 1, NC_E_OUT_OF_RANGE);
    EXPECT_EDIT(session, 1, r->app_limit.burst_ms = 0xFFFFFFFFu, NC_E_OUT_OF_RANGE);
    /* flow limit */
    EXPECT_EDIT(session, 2, r->flow_limit.flow_id = 0, NC_E_OUT_OF_RANGE);
    EXPECT_EDIT(session, 2, r->flow_limit.down_bytes_per_sec = 0, NC_E_OUT_OF_RANGE);
    EXPECT_EDIT(session, 2, r->flow_limit.up_bytes_per_sec = NETCLAMP_RATE_MAX_BYTES_PER_SEC + 1, NC_E_OUT_OF_RANGE);
    EXPECT_EDIT(session, 2, r->flow_limit.burst_ms = NETCLAMP_BURST_MS_MAX + 1, NC_E_OUT_OF_RANGE);
    /* remove */
    EXPECT_EDIT(session, 3, r->remove_limit.kind = 0, NC_E_OUT_OF_RANGE);
    EXPECT_EDIT(session, 3, r->remove_limit.kind = 3, NC_E_OUT_OF_RANGE);
    EXPECT_EDIT(session, 3, r->remove_limit.rule_id = 0, NC_E_OUT_OF_RANGE);
    EXPECT_EDIT(session, 3, r->remove_limit.rule_id = 0x80000000u, NC_E_OUT_OF_RANGE);
    EXPECT_EDIT(session, 3, (r->remove_limit.kind = NETCLAMP_REMOVE_FLOW_LIMIT, r->remove_limit.rule_id = 0),
                NC_E_OUT_OF_RANGE); /* flow id 0 */
    /* counters: entry count out of range (output sized to match, so the range check is what refuses) */
    {
        nc_request parsed, copy = fixtures[4].request;
        copy.counters.max_entries = 0;
        CHECK_STATUS(nc_validate_request(&session, fixtures[4].code, &copy, 16, sizeof(nc_counters_reply), &parsed),
                     NC_E_OUT_OF_RANGE);
        copy.counters.max_entries = NETCLAMP_COUNTERS_MAX_ENTRIES + 1;
        CHECK_STATUS(nc_validate_request(&session, fixtures[4].code, &copy, 16,
                                         sizeof(nc_counters_reply) + copy.counters.max_entries * sizeof(nc_rule_counters),
                                         &parsed),
                     NC_E_OUT_OF_RANGE);
        copy.counters.max_entries = 0xFFFFFFFFu; /* the output check must not overflow into a match */
        CHECK_STATUS(nc_validate_request(&session, fixtures[4].code, &copy, 16, 0xFFFFFFE8u, &parsed), NC_E_OUTPUT_SIZE);
    }
}

static void test_unknown_scopes_are_refused(void)
{
    nc_session session = open_session();
    EXPECT_EDIT(session, 1, r->app_limit.scope = 0, NC_E_UNKNOWN_SCOPE);
    EXPECT_EDIT(session, 1, r->app_limit.scope = 4, NC_E_UNKNOWN_SCOPE);
    EXPECT_EDIT(session, 1, r->app_limit.scope = 0xFFFFFFFFu, NC_E_UNKNOWN_SCOPE);
    EXPECT_EDIT(session, 1, r->app_limit.scope = 0x100 | NETCLAMP_SCOPE_PER_APP, NC_E_UNKNOWN_SCOPE);
}

/* Flip every single bit of every valid request: a flip in the header or in a reserved/flag field is always
 * refused; a flip elsewhere is refused exactly when it takes a field out of its documented range. */
static int in_range_after_flip(uint32_t code, const nc_request *r)
{
    switch (code) {
    case IOCTL_NETCLAMP_SET_APP_LIMIT:
        return r->app_limit.rule_id >= 1 && r->app_limit.rule_id <= NETCLAMP_RULE_ID_MAX &&
               r->app_limit.scope >= 1 && r->app_limit.scope <= 3 &&
               r->app_limit.up_bytes_per_sec <= NETCLAMP_RATE_MAX_BYTES_PER_SEC &&
               r->app_limit.down_bytes_per_sec <= NETCLAMP_RATE_MAX_BYTES_PER_SEC &&
               (r->app_limit.up_bytes_per_sec | r->app_limit.down_bytes_per_sec) != 0 &&
               r->app_limit.burst_ms <= NETCLAMP_BURST_MS_MAX && r->app_limit.flags == 0;
    case IOCTL_NETCLAMP_SET_FLOW_LIMIT:
        return r->flow_limit.flow_id != 0 && r->flow_limit.up_bytes_per_sec <= NETCLAMP_RATE_MAX_BYTES_PER_SEC &&
               r->flow_limit.down_bytes_per_sec <= NETCLAMP_RATE_MAX_BYTES_PER_SEC &&
               (r->flow_limit.up_bytes_per_sec | r->flow_limit.down_bytes_per_sec) != 0 &&
               r->flow_limit.burst_ms <= NETCLAMP_BURST_MS_MAX && r->flow_limit.flags == 0;
    case IOCTL_NETCLAMP_REMOVE_LIMIT:
        return (r->remove_limit.kind == 1 && r->remove_limit.flow_id == 0 && r->remove_limit.rule_id >= 1 &&
                r->remove_limit.rule_id <= NETCLAMP_RULE_ID_MAX) ||
               (r->remove_limit.kind == 2 && r->remove_limit.rule_id == 0 && r->remove_limit.flow_id != 0);
    case IOCTL_NETCLAMP_READ_COUNTERS:
        return r->counters.max_entries == 16; /* the output length is fixed for 16 */
    case IOCTL_NETCLAMP_HANDSHAKE:
        return r->handshake.flags == 0 && r->handshake.reserved == 0;
    default:
        return 1;
    }
}

static void test_every_single_bit_flip_is_judged_correctly(void)
{
    nc_session session = open_session();
    unsigned flips = 0, refused = 0;
    int i;
    for (i = 0; i < FIXTURES; i++) {
        const fixture *f = &fixtures[i];
        uint32_t bit;
        for (bit = 0; bit < f->input_length * 8; bit++) {
            nc_request copy = f->request;
            nc_status status;
            ((unsigned char *)&copy)[bit / 8] ^= (unsigned char)(1u << (bit % 8));
            status = validate(&session, f, &copy);
            flips++;
            if (status != NC_OK) refused++;
            if (bit < 64 && status == NC_OK) {
                printf("    %s: header bit %u flipped and accepted\n", f->name, (unsigned)bit);
                CHECK(!"header flip accepted");
            }
            if (bit >= 64 && (status == NC_OK) != in_range_after_flip(f->code, &copy)) {
                printf("    %s: bit %u flipped, got %s\n", f->name, (unsigned)bit, nc_status_name(status));
                CHECK(!"flip judged wrongly");
            }
        }
    }
    printf("    %u single-bit flips of valid requests, %u refused\n", flips, refused);
}

/* Random buffers of random lengths under every code: nothing is accepted, nothing is read out of bounds
 * (the test build runs under AddressSanitizer). */
static void test_random_garbage_is_refused(void)
{
    nc_session session = open_session();
    unsigned n;
    for (n = 0; n < 200000; n++) {
        const fixture *f = &fixtures[n % FIXTURES];
        uint32_t length = (uint32_t)(nc_test_random() % 80);
        unsigned char *buffer = (unsigned char *)malloc(length ? length : 1); /* exact size, for ASan */
        nc_request parsed;
        uint32_t b;
        for (b = 0; b < length; b++) buffer[b] = (unsigned char)nc_test_random();
        if (n % 4 == 0 && length >= 4) memcpy(buffer, &fixtures[0].request.header.magic, 4); /* get past magic */
        if (nc_validate_request(&session, f->code, buffer, length, f->output_length, &parsed) == NC_OK) {
            free(buffer);
            CHECK(!"random buffer accepted");
            return;
        }
        free(buffer);
    }
}

const nc_test_case nc_validate_tests[] = {
    {"validate: every valid request is accepted, as a private copy", test_every_valid_request_is_accepted},
    {"validate: nothing but the handshake before the handshake", test_nothing_but_the_handshake_before_the_handshake},
    {"validate: unknown codes are refused", test_unknown_codes_are_refused},
    {"validate: wrong input sizes are refused", test_wrong_input_sizes_are_refused},
    {"validate: bad magic, version and length are refused", test_bad_headers_are_refused},
    {"validate: wrong output sizes are refused", test_wrong_output_sizes_are_refused},
    {"validate: reserved and flag fields must be zero", test_reserved_and_flag_fields_must_be_zero},
    {"validate: out-of-range values are refused", test_out_of_range_values_are_refused},
    {"validate: unknown scopes are refused", test_unknown_scopes_are_refused},
    {"validate: every single-bit flip of a valid request is judged correctly",
     test_every_single_bit_flip_is_judged_correctly},
    {"validate: 200000 random buffers are refused", test_random_garbage_is_refused},
    {0, 0},
};
