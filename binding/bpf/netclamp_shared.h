/*
 * Layouts shared by the BPF programs (netclamp.bpf.c) and the Linux backend (user space).
 * Fixed-width fields only, explicit padding, so both compilers agree byte for byte.
 */
#ifndef NETCLAMP_SHARED_H
#define NETCLAMP_SHARED_H

#define NC_MAX_RULES 16384      /* slots in the rules array (user rules + quota actions, old slots reused last) */
#define NC_MAX_LISTS 32768      /* rule lists: one per executable identity a rule names, + global + anchors */
#define NC_MAX_LIST 64          /* rules one application can be subject to (its own + global) */
#define NC_MAX_IDS_PER_RULE 4   /* identities (inodes) kept per rule across executable replacements */
#define NC_MAX_IDS_PER_PATTERN 64 /* identities a FILENAME/DIRECTORY rule holds (least recently seen evicted) */
#define NC_EXEC_NAME 256        /* NAME_MAX + 1 */
#define NC_EXEC_PATH 256        /* exec path as the caller gave it (user space prefers /proc/pid/exe) */

#define NC_MIN_BUCKET 65536ULL  /* GSO/GRO hand the hooks skbs of up to 64 KiB */
#define NC_MAX_RATE (1ULL << 34) /* bytes/s; keeps refill arithmetic inside 64 bits */
#define NC_CONTROL_LEN 128      /* an IPv6 + TCP header with 40 bytes of options: no payload */
#define NC_FAIR_EPOCH_NS 250000000ULL /* a socket that moved a packet in the last 1-2 epochs is active */
#define NC_QUEUE_MAJOR 0x4e43   /* HTB handle on the download queue device: classes are NC_QUEUE_MAJOR:minor */
#define NC_MAX_QUEUES 4095      /* download queues (one per PER_APP bucket of a download limit and netns) */
#define NC_QUEUE_FLOWS 15       /* per queue, child classes its connections are spread over (by port) */
/* Downloads are queued on connections with a minimum RTT up to NC_QUEUE_MAX_RTT_US, and on any connection
 * when the limit is at least NC_QUEUE_ANY_RTT_RATE; else policed (see nc_tc_ingress). */
#define NC_QUEUE_MAX_RTT_US 5000
#define NC_QUEUE_ANY_RTT_RATE (2ULL << 20)

enum nc_action { NC_ACT_ALLOW = 1, NC_ACT_BLOCK = 2, NC_ACT_LIMIT = 3 };
/* Direction bits: a flow is OUT or IN; a rule's mask holds the directions it matches. */
enum nc_direction { NC_DIR_OUT = 1, NC_DIR_IN = 2, NC_DIR_BOTH = 3 };
enum nc_proto { NC_PROTO_ANY = 0, NC_PROTO_TCP = 1, NC_PROTO_UDP = 2, NC_PROTO_ICMP = 3, NC_PROTO_OTHER = 4 };
enum nc_scope { NC_SCOPE_APP = 0, NC_SCOPE_PROCESS = 1, NC_SCOPE_CONNECTION = 2 };

/* An executable's identity: inode number and the kernel's encoding of its device, (major << 20) | minor. */
struct nc_app_key {
	__u64 ino;
	__u32 dev;
	__u32 pad;
};

struct nc_rule {
	__u32 id;
	__u32 in_use;        /* 1 while a list may reference this slot */
	__u8 action;         /* enum nc_action */
	__u8 dir_mask;       /* enum nc_direction bits */
	__u8 proto;          /* enum nc_proto */
	__u8 family;         /* 0 = any address, 4 or 6 */
	__u16 port;          /* host order, 0 = any */
	__u8 scope;          /* enum nc_scope */
	__u8 pad0;
	__u32 priority;
	__u32 addr[4];       /* network order, already masked */
	__u32 mask[4];       /* network order */
	__u64 rate_up;       /* bytes/s, 0 = unlimited */
	__u64 rate_down;
	__u64 fingerprint;
};

/* Rule slots that apply to one application, in decision order (first match decides). */
struct nc_rule_list {
	__u32 count;
	__u32 slots[NC_MAX_LIST];
};

/* Token-bucket key: a rule and the scope instance (app identity, tgid, or socket cookie). */
struct nc_bucket_key {
	__u32 rule_id;
	__u32 scope;
	__u64 a;
	__u64 b;
};

/*
 * Download queues (nc_queues): one HTB class per PER_APP bucket with a download limit and network
 * namespace. The tc ingress program asks for one by inserting classid 0; user space creates the queue
 * device of that namespace (IFB + HTB) if needed and the queue's classes, then writes its id,
 * (NC_QUEUE_MAJOR << 16) | minor, and the device's ifindex. The queue is an HTB class at the limit
 * (minor a multiple of 16, unique across namespaces) with NC_QUEUE_FLOWS children (minor + 1 ..) that
 * share it round-robin, so one connection's backlog does not starve the app's others.
 */
struct nc_queue_key {
	__u64 netns;         /* network namespace cookie of the interface the packet arrived on */
	__u64 ino;           /* the bucket: rule and executable identity */
	__u32 dev;
	__u32 rule_id;
};

struct nc_queue {
	__u32 classid;
	__u32 ifindex;       /* the queue device, in that namespace */
};

struct nc_counters {
	__u64 bytes_up;
	__u64 bytes_down;
	__u64 blocked;
};

struct nc_pid_stats {
	struct nc_app_key app;
	__u64 bytes_up;
	__u64 bytes_down;
	__u64 blocked;
};

/* Per-socket tag, in socket-local storage. */
struct nc_sk_tag {
	struct nc_app_key app;
	__u32 tgid;
	__u8 tagged;
	__u8 initiator;      /* TCP: NC_DIR_OUT (connect), NC_DIR_IN (accepted), 0 unknown */
	__u8 pad[2];
	__u32 cache_gen;     /* generation + 1 the cached decision belongs to, 0 = none */
	__s32 cache_slot;    /* cached decision: rule slot, -1 = no rule matched */
	/* Upload fair share in a PER_APP / PER_PROCESS bucket (nc_police): the socket's own bucket at the
	 * bucket's rate divided by its active sockets, and the bucket epoch (+ 1) it last counted as active in. */
	__u32 fair_epoch_up;
	__u32 pad2;
	__s64 fair_tokens_up;
	__u64 fair_stamp_up;
};

/* One exec, from nc_exec to the backend's exec watcher (ring buffer nc_execs). */
struct nc_exec_event {
	struct nc_app_key app; /* the executed file's identity */
	__u32 tgid;
	__u32 pad;
	char name[NC_EXEC_NAME]; /* the executed file's own name (after symlinks) */
	char path[NC_EXEC_PATH]; /* the path passed to execve, possibly relative */
};

#endif
