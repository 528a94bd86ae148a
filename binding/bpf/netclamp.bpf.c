// SPDX-License-Identifier: GPL-2.0
/*
 * NetClamp's Linux data plane. Attached at the cgroup v2 root through bpf_links owned by the engine's
 * process, so a crash detaches everything. See binding/README.md for the design.
 *
 * GPL: bpf_get_current_task_btf() and bpf_sock_destroy() need a GPL-compatible licence.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_tracing.h>
#include "netclamp_shared.h"

#define AF_INET 2
#define AF_INET6 10
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define IPPROTO_ICMPV6_NUM 58
#define TCP_ESTABLISHED_STATE 1
#define TCP_TIME_WAIT_STATE 6
#define TCP_LISTEN_STATE 10
#define TCP_NEW_SYN_RECV_STATE 12
#define NSEC_PER_SEC 1000000000ULL

char LICENSE[] SEC("license") = "GPL";

/* Written by user space through the mmapped .bss. */
volatile __u32 exempt_tgid;
volatile __u32 generation;
/* Non-zero while a FILENAME/DIRECTORY rule is installed: only then are execs reported. */
volatile __u32 exec_watch;
/* Shaping knobs (milliseconds of the rate); user space sets them at open(). */
volatile __u32 egress_debt_ms = 300;
volatile __u32 ingress_burst_ms = 40;
/* Installed rules that queue downloads (LIMIT, PER_APP, download rate): 0 lets nc_tc_ingress return at once. */
volatile __u32 queue_rules;

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC | BPF_F_CLONE);
	__type(key, int);
	__type(value, struct nc_sk_tag);
} nc_sk SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, NC_MAX_RULES);
	__type(key, __u32);
	__type(value, struct nc_rule);
} nc_rules SEC(".maps");

/* App identity -> ordered rule slots. Key {0,0} holds the rules for every application. Allocated on
 * demand: a list is 260 bytes and most machines hold a few dozen. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, NC_MAX_LISTS);
	__type(key, struct nc_app_key);
	__type(value, struct nc_rule_list);
} nc_lists SEC(".maps");

struct nc_bucket {
	struct bpf_spin_lock lock;
	__u32 epoch;         /* upload fairness: active sockets are counted per epoch of NC_FAIR_EPOCH_NS */
	__s64 tokens_up;
	__u64 stamp_up;
	__s64 tokens_down;
	__u64 stamp_down;
	__u64 epoch_start;
	__u16 flows_up, flows_up_prev;
	__u32 pad;
	__u64 rate_up_seen;  /* the upload rate the debt was run up under */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct nc_bucket_key);
	__type(value, struct nc_bucket);
} nc_buckets SEC(".maps");

/* Download queues: (namespace, bucket) -> HTB class and queue device; and each class's bucket, for nc_ingress. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, NC_MAX_QUEUES);
	__type(key, struct nc_queue_key);
	__type(value, struct nc_queue);
} nc_queues SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, NC_MAX_QUEUES);
	__type(key, __u32);
	__type(value, struct nc_queue_key);
} nc_queue_classes SEC(".maps");

/* Rule id -> counters; entries are created (and zeroed) by user space when a rule is applied. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, NC_MAX_RULES);
	__type(key, __u32);
	__type(value, struct nc_counters);
} nc_rule_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nc_counters);
} nc_totals SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct nc_app_key);
	__type(value, struct nc_counters);
} nc_app_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct nc_pid_stats);
} nc_pid_stats SEC(".maps");

extern int bpf_sock_destroy(struct sock_common *sk) __ksym;

struct nc_flow {
	__u32 addr[4];
	__u16 port;
	__u8 family;
	__u8 proto;
	__u8 dir;
};

static __always_inline __u8 nc_proto_class(__u32 ipproto)
{
	switch (ipproto) {
	case IPPROTO_TCP: return NC_PROTO_TCP;
	case IPPROTO_UDP: return NC_PROTO_UDP;
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6_NUM: return NC_PROTO_ICMP;
	default: return NC_PROTO_OTHER;
	}
}

static __always_inline void nc_identity_of(struct task_struct *task, struct nc_app_key *key)
{
	struct file *exe = BPF_CORE_READ(task, mm, exe_file);

	if (!exe)
		return; /* kernel threads: no executable, matched by global rules only */
	struct inode *inode = BPF_CORE_READ(exe, f_inode);
	key->ino = BPF_CORE_READ(inode, i_ino);
	key->dev = BPF_CORE_READ(inode, i_sb, s_dev);
}

/* Fills flow address from an IPv6 address, folding v4-mapped addresses into IPv4. */
static __always_inline void nc_set_addr6(struct nc_flow *f, const __u32 *a)
{
	if (a[0] == 0 && a[1] == 0 && a[2] == bpf_htonl(0xffff)) {
		f->family = 4;
		f->addr[0] = a[3];
		return;
	}
	f->family = 6;
	f->addr[0] = a[0];
	f->addr[1] = a[1];
	f->addr[2] = a[2];
	f->addr[3] = a[3];
}

