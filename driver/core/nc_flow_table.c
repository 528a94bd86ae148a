/* Flow table: pool of stable records plus an open-addressing index. See nc_flow_table.h. */
#include <string.h>

#include "nc_flow_table.h"

/* WFP flow ids are handles that come out close together; mix them so they spread over the index
 * (the splitmix64 finaliser). */
static uint64_t nc_ft_mix(uint64_t key)
{
    key ^= key >> 30;
    key *= 0xbf58476d1ce4e5b9ull;
    key ^= key >> 27;
    key *= 0x94d049bb133111ebull;
    key ^= key >> 31;
    return key;
}

static uint32_t nc_ft_home(const nc_flow_table *table, uint64_t flow_id)
{
    return (uint32_t)(nc_ft_mix(flow_id) & table->index_mask);
}

nc_status nc_ft_init(nc_flow_table *table, nc_flow *flows, uint32_t capacity, uint32_t *index,
                     uint32_t index_size)
{
    uint32_t i;
    if (table == 0 || flows == 0 || index == 0 || capacity == 0) return NC_E_INVALID_ARGUMENT;
    if ((index_size & (index_size - 1)) != 0 || index_size / 2 < capacity) return NC_E_INVALID_ARGUMENT;
    memset(flows, 0, sizeof(*flows) * capacity);
    memset(index, 0, sizeof(*index) * index_size);
    for (i = 0; i < capacity; i++) flows[i].next_free = (i + 1 < capacity) ? i + 2 : 0;
    table->flows = flows;
    table->capacity = capacity;
    table->count = 0;
    table->index = index;
    table->index_mask = index_size - 1;
    table->free_head = 1;
    return NC_OK;
}

/* Index position holding flow_id, or the empty slot where it would go. */
static uint32_t nc_ft_probe(const nc_flow_table *table, uint64_t flow_id, int *found)
{
    uint32_t pos = nc_ft_home(table, flow_id);
    for (;;) {
        uint32_t entry = table->index[pos];
        if (entry == 0) {
            *found = 0;
            return pos;
        }
        if (table->flows[entry - 1].flow_id == flow_id) {
            *found = 1;
            return pos;
        }
        pos = (pos + 1) & table->index_mask; /* terminates: the index is never more than half full */
    }
}

nc_flow *nc_ft_insert(nc_flow_table *table, uint64_t flow_id, uint64_t app_key, uint32_t rule_id,
                      uint32_t process_id, nc_status *status_out)
{
    nc_status status_sink;
    nc_status *status = status_out ? status_out : &status_sink;
    int found;
    uint32_t pos, record;
    nc_flow *flow;

    if (flow_id == 0) {
        *status = NC_E_INVALID_ARGUMENT;
        return 0;
    }
    pos = nc_ft_probe(table, flow_id, &found);
    if (found) {
        *status = NC_E_EXISTS;
        return &table->flows[table->index[pos] - 1];
    }
    if (table->free_head == 0) {
        *status = NC_E_FULL;
        return 0;
    }
    record = table->free_head - 1;
    flow = &table->flows[record];
    table->free_head = flow->next_free;
    memset(flow, 0, sizeof(*flow));
    flow->flow_id = flow_id;
    flow->app_key = app_key;
    flow->rule_id = rule_id;
    flow->process_id = process_id;
    table->index[pos] = record + 1;
    table->count++;
    *status = NC_OK;
    return flow;
}

nc_flow *nc_ft_find(const nc_flow_table *table, uint64_t flow_id)
{
    int found;
    uint32_t pos;
    if (flow_id == 0) return 0;
    pos = nc_ft_probe(table, flow_id, &found);
    return found ? &table->flows[table->index[pos] - 1] : 0;
}

nc_status nc_ft_remove(nc_flow_table *table, uint64_t flow_id)
{
    int found;
    uint32_t hole, next, record;
    nc_flow *flow;
    unsigned dir;

    if (flow_id == 0) return NC_E_NOT_FOUND;
    hole = nc_ft_probe(table, flow_id, &found);
    if (!found) return NC_E_NOT_FOUND;
    record = table->index[hole] - 1;
    flow = &table->flows[record];
    for (dir = 0; dir < NC_DIR_COUNT; dir++) {
        if (flow->lanes[dir].head != 0 || flow->lanes[dir].queue != 0) return NC_E_INVALID_ARGUMENT;
    }

    /* Backward-shift deletion: pull later members of the probe run into the hole whenever the hole lies
     * on their path from their home slot, so lookups never need tombstones. */
    next = hole;
    for (;;) {
        uint32_t home;
        next = (next + 1) & table->index_mask;
        if (table->index[next] == 0) break;
        home = nc_ft_home(table, table->flows[table->index[next] - 1].flow_id);
        /* Entry at `next` may move to `hole` unless its home lies cyclically in (hole, next]. */
        if (hole <= next ? (home > hole && home <= next) : (home > hole || home <= next)) continue;
        table->index[hole] = table->index[next];
        hole = next;
    }
    table->index[hole] = 0;

    memset(flow, 0, sizeof(*flow));
    flow->next_free = table->free_head;
    table->free_head = record + 1;
    table->count--;
    return NC_OK;
}

uint32_t nc_ft_max_probe(const nc_flow_table *table)
{
    uint32_t pos, longest = 0;
    for (pos = 0; pos <= table->index_mask; pos++) {
        uint32_t entry = table->index[pos], home, distance;
        if (entry == 0) continue;
        home = nc_ft_home(table, table->flows[entry - 1].flow_id);
        distance = (pos - home) & table->index_mask;
        if (distance + 1 > longest) longest = distance + 1;
    }
    return longest;
}
