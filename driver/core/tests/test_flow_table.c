/* Flow table: basics, capacity, stable records, and a long randomized run against a reference model. */
#include <string.h>

#include "../nc_flow_table.h"
#include "nc_test.h"

#define CAPACITY 1024u
#define INDEX_SIZE 2048u

static nc_flow flows[CAPACITY];
static uint32_t flow_index[INDEX_SIZE];

static void test_init_rejects_bad_geometry(void)
{
    nc_flow_table table;
    CHECK_STATUS(nc_ft_init(&table, flows, CAPACITY, flow_index, 1000), NC_E_INVALID_ARGUMENT); /* not 2^k */
    CHECK_STATUS(nc_ft_init(&table, flows, CAPACITY, flow_index, 1024), NC_E_INVALID_ARGUMENT); /* < 2 * cap */
    CHECK_STATUS(nc_ft_init(&table, flows, 0, flow_index, INDEX_SIZE), NC_E_INVALID_ARGUMENT);
    CHECK_STATUS(nc_ft_init(&table, 0, CAPACITY, flow_index, INDEX_SIZE), NC_E_INVALID_ARGUMENT);
    CHECK_STATUS(nc_ft_init(&table, flows, CAPACITY, flow_index, INDEX_SIZE), NC_OK);
}

static void test_insert_find_remove(void)
{
    nc_flow_table table;
    nc_status status;
    nc_flow *flow;
    CHECK_STATUS(nc_ft_init(&table, flows, CAPACITY, flow_index, INDEX_SIZE), NC_OK);
    flow = nc_ft_insert(&table, 0xABCDEF, 77, 5, 4242, &status);
    CHECK_STATUS(status, NC_OK);
    CHECK(flow != 0 && flow->flow_id == 0xABCDEF && flow->app_key == 77 && flow->rule_id == 5 &&
          flow->process_id == 4242);
    CHECK(nc_ft_find(&table, 0xABCDEF) == flow);
    CHECK(nc_ft_insert(&table, 0xABCDEF, 1, 1, 1, &status) == flow);
    CHECK_STATUS(status, NC_E_EXISTS);
    CHECK(flow->app_key == 77); /* a duplicate insert does not overwrite */
    CHECK(nc_ft_insert(&table, 0, 1, 1, 1, &status) == 0);
    CHECK_STATUS(status, NC_E_INVALID_ARGUMENT);
    CHECK(nc_ft_find(&table, 0) == 0);
    CHECK(nc_ft_find(&table, 0xABCDEE) == 0);
    CHECK_STATUS(nc_ft_remove(&table, 0xABCDEF), NC_OK);
    CHECK_STATUS(nc_ft_remove(&table, 0xABCDEF), NC_E_NOT_FOUND);
    CHECK(nc_ft_find(&table, 0xABCDEF) == 0);
    CHECK_EQ_U64(table.count, 0);
}

static void test_full_table_refuses_then_accepts_after_remove(void)
{
    nc_flow_table table;
    nc_status status;
    uint32_t i;
    CHECK_STATUS(nc_ft_init(&table, flows, CAPACITY, flow_index, INDEX_SIZE), NC_OK);
    for (i = 1; i <= CAPACITY; i++) {
        if (nc_ft_insert(&table, i, 0, 0, 0, &status) == 0) {
            CHECK(!"insert below capacity failed");
            return;
        }
    }
    CHECK(nc_ft_insert(&table, CAPACITY + 1, 0, 0, 0, &status) == 0);
    CHECK_STATUS(status, NC_E_FULL);
    CHECK_STATUS(nc_ft_remove(&table, 17), NC_OK);
    CHECK(nc_ft_insert(&table, CAPACITY + 1, 0, 0, 0, &status) != 0);
    CHECK_STATUS(status, NC_OK);
    for (i = 1; i <= CAPACITY + 1; i++) CHECK((nc_ft_find(&table, i) != 0) == (i != 17));
    /* Sequential handles at load 0.5 must still hash to short probe runs. */
    printf("    %u sequential flow ids at load 0.5: longest probe %u\n", (unsigned)table.count, (unsigned)nc_ft_max_probe(&table));
    CHECK(nc_ft_max_probe(&table) <= 32);

    /* Ids that agree in all their low bits: a hash that only masked them would put all in one run. */
    CHECK_STATUS(nc_ft_init(&table, flows, CAPACITY, flow_index, INDEX_SIZE), NC_OK);
    for (i = 1; i <= CAPACITY; i++) CHECK(nc_ft_insert(&table, (uint64_t)i << 32, 0, 0, 0, 0) != 0);
    printf("    1024 ids with equal low 32 bits: longest probe %u\n", (unsigned)nc_ft_max_probe(&table));
    CHECK(nc_ft_max_probe(&table) <= 32);
}