static __always_inline int nc_match(const struct nc_rule *r, const struct nc_flow *f)
{
	if (!r->in_use || !(r->dir_mask & f->dir))
		return 0;
	if (r->proto && r->proto != f->proto)
		return 0;
	if (r->port && r->port != f->port)
		return 0;
	if (r->family) {
		if (r->family != f->family)
			return 0;
		if ((f->addr[0] & r->mask[0]) != r->addr[0] || (f->addr[1] & r->mask[1]) != r->addr[1] ||
		    (f->addr[2] & r->mask[2]) != r->addr[2] || (f->addr[3] & r->mask[3]) != r->addr[3])
			return 0;
	}
	return 1;
}

struct nc_decide_ctx {
	const struct nc_rule_list *list;
	const struct nc_flow *flow;
	__s32 slot;
};

static long nc_decide_step(__u64 index, void *data)
{
	struct nc_decide_ctx *c = data;
	__u32 i = index;

	if (i >= NC_MAX_LIST || i >= c->list->count)
		return 1;
	i &= NC_MAX_LIST - 1; /* the verifier loses the bound above after clang's reordering */
	__u32 slot = c->list->slots[i];
	struct nc_rule *r = bpf_map_lookup_elem(&nc_rules, &slot);
	if (r && nc_match(r, c->flow)) {
		c->slot = slot;
		return 1;
	}
	return 0;
}

/* The slot of the rule that decides this flow, or -1. Lists are pre-sorted by user space. */
static __always_inline __s32 nc_decide(const struct nc_app_key *app, const struct nc_flow *flow)
{
	struct nc_app_key global = {};
	const struct nc_rule_list *list = 0;

	if (app)
		list = bpf_map_lookup_elem(&nc_lists, app);
	if (!list)
		list = bpf_map_lookup_elem(&nc_lists, &global);
	if (!list)
		return -1;
	struct nc_decide_ctx c = { .list = list, .flow = flow, .slot = -1 };
	bpf_loop(NC_MAX_LIST, nc_decide_step, &c, 0);
	return c.slot;
}

static __always_inline void nc_count_rule(__u32 id, __u64 up, __u64 down, __u64 blocked)
{
	struct nc_counters *c = bpf_map_lookup_elem(&nc_rule_stats, &id);

	if (c) {
		c->bytes_up += up;
		c->bytes_down += down;
		c->blocked += blocked;
	}
}

static __always_inline void nc_count_totals(__u64 up, __u64 down, __u64 blocked)
{
	__u32 zero = 0;
	struct nc_counters *c = bpf_map_lookup_elem(&nc_totals, &zero);

	if (c) {
		c->bytes_up += up;
		c->bytes_down += down;
		c->blocked += blocked;
	}
}

static __always_inline void nc_count_app(const struct nc_sk_tag *t, __u64 up, __u64 down, __u64 blocked)
{
	if (!t)
		return;
	struct nc_counters *c = bpf_map_lookup_elem(&nc_app_stats, &t->app);
	if (!c) {
		struct nc_counters zero = {};
		bpf_map_update_elem(&nc_app_stats, &t->app, &zero, BPF_NOEXIST);
		c = bpf_map_lookup_elem(&nc_app_stats, &t->app);
	}
	if (c) {
		__sync_fetch_and_add(&c->bytes_up, up);
		__sync_fetch_and_add(&c->bytes_down, down);
		__sync_fetch_and_add(&c->blocked, blocked);
	}
	__u32 tgid = t->tgid;
	struct nc_pid_stats *p = bpf_map_lookup_elem(&nc_pid_stats, &tgid);
	if (!p) {
		struct nc_pid_stats fresh = { .app = t->app };
		bpf_map_update_elem(&nc_pid_stats, &tgid, &fresh, BPF_NOEXIST);
		p = bpf_map_lookup_elem(&nc_pid_stats, &tgid);
	}
	if (p) {
		__sync_fetch_and_add(&p->bytes_up, up);
		__sync_fetch_and_add(&p->bytes_down, down);
		__sync_fetch_and_add(&p->blocked, blocked);
	}
}

static __always_inline int nc_is_exempt_current(void)
{
	return (bpf_get_current_pid_tgid() >> 32) == exempt_tgid;
}

/* ---- identity ---------------------------------------------------------------------------------- */

SEC("cgroup/sock_create")
int nc_sock_create(struct bpf_sock *sk)
{
	struct nc_sk_tag *t = bpf_sk_storage_get(&nc_sk, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);

	if (!t)
		return 1;
	struct task_struct *task = bpf_get_current_task_btf();
	nc_identity_of(task, &t->app);
	t->tgid = BPF_CORE_READ(task, tgid);
	t->tagged = 1;
	t->cache_gen = 0;
	return 1;
}

/*
 * Tagging of sockets that existed before the programs were attached, run once at open() in two passes:
 * the task_file iterator knows the owning process but only holds an untrusted socket pointer, so it
 * records (socket address -> identity); the tcp/udp iterators hold trusted sockets and create the tags.
 */
struct nc_pretag {
	struct nc_app_key app;
	__u32 tgid;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct nc_pretag);
} nc_pretags SEC(".maps");

SEC("iter/task_file")
int nc_iter_owner(struct bpf_iter__task_file *ctx)
{
	struct task_struct *task = ctx->task;
	struct file *file = ctx->file;

	if (!task || !file)
		return 0;
	struct socket *sock = bpf_sock_from_file(file);
	if (!sock)
		return 0;
	struct sock *sk = sock->sk;
	if (!sk)
		return 0;
	__u16 family = sk->__sk_common.skc_family;
	if (family != AF_INET && family != AF_INET6)
		return 0;
	__u64 addr = (__u64)sk;
	struct nc_pretag owner = {};
	nc_identity_of(task, &owner.app);
	owner.tgid = task->tgid;
	bpf_map_update_elem(&nc_pretags, &addr, &owner, BPF_NOEXIST);
	return 0;
}

static __always_inline void nc_pretag_apply(void *sk, __u64 addr)
{
	struct nc_pretag *owner = bpf_map_lookup_elem(&nc_pretags, &addr);

	if (!owner)
		return;
	struct nc_sk_tag *t = bpf_sk_storage_get(&nc_sk, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!t || t->tagged)
		return;
	t->app = owner->app;
	t->tgid = owner->tgid;
	t->tagged = 1;
	t->initiator = 0; /* unknown for connections opened before us: direction follows the packet */
	t->cache_gen = 0;
}

SEC("iter/tcp")
int nc_iter_tag_tcp(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;

	if (!skc)
		return 0;
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(skc);
	if (tp)
		nc_pretag_apply(tp, (__u64)skc);
	return 0;
}

SEC("iter/udp")
int nc_iter_tag_udp(struct bpf_iter__udp *ctx)
{
	struct udp_sock *us = ctx->udp_sk;

	if (us)
		nc_pretag_apply(us, (__u64)us);
	return 0;
}

/* TCP direction = who initiated the connection. */
SEC("sockops")
int nc_sockops(struct bpf_sock_ops *skops)
{
	__u8 dir;

	switch (skops->op) {
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB: dir = NC_DIR_OUT; break;
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB: dir = NC_DIR_IN; break;
	default: return 1;
	}
	struct bpf_sock *sk = skops->sk;
	if (!sk)
		return 1;
	struct nc_sk_tag *t = bpf_sk_storage_get(&nc_sk, sk, 0, 0);
	if (t) {
		t->initiator = dir;
		t->cache_gen = 0;
	}
	return 1;
}

/* ---- connect / sendmsg: refuse blocked outbound flows up front ---------------------------------- */

static __always_inline int nc_sock_addr(struct bpf_sock_addr *ctx, struct nc_flow *flow, int is_connect)
{
	if (nc_is_exempt_current())
		return 1;
	struct bpf_sock *sk = ctx->sk;
	if (!sk)
		return 1;
	struct nc_sk_tag *t = bpf_sk_storage_get(&nc_sk, sk, 0, 0);
	flow->proto = nc_proto_class(ctx->protocol);
	flow->dir = NC_DIR_OUT;
	flow->port = bpf_ntohs((__u16)ctx->user_port);
	if (t && is_connect && flow->proto == NC_PROTO_TCP) {
		t->initiator = NC_DIR_OUT;
		t->cache_gen = 0;
	}
	__s32 slot = nc_decide(t ? &t->app : 0, flow);
	if (slot < 0)
		return 1;
	__u32 key = slot;
	struct nc_rule *r = bpf_map_lookup_elem(&nc_rules, &key);
	if (!r || r->action != NC_ACT_BLOCK)
		return 1;
	nc_count_rule(r->id, 0, 0, 1);
	nc_count_totals(0, 0, 1);
	nc_count_app(t, 0, 0, 1);
	return 0;
}

SEC("cgroup/connect4")
int nc_connect4(struct bpf_sock_addr *ctx)
{
	struct nc_flow flow = { .family = 4 };

	flow.addr[0] = ctx->user_ip4;
	return nc_sock_addr(ctx, &flow, 1);
}

SEC("cgroup/connect6")
int nc_connect6(struct bpf_sock_addr *ctx)
{
	struct nc_flow flow = {};
	__u32 a[4] = { ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3] };

	nc_set_addr6(&flow, a);
	return nc_sock_addr(ctx, &flow, 1);
}

SEC("cgroup/sendmsg4")
int nc_sendmsg4(struct bpf_sock_addr *ctx)
{
	struct nc_flow flow = { .family = 4 };

	flow.addr[0] = ctx->user_ip4;
	return nc_sock_addr(ctx, &flow, 0);
}

SEC("cgroup/sendmsg6")
int nc_sendmsg6(struct bpf_sock_addr *ctx)
{
	struct nc_flow flow = {};
	__u32 a[4] = { ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3] };

	nc_set_addr6(&flow, a);
	return nc_sock_addr(ctx, &flow, 0);
}