static void test_records_do_not_move(void)
{
    nc_flow_table table;
    nc_flow *keep;
    uint32_t i;
    CHECK_STATUS(nc_ft_init(&table, flows, CAPACITY, flow_index, INDEX_SIZE), NC_OK);
    keep = nc_ft_insert(&table, 0x5555, 9, 9, 9, 0);
    for (i = 0; i < 50000; i++) {
        uint64_t id = 0x100000 + nc_test_random() % 2000;
        if (nc_test_random() % 2) nc_ft_insert(&table, id, 0, 0, 0, 0);
        else nc_ft_remove(&table, id);
    }
    CHECK(nc_ft_find(&table, 0x5555) == keep);
    CHECK(keep->flow_id == 0x5555 && keep->app_key == 9);
}

static void test_randomized_against_reference_model(void)
{
    /* Reference: membership of ids 1..KEYS in a plain array. Ids look like WFP handles: dense, sequential. */
    enum { KEYS = 3000, OPS = 300000 };
    static unsigned char present[KEYS + 1];
    nc_flow_table table;
    uint32_t members = 0, i, worst_probe = 0;
    memset(present, 0, sizeof present);
    CHECK_STATUS(nc_ft_init(&table, flows, CAPACITY, flow_index, INDEX_SIZE), NC_OK);
    for (i = 0; i < OPS; i++) {
        uint64_t id = 1 + nc_test_random() % KEYS;
        uint64_t base = 0xFFFF000000000000ull; /* high bits too, so the hash sees them */
        unsigned op = (unsigned)(nc_test_random() % 3);
        nc_status status;
        if (op == 0) {
            nc_flow *flow = nc_ft_insert(&table, base + id, id, 0, 0, &status);
            if (present[id]) {
                if (status != NC_E_EXISTS || flow == 0 || flow->app_key != id) { CHECK(!"duplicate insert"); return; }
            } else if (members == CAPACITY) {
                if (status != NC_E_FULL || flow != 0) { CHECK(!"insert into a full table"); return; }
            } else {
                if (status != NC_OK || flow == 0) { CHECK(!"insert failed"); return; }
                present[id] = 1;
                members++;
            }
        } else if (op == 1) {
            status = nc_ft_remove(&table, base + id);
            if (status != (present[id] ? NC_OK : NC_E_NOT_FOUND)) { CHECK(!"remove disagrees with model"); return; }
            if (present[id]) members--;
            present[id] = 0;
        } else {
            nc_flow *flow = nc_ft_find(&table, base + id);
            if ((flow != 0) != (present[id] != 0) || (flow && flow->app_key != id)) {
                CHECK(!"find disagrees with model");
                return;
            }
        }
        if (table.count != members) { CHECK_EQ_U64(table.count, members); return; }
        if (i % 10000 == 0) {
            uint32_t probe = nc_ft_max_probe(&table);
            if (probe > worst_probe) worst_probe = probe;
        }
    }
    for (i = 1; i <= KEYS; i++) CHECK((nc_ft_find(&table, 0xFFFF000000000000ull + i) != 0) == (present[i] != 0));
    CHECK(worst_probe <= 24);
}

static void test_remove_refuses_while_packets_are_queued(void)
{
    nc_flow_table table;
    nc_flow *flow;
    nc_packet packet = {0, 100, 0};
    CHECK_STATUS(nc_ft_init(&table, flows, CAPACITY, flow_index, INDEX_SIZE), NC_OK);
    flow = nc_ft_insert(&table, 99, 0, 0, 0, 0);
    flow->lanes[NC_DIR_INBOUND].head = &packet; /* as nc_aq_enqueue would leave it */
    CHECK_STATUS(nc_ft_remove(&table, 99), NC_E_INVALID_ARGUMENT);
    flow->lanes[NC_DIR_INBOUND].head = 0;
    CHECK_STATUS(nc_ft_remove(&table, 99), NC_OK);
}

const nc_test_case nc_flow_table_tests[] = {
    {"flow_table: init rejects bad geometry", test_init_rejects_bad_geometry},
    {"flow_table: insert, find, duplicate, remove", test_insert_find_remove},
    {"flow_table: full table refuses, accepts after a remove", test_full_table_refuses_then_accepts_after_remove},
    {"flow_table: records do not move under churn", test_records_do_not_move},
    {"flow_table: 300000 random operations agree with a reference model", test_randomized_against_reference_model},
    {"flow_table: remove refuses while packets are queued", test_remove_refuses_while_packets_are_queued},
    {0, 0},
};