/* ---- packets: block, police, count -------------------------------------------------------------- */

/* Refill without 64-bit overflow: whole seconds and the remainder separately, and a long idle just fills. */
static __always_inline __s64 nc_refill(__s64 tokens, __u64 elapsed, __u64 rate, __s64 cap)
{
	__u64 secs = elapsed / NSEC_PER_SEC;

	if (secs > (__u64)cap / rate + 1)
		return cap;
	__u64 add = secs * rate + (elapsed % NSEC_PER_SEC) * rate / NSEC_PER_SEC;
	tokens += (__s64)add;
	return tokens > cap ? cap : tokens;
}

/*
 * Active sockets of a bucket, counted under its lock: a socket counts in the epoch in which it moved a
 * packet; the estimate is the larger of this epoch's and the previous epoch's count.
 */
static __always_inline __u32 nc_active_flows(struct nc_bucket *b, __u32 *sock_epoch, __u16 *flows, __u16 *flows_prev)
{
	if (*sock_epoch != b->epoch + 1) {
		*sock_epoch = b->epoch + 1;
		if (*flows < 0xffff)
			*flows += 1;
	}
	__u32 n = *flows > *flows_prev ? *flows : *flows_prev;
	return n ? n : 1;
}

/*
 * The socket's fair share of the bucket: its own token bucket at rate / flows. Returns whether the socket
 * is within its share (had tokens before this packet) and charges the packet.
 */
static __always_inline int nc_fair_charge(__s64 *tokens, __u64 *stamp, __u64 now, __u64 rate, __u32 flows, __u32 len)
{
	__u64 share = rate / flows;
	if (share == 0)
		share = 1;
	__s64 cap = share / 50 + 3000; /* ~20 ms of the share, at least two full-size segments */
	__s64 t = *tokens;
	if (*stamp == 0) {
		t = cap;
	} else if (now > *stamp) {
		t = nc_refill(t < -(__s64)NC_MAX_RATE ? -(__s64)NC_MAX_RATE : t, now - *stamp, share, cap);
	}
	if (now > *stamp)
		*stamp = now;
	int within = t >= 0;
	t -= len;
	/* Short memory: a socket that overdrew is judged by its last ~100 ms (plus one GSO skb), so the
	 * shares follow TCP's quick cwnd changes instead of oscillating over seconds. */
	__s64 floor = -(__s64)(share / 10) - 65536;
	if (t < floor)
		t = floor;
	*tokens = t;
	return within;
}

/*
 * Egress: pass while the bucket has tokens; in debt up to ~300 ms of rate pass with congestion
 * notification (TCP backs off instead of seeing a local drop); beyond that drop with CN.
 * Ingress: police with a ~40 ms burst; a segment that came through the bucket's download queue passes and is
 * charged.
 * Upload fairness (PER_APP, PER_PROCESS: several sockets share one bucket): a socket within its fair
 * share (rate / active sockets) passes the debt zone without CN and may go one more debt zone below
 * zero, while a socket above its share gets CN there and is dropped first; TCP's own response then moves
 * the shares together. (The same on ingress, letting sockets within their share dip below zero, cut
 * the goodput of 8 downloads at 16 MiB/s on loopback from 0.70 to 0.29: policing has no such lever.)
 * A TCP packet sent with nothing else in flight (`lone`) may go one skb deeper than the zone: dropping
 * it leaves no ACK to come that would restart sending, so TCP waits for its 200 ms probe timer (on
 * loopback, where one segment is 64 KiB, that stall held 256 KiB/s to 0.75 of the limit; 0.92 with this).
 * TCP packets without payload (SYN, ACK, FIN: at most NC_CONTROL_LEN bytes) are charged, never dropped:
 * dropping them stalls handshakes (connect timeouts at low rates) and the other direction's flows.
 * Returns the cgroup_skb verdict (0 drop, 1 pass, 2 drop+CN, 3 pass+CN).
 */
static __always_inline int nc_police(const struct nc_rule *r, struct nc_sk_tag *t, struct __sk_buff *skb,
				     int egress, __u32 len, int tcp, int lone)
{
	int control = tcp && len <= NC_CONTROL_LEN;
	__u64 rate = egress ? r->rate_up : r->rate_down;

	if (rate == 0)
		return 1;
	if (rate > NC_MAX_RATE)
		rate = NC_MAX_RATE;

	struct nc_bucket_key key = { .rule_id = r->id, .scope = r->scope };
	if (r->scope == NC_SCOPE_PROCESS) {
		key.a = t ? t->tgid : 0;
	} else if (r->scope == NC_SCOPE_CONNECTION) {
		key.a = bpf_get_socket_cookie(skb);
	} else if (t) {
		key.a = t->app.dev;
		key.b = t->app.ino;
	}
	int fair = t && r->scope != NC_SCOPE_CONNECTION;

	int queued = 0;
	if (!egress && r->scope == NC_SCOPE_APP && (skb->priority >> 16) == NC_QUEUE_MAJOR) {
		/* Came through this bucket's download queue (nc_tc_ingress): its HTB class held it to the rate.
		 * It passes, and is charged so the app's policed (higher-RTT) connections share the budget. */
		__u32 classid = skb->priority & ~0xfU; /* the queue's class; the low bits chose the child */
		struct nc_queue_key *owner = bpf_map_lookup_elem(&nc_queue_classes, &classid);
		queued = owner && owner->rule_id == r->id && owner->dev == key.a && owner->ino == key.b;
	}

	__s64 cap, debt_limit;
	if (egress) {
		/* A 64 KiB GSO skb fits through the debt zone, so the positive part can stay small: what an
		 * idle app may burst (cap + debt zone) is the overshoot a transfer after idle shows. */
		cap = rate / 50;
		debt_limit = rate * egress_debt_ms / 1000;
		if (debt_limit < (__s64)NC_MIN_BUCKET + 32768)
			debt_limit = NC_MIN_BUCKET + 32768;
	} else {
		cap = rate * ingress_burst_ms / 1000;
		if (cap < (__s64)NC_MIN_BUCKET)
			cap = NC_MIN_BUCKET;
		debt_limit = 0;
	}

	/* Clock sampled before the lock: a later stamp under the lock than ours means we are the older
	 * sample, and that elapsed time is ignored rather than read as a huge positive one. */
	__u64 now = bpf_ktime_get_ns();
	struct nc_bucket *b = bpf_map_lookup_elem(&nc_buckets, &key);
	if (!b) {
		struct nc_bucket fresh = {};
		fresh.tokens_up = cap;
		fresh.tokens_down = cap;
		fresh.stamp_up = now;
		fresh.stamp_down = now;
		fresh.epoch_start = now;
		fresh.rate_up_seen = rate;
		bpf_map_update_elem(&nc_buckets, &key, &fresh, BPF_NOEXIST);
		b = bpf_map_lookup_elem(&nc_buckets, &key);
		if (!b)
			return 1;
	}

	int verdict;
	bpf_spin_lock(&b->lock);
	if (now > b->epoch_start && now - b->epoch_start >= NC_FAIR_EPOCH_NS) {
		int skipped = now - b->epoch_start >= 2 * NC_FAIR_EPOCH_NS;
		b->flows_up_prev = skipped ? 0 : b->flows_up;
		b->flows_up = 0;
		b->epoch++;
		b->epoch_start = now;
	}
	if (egress) {
		/* -1: the bucket has one socket (or no fairness): the plain bucket decides. */
		int within = -1;
		__s64 fair_before = 0;
		if (fair) {
			__u32 flows = nc_active_flows(b, &t->fair_epoch_up, &b->flows_up, &b->flows_up_prev);
			fair_before = t->fair_tokens_up;
			int w = nc_fair_charge(&t->fair_tokens_up, &t->fair_stamp_up, now, rate, flows, len);
			if (flows > 1)
				within = w;
		}
		__s64 tokens = b->tokens_up;
		if (now > b->stamp_up) {
			tokens = nc_refill(tokens, now - b->stamp_up, rate, cap);
			b->stamp_up = now;
		}
		if (b->rate_up_seen != rate) {
			/* A new limit applies from now: a debt run up under a higher one is forgiven (repaying it
			 * at the lower rate stalled the transfer for a second), and under a lower one it keeps its
			 * depth in time, not in bytes (else the deeper zone is a burst at once). */
			__u64 old_rate = b->rate_up_seen;
			if (tokens < 0 && old_rate > rate) {
				tokens = 0;
			} else if (tokens < 0 && old_rate) {
				__u64 per_ms = old_rate / 1000 ? old_rate / 1000 : 1;
				__u64 debt_ms = (__u64)(-tokens) / per_ms;
				if (debt_ms > 2 * egress_debt_ms + 1000)
					debt_ms = 2 * egress_debt_ms + 1000;
				tokens = -(__s64)(debt_ms * rate / 1000);
			}
			b->rate_up_seen = rate;
		}
		if (tokens > cap)
			tokens = cap; /* the rate may have been lowered */
		tokens -= len;
		if (tokens >= 0) {
			verdict = 1;
		} else if (-tokens <= debt_limit) {
			verdict = within == 1 ? 1 : 3;
		} else if ((within == 1 && -tokens <= 2 * debt_limit) || control ||
			   (lone && -tokens <= debt_limit + (__s64)NC_MIN_BUCKET)) {
			verdict = 3;
		} else {
			tokens += len; /* dropped: not charged */
			if (fair)
				t->fair_tokens_up = fair_before;
			verdict = 2;
		}
		b->tokens_up = tokens;
	} else {
		__s64 tokens = b->tokens_down;
		if (now > b->stamp_down) {
			tokens = nc_refill(tokens, now - b->stamp_down, rate, cap);
			b->stamp_down = now;
		}
		if (tokens > cap)
			tokens = cap;
		if (tokens >= (__s64)len || control || queued) {
			tokens -= len;
			verdict = 1;
		} else {
			verdict = 0;
		}
		if (tokens < -cap)
			tokens = -cap; /* queued traffic overdraws by at most one burst */
		b->tokens_down = tokens;
	}
	bpf_spin_unlock(&b->lock);
	return verdict;
}

/* Remote address, port and IP protocol of a packet whose network header is at offset `o`. */
static __always_inline int nc_parse_at(struct __sk_buff *skb, __u32 o, int egress, struct nc_flow *f)
{
	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		__u8 vihl;
		struct { __u8 proto; __u8 csum[2]; __u32 saddr; __u32 daddr; } __attribute__((packed)) h;
		__u16 frag;
		if (bpf_skb_load_bytes(skb, o, &vihl, 1) || bpf_skb_load_bytes(skb, o + 6, &frag, 2) ||
		    bpf_skb_load_bytes(skb, o + 9, &h, sizeof(h)))
			return -1;
		f->family = 4;
		f->addr[0] = egress ? h.daddr : h.saddr;
		__u32 l4 = (vihl & 0xf) * 4;
		if ((h.proto == IPPROTO_TCP || h.proto == IPPROTO_UDP) && !(bpf_ntohs(frag) & 0x1fff)) {
			__u16 ports[2];
			if (!bpf_skb_load_bytes(skb, o + l4, ports, 4))
				f->port = bpf_ntohs(egress ? ports[1] : ports[0]);
		}
		return 0;
	}
	if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		__u8 nexthdr;
		__u32 a[4];
		if (bpf_skb_load_bytes(skb, o + 6, &nexthdr, 1) || bpf_skb_load_bytes(skb, o + (egress ? 24 : 8), a, 16))
			return -1;
		nc_set_addr6(f, a);
		if (nexthdr == IPPROTO_TCP || nexthdr == IPPROTO_UDP) {
			__u16 ports[2];
			if (!bpf_skb_load_bytes(skb, o + 40, ports, 4))
				f->port = bpf_ntohs(egress ? ports[1] : ports[0]);
		}
		return 0;
	}
	return -1;
}

static __always_inline int nc_parse(struct __sk_buff *skb, int egress, struct nc_flow *f)
{
	return nc_parse_at(skb, 0, egress, f);
}

static __always_inline int nc_skb(struct __sk_buff *skb, int egress)
{
	__u32 len = skb->len;
	struct bpf_sock *sk = skb->sk;

	if (!sk)
		return 1;
	sk = bpf_sk_fullsock(sk);
	if (!sk)
		return 1;
	struct nc_sk_tag *t = bpf_sk_storage_get(&nc_sk, sk, 0, 0);
	if (t && t->tgid == exempt_tgid)
		return 1;

	__u64 up = egress ? len : 0, down = egress ? 0 : len;
	struct nc_flow flow = {};
	flow.proto = nc_proto_class(sk->protocol);
	__u32 gen = generation + 1;
	__s32 slot;
	int cacheable = 0;

	if (flow.proto == NC_PROTO_TCP && t && t->initiator && sk->state != TCP_LISTEN_STATE) {
		cacheable = 1;
		if (t->cache_gen == gen)
			goto decided;
	}
	if (nc_parse(skb, egress, &flow) < 0) {
		nc_count_totals(up, down, 0);
		return 1;
	}
	if (flow.proto == NC_PROTO_TCP && t && t->initiator)
		flow.dir = t->initiator;
	else if (flow.proto == NC_PROTO_TCP && sk->state == TCP_LISTEN_STATE)
		flow.dir = NC_DIR_IN;
	else
		flow.dir = egress ? NC_DIR_OUT : NC_DIR_IN;
	slot = nc_decide(t ? &t->app : 0, &flow);
	if (cacheable && t) {
		t->cache_slot = slot;
		t->cache_gen = gen;
	}
	goto evaluate;
decided:
	slot = t->cache_slot;
evaluate:
	if (slot < 0) {
		nc_count_totals(up, down, 0);
		nc_count_app(t, up, down, 0);
		return 1;
	}
	__u32 key = slot;
	struct nc_rule *r = bpf_map_lookup_elem(&nc_rules, &key);
	if (!r || !r->in_use) {
		nc_count_totals(up, down, 0);
		nc_count_app(t, up, down, 0);
		return 1;
	}
	if (r->action == NC_ACT_BLOCK) {
		nc_count_rule(r->id, 0, 0, 1);
		nc_count_totals(0, 0, 1);
		nc_count_app(t, 0, 0, 1);
		return 0;
	}
	int verdict = 1;
	if (r->action == NC_ACT_LIMIT) {
		int tcp = flow.proto == NC_PROTO_TCP;
		int lone = 0; /* read here: nc_police decides under the bucket's spin lock, where no helper may run */
		if (tcp && egress) {
			struct bpf_tcp_sock *tp = bpf_tcp_sock(sk);
			lone = tp && tp->packets_out == 0;
		}
		verdict = nc_police(r, t, skb, egress, len, tcp, lone);
	}
	if (verdict & 1) {
		nc_count_rule(r->id, up, down, 0);
		nc_count_totals(up, down, 0);
		nc_count_app(t, up, down, 0);
	}
	return verdict;
}

SEC("cgroup_skb/egress")
int nc_egress(struct __sk_buff *skb)
{
	return nc_skb(skb, 1);
}

SEC("cgroup_skb/ingress")
int nc_ingress(struct __sk_buff *skb)
{
	return nc_skb(skb, 0);
}

/* ---- download queueing: tc ingress -> queue device (IFB + HTB) ---------------------------------- */

#define NC_TC_NEXT -1 /* TCX_NEXT / TC_ACT_UNSPEC: not ours, the interface's other tc programs and filters decide */
#define ETH_HLEN 14

/*
 * On the ingress hook (a tcx link, so it goes with the process) of every Ethernet-type interface and of
 * loopback (14-byte link header): a TCP segment with payload for a socket whose rule limits downloads
 * PER_APP goes to the queue device of the interface's network namespace, whose HTB class for the bucket
 * releases it at the rate, and IFB hands it back to this interface's ingress.
 * Queueing instead of dropping is what holds a download to its limit at ~0 RTT: policing drops there
 * left the sender waiting for its timers (0.14-0.78 of the limit on loopback). Segments without payload
 * are never queued (ACKs of the app's uploads would wait behind its downloads). A bucket without a class
 * yet asks user space for one and is policed by nc_ingress meanwhile.
 */
SEC("tc")
int nc_tc_ingress(struct __sk_buff *skb)
{
	if (!queue_rules)
		return NC_TC_NEXT;

	struct bpf_sock_tuple tuple = {};
	__u32 tuple_len, l4;
	struct { __u16 sport; __u16 dport; __u32 seq; __u32 ack; __u8 doff; __u8 flags; } __attribute__((packed)) tcp;
	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		struct { __u8 vihl; __u8 tos; __u16 len; __u16 id; __u16 frag; __u8 ttl; __u8 proto; __u16 csum;
			 __u32 saddr; __u32 daddr; } __attribute__((packed)) ip;
		if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)))
			return NC_TC_NEXT;
		if (ip.proto != IPPROTO_TCP || (bpf_ntohs(ip.frag) & 0x3fff))
			return NC_TC_NEXT;
		l4 = ETH_HLEN + (ip.vihl & 0xf) * 4;
		if (bpf_skb_load_bytes(skb, l4, &tcp, sizeof(tcp)))
			return NC_TC_NEXT;
		tuple.ipv4.saddr = ip.saddr;
		tuple.ipv4.daddr = ip.daddr;
		tuple.ipv4.sport = tcp.sport;
		tuple.ipv4.dport = tcp.dport;
		tuple_len = sizeof(tuple.ipv4);
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		struct { __u32 vtcflow; __u16 len; __u8 nexthdr; __u8 hops; __u32 saddr[4]; __u32 daddr[4]; }
			__attribute__((packed)) ip6;
		if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip6, sizeof(ip6)))
			return NC_TC_NEXT;
		if (ip6.nexthdr != IPPROTO_TCP)
			return NC_TC_NEXT;
		l4 = ETH_HLEN + 40;
		if (bpf_skb_load_bytes(skb, l4, &tcp, sizeof(tcp)))
			return NC_TC_NEXT;
		__builtin_memcpy(tuple.ipv6.saddr, ip6.saddr, 16);
		__builtin_memcpy(tuple.ipv6.daddr, ip6.daddr, 16);
		tuple.ipv6.sport = tcp.sport;
		tuple.ipv6.dport = tcp.dport;
		tuple_len = sizeof(tuple.ipv6);
	} else {
		return NC_TC_NEXT;
	}
	if (skb->len <= l4 + (tcp.doff >> 4) * 4)
		return NC_TC_NEXT;

	struct bpf_sock *sk = bpf_sk_lookup_tcp(skb, &tuple, tuple_len, BPF_F_CURRENT_NETNS, 0);
	if (!sk)
		return NC_TC_NEXT;
	/* The socket's namespace: bpf_get_netns_cookie(skb) answers init_net for a packet without a socket.
	 * Its minimum RTT (the handshake's, for a receiver that sends little): at 20 ms policing holds a
	 * download (0.98-1.02) where a queue undershoots at low rates with several connections (256 KiB/s x4:
	 * 0.87; segments wait long enough for the sender to resend them), but from 2 MiB/s the queue is as
	 * accurate and fair (Jain 1.00 against policing's 0.56-0.71 with 4 connections). */
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
	__u64 netns = tp ? BPF_CORE_READ(tp, inet_conn.icsk_inet.sk.__sk_common.skc_net.net, net_cookie) : 0;
	__u32 min_rtt_us = tp ? BPF_CORE_READ(tp, rtt_min.s[0].v) : ~0U;
	struct nc_sk_tag *t = bpf_sk_storage_get(&nc_sk, sk, 0, 0);
	struct nc_app_key app = {};
	__s32 slot = -1;
	int decide = 0;
	__u8 initiator = 0;
	if (t && t->tagged && t->tgid != exempt_tgid && netns) {
		app = t->app;
		initiator = t->initiator;
		if (initiator && t->cache_gen == generation + 1)
			slot = t->cache_slot;
		else
			decide = 1;
	}
	bpf_sk_release(sk);
	if (decide) {
		struct nc_flow flow = { .proto = NC_PROTO_TCP };
		if (nc_parse_at(skb, ETH_HLEN, 0, &flow) < 0)
			return NC_TC_NEXT;
		flow.dir = initiator ? initiator : NC_DIR_IN;
		slot = nc_decide(&app, &flow);
	}
	if (slot < 0)
		return NC_TC_NEXT;
	__u32 k = slot;
	struct nc_rule *r = bpf_map_lookup_elem(&nc_rules, &k);
	if (!r || !r->in_use || r->action != NC_ACT_LIMIT || !r->rate_down || r->scope != NC_SCOPE_APP)
		return NC_TC_NEXT;
	if (min_rtt_us > NC_QUEUE_MAX_RTT_US && r->rate_down < NC_QUEUE_ANY_RTT_RATE)
		return NC_TC_NEXT;

	struct nc_queue_key key = { .netns = netns, .ino = app.ino, .dev = app.dev, .rule_id = r->id };
	struct nc_queue *q = bpf_map_lookup_elem(&nc_queues, &key);
	if (!q) {
		struct nc_queue ask = {};
		bpf_map_update_elem(&nc_queues, &key, &ask, BPF_NOEXIST);
		return NC_TC_NEXT;
	}
	if (!q->classid || !q->ifindex)
		return NC_TC_NEXT;
	/* Consecutive local (or remote) ports of an app's connections land in distinct child classes. */
	skb->priority = q->classid + 1 + (bpf_ntohs(tcp.sport) + bpf_ntohs(tcp.dport)) % NC_QUEUE_FLOWS;
	return bpf_redirect(q->ifindex, 0);
}

/* ---- tear down connections a new rule blocks ----------------------------------------------------- */

SEC("iter/tcp")
int nc_iter_destroy(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;

	if (!skc)
		return 0;
	int state = skc->skc_state;
	if (state == TCP_LISTEN_STATE || state == TCP_TIME_WAIT_STATE || state == TCP_NEW_SYN_RECV_STATE)
		return 0;
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(skc);
	if (!tp)
		return 0;
	struct nc_sk_tag *t = bpf_sk_storage_get(&nc_sk, tp, 0, 0);
	if (!t || t->tgid == exempt_tgid)
		return 0;

	struct nc_flow flow = { .proto = NC_PROTO_TCP };
	if (skc->skc_family == AF_INET) {
		flow.family = 4;
		flow.addr[0] = skc->skc_daddr;
	} else {
		__u32 a[4];
		BPF_CORE_READ_INTO(&a, skc, skc_v6_daddr.in6_u.u6_addr32);
		nc_set_addr6(&flow, a);
	}
	flow.port = bpf_ntohs(skc->skc_dport);
	flow.dir = t->initiator ? t->initiator : NC_DIR_BOTH;

	__s32 slot = nc_decide(&t->app, &flow);
	if (slot < 0)
		return 0;
	__u32 key = slot;
	struct nc_rule *r = bpf_map_lookup_elem(&nc_rules, &key);
	if (!r || r->action != NC_ACT_BLOCK)
		return 0;
	if (bpf_sock_destroy(skc) == 0) {
		nc_count_rule(r->id, 0, 0, 1);
		nc_count_totals(0, 0, 1);
		nc_count_app(t, 0, 0, 1);
	}
	return 0;
}

/* ---- exec notifications (FILENAME / DIRECTORY rules) --------------------------------------------- */

/*
 * Every exec, reported to user space as it happens, so pattern rules can add the new executable's
 * identity before the process does much networking. Sockets it opens before the identity lands are
 * still judged per packet against the identity lists, so late tagging only delays enforcement.
 */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} nc_execs SEC(".maps");

SEC("tp_btf/sched_process_exec")
int BPF_PROG(nc_exec, struct task_struct *task, pid_t old_pid, struct linux_binprm *bprm)
{
	if (!exec_watch)
		return 0;
	struct nc_exec_event *e = bpf_ringbuf_reserve(&nc_execs, sizeof(*e), 0);

	if (!e)
		return 0;
	struct file *file = BPF_CORE_READ(bprm, file);
	struct inode *inode = BPF_CORE_READ(file, f_inode);

	e->app.ino = BPF_CORE_READ(inode, i_ino);
	e->app.dev = BPF_CORE_READ(inode, i_sb, s_dev);
	e->app.pad = 0;
	e->tgid = BPF_CORE_READ(task, tgid);
	e->pad = 0;
	bpf_probe_read_kernel_str(e->name, sizeof(e->name), BPF_CORE_READ(file, f_path.dentry, d_name.name));
	bpf_probe_read_kernel_str(e->path, sizeof(e->path), BPF_CORE_READ(bprm, filename));
	bpf_ringbuf_submit(e, 0);
	return 0;
}
