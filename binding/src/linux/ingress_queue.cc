// IngressQueue: the IFB + HTB half of download shaping (see ingress_queue.h). The rtnetlink messages
// are the ones iproute2 sends for the equivalent `ip link` / `tc` commands, built by hand to avoid a
// libnl dependency.
#include "ingress_queue.h"

#include "../common/backend.h"

#include <linux/netlink.h>
#include <linux/pkt_sched.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>

namespace netclamp {
namespace {

constexpr uint32_t kFilterHandle = IngressQueue::kMajor;  // cls_bpf handle and priority of our filter
constexpr uint32_t kFilterPrio = IngressQueue::kMajor;
// Ethernet + IPv4 + TCP with timestamps: what a queued segment carries besides payload (GRO merges many
// segments under one set of headers; IPv6 carries 20 bytes more, counted as payload).
constexpr int kHeaderBytes = 14 + 20 + 32;
constexpr uint32_t kIfbTxQueueLen = 1000;  // HTB's direct queue (unclassified packets) takes this length
// HTB sends a packet whenever a class has tokens left and lets it overdraw, so a 64 KiB GRO skb passes a
// smaller bucket; a small one keeps what an idle class may release at once (a burst above the rate) small.
constexpr uint64_t kMinBurstBytes = 4096;
constexpr uint32_t kMinQuantum = 1600;      // above one MTU-sized packet
constexpr uint32_t kMaxQuantum = 200000;    // HTB warns "quantum is big" above this
constexpr uint32_t kRate2Quantum = 10;      // tc's default r2q, used for the root and our quanta
constexpr uint16_t kMaxLeafMajor = 0x7fff;  // 0x8000.. is where the kernel auto-allocates handles

// "<what>: EEXIST (File exists); kernel: <extended ack>". err may be negative (kernel/libbpf style).
std::string Failure(const std::string& what, int err, const std::string& kernel_msg = std::string()) {
  if (err < 0) err = -err;
  std::string text = what + ": " + ErrnoName(err) + " (" + std::strerror(err) + ")";
  if (!kernel_msg.empty()) text += "; kernel: " + kernel_msg;
  return text;
}

void SetError(std::string* error, const std::string& text) {
  if (error) *error = text;
}

std::string ClassName(uint16_t minor) {  // "4e43:10", as tc prints it
  char id[16];
  snprintf(id, sizeof id, "%x:%x", IngressQueue::kMajor, minor);
  return id;
}

// One rtnetlink request: nlmsghdr, the family header (ifinfomsg / tcmsg), then attributes. Nests and
// attributes are tracked by offset because the buffer may move as it grows.
class NlMsg {
 public:
  NlMsg(uint16_t type, uint16_t flags) : buf_(NLMSG_HDRLEN, 0) {
    Hdr()->nlmsg_type = type;
    Hdr()->nlmsg_flags = flags;
  }
  template <typename T>
  void PutFamilyHeader(const T& fixed) {
    Append(&fixed, sizeof fixed);
  }
  void Put(uint16_t type, const void* data, size_t len) {
    rtattr attr{};
    attr.rta_type = type;
    attr.rta_len = static_cast<unsigned short>(RTA_LENGTH(len));
    Append(&attr, sizeof attr);
    Append(data, len);
  }
  void PutString(uint16_t type, const std::string& s) { Put(type, s.c_str(), s.size() + 1); }
  void PutU32(uint16_t type, uint32_t v) { Put(type, &v, sizeof v); }
  void PutU64(uint16_t type, uint64_t v) { Put(type, &v, sizeof v); }
  size_t BeginNest(uint16_t type) {
    size_t offset = buf_.size();
    Put(type, nullptr, 0);
    return offset;
  }
  void EndNest(size_t offset) {
    reinterpret_cast<rtattr*>(buf_.data() + offset)->rta_len = static_cast<unsigned short>(buf_.size() - offset);
  }
  nlmsghdr* Finish() {
    Hdr()->nlmsg_len = static_cast<uint32_t>(buf_.size());
    return Hdr();
  }

 private:
  nlmsghdr* Hdr() { return reinterpret_cast<nlmsghdr*>(buf_.data()); }
  void Append(const void* data, size_t len) {
    size_t at = buf_.size();
    buf_.resize(at + RTA_ALIGN(len), 0);  // zero padding to the 4-byte attribute alignment
    if (len) std::memcpy(buf_.data() + at, data, len);
  }
  std::vector<char> buf_;
};

using Replies = std::vector<std::vector<char>>;

// A NETLINK_ROUTE socket. Each call sends one request with a fresh sequence number and reads until that
// request's ack/error (or NLMSG_DONE for dumps); messages with another sequence number or port are not
// ours and are skipped.
class Rtnl {
 public:
  ~Rtnl() {
    if (fd_ >= 0) close(fd_);
  }
  int Open() {
    fd_ = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    if (fd_ < 0) return -errno;
    int one = 1;
    // Extended acks carry the kernel's own explanation ("Invalid handle" ...); capped acks keep our
    // request out of the error reply. Both are best effort (older kernels lack them).
    setsockopt(fd_, SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof one);
    setsockopt(fd_, SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof one);
    timeval timeout{5, 0};  // rtnl_lock can be held for a while, but never forever
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    sockaddr_nl local{};
    local.nl_family = AF_NETLINK;
    socklen_t len = sizeof local;
    if (bind(fd_, reinterpret_cast<sockaddr*>(&local), sizeof local) < 0 ||
        getsockname(fd_, reinterpret_cast<sockaddr*>(&local), &len) < 0) {
      return -errno;
    }
    port_ = local.nl_pid;
    seq_ = static_cast<uint32_t>(time(nullptr));
    return 0;
  }

  // A change: returns 0 once acked, or -errno with the kernel's extended ack text in *kernel_msg.
  // Replies before the ack (RTM_GETLINK's answer) go to *replies when given.
  int Request(NlMsg& msg, std::string* kernel_msg, Replies* replies = nullptr) {
    return Transact(msg, NLM_F_REQUEST | NLM_F_ACK, replies, kernel_msg);
  }

  // A dump: every reply message, retried when the kernel flags it inconsistent (changed mid-dump).
  int Dump(NlMsg& msg, Replies* replies, std::string* kernel_msg) {
    int rc = -EINTR;
    for (int attempt = 0; attempt < 3 && rc == -EINTR; ++attempt) {
      replies->clear();
      rc = Transact(msg, NLM_F_REQUEST | NLM_F_DUMP, replies, kernel_msg);
    }
    return rc;
  }

 private:
  int Transact(NlMsg& msg, uint16_t extra_flags, Replies* replies, std::string* kernel_msg) {
    nlmsghdr* req = msg.Finish();
    req->nlmsg_flags |= extra_flags;
    req->nlmsg_seq = ++seq_;
    req->nlmsg_pid = 0;
    if (kernel_msg) kernel_msg->clear();

    sockaddr_nl kernel{};
    kernel.nl_family = AF_NETLINK;
    ssize_t sent;
    do {
      sent = sendto(fd_, req, req->nlmsg_len, 0, reinterpret_cast<sockaddr*>(&kernel), sizeof kernel);
    } while (sent < 0 && errno == EINTR);
    if (sent < 0) return -errno;

    bool interrupted = false;
    for (;;) {
      iovec iov{buf_.data(), buf_.size() * sizeof(buf_[0])};
      msghdr mh{};
      mh.msg_iov = &iov;
      mh.msg_iovlen = 1;
      ssize_t got = recvmsg(fd_, &mh, 0);
      if (got < 0) {
        if (errno == EINTR) continue;
        return errno == EAGAIN || errno == EWOULDBLOCK ? -ETIMEDOUT : -errno;
      }
      if (mh.msg_flags & MSG_TRUNC) return -EMSGSIZE;
      const char* base = reinterpret_cast<const char*>(buf_.data());
      const size_t total = static_cast<size_t>(got);
      for (size_t at = 0, next = 0; at + NLMSG_HDRLEN <= total; at = next) {
        auto* h = reinterpret_cast<const nlmsghdr*>(base + at);
        if (h->nlmsg_len < NLMSG_HDRLEN || h->nlmsg_len > total - at) return -EPROTO;
        next = at + NLMSG_ALIGN(h->nlmsg_len);
        if (h->nlmsg_seq != req->nlmsg_seq || h->nlmsg_pid != port_) continue;
        if (h->nlmsg_type == NLMSG_ERROR) {
          if (h->nlmsg_len < NLMSG_LENGTH(sizeof(nlmsgerr))) return -EPROTO;
          auto* err = static_cast<const nlmsgerr*>(NLMSG_DATA(h));
          if (kernel_msg) *kernel_msg = ExtAckMessage(h, err);
          return err->error;  // 0 is the ack
        }
        if (h->nlmsg_type == NLMSG_DONE) {
          int status = 0;
          if (h->nlmsg_len >= NLMSG_LENGTH(sizeof status)) std::memcpy(&status, NLMSG_DATA(h), sizeof status);
          if (status < 0) return status;
          return interrupted ? -EINTR : 0;
        }
        if (h->nlmsg_flags & NLM_F_DUMP_INTR) interrupted = true;
        if (replies) {
          const char* bytes = reinterpret_cast<const char*>(h);
          replies->emplace_back(bytes, bytes + h->nlmsg_len);
        }
      }
    }
  }

  static std::string ExtAckMessage(const nlmsghdr* h, const nlmsgerr* err) {
    if (!(h->nlmsg_flags & NLM_F_ACK_TLVS)) return std::string();
    size_t offset = NLMSG_HDRLEN + sizeof(nlmsgerr);
    if (!(h->nlmsg_flags & NLM_F_CAPPED)) offset += NLMSG_ALIGN(err->msg.nlmsg_len) - NLMSG_HDRLEN;
    if (offset >= h->nlmsg_len) return std::string();
    int left = static_cast<int>(h->nlmsg_len - offset);
    for (auto* a = reinterpret_cast<const rtattr*>(reinterpret_cast<const char*>(h) + offset); RTA_OK(a, left);
         a = RTA_NEXT(a, left)) {
      if (a->rta_type == NLMSGERR_ATTR_MSG) {
        return std::string(static_cast<const char*>(RTA_DATA(a)), strnlen(static_cast<const char*>(RTA_DATA(a)), RTA_PAYLOAD(a)));
      }
    }
    return std::string();
  }

  int fd_ = -1;
  uint32_t port_ = 0;
  uint32_t seq_ = 0;
  std::vector<uint64_t> buf_ = std::vector<uint64_t>(65536 / sizeof(uint64_t));  // > the kernel's 32 KiB dump skbs
};

// Opens nl, or says why not in *error; returns the negative errno.
int OpenRtnl(Rtnl& nl, std::string* error) {
  int rc = nl.Open();
  if (rc < 0) SetError(error, Failure("opening a NETLINK_ROUTE socket", rc));
  return rc;
}

struct Link {
  int ifindex = 0;
  unsigned short type = 0;  // ARPHRD_*
  unsigned flags = 0;       // IFF_*
  std::string name;
  std::string kind;  // IFLA_INFO_KIND ("ifb", "veth", ...); empty for plain devices
};

bool ParseLink(const std::vector<char>& reply, Link* link) {
  auto* h = reinterpret_cast<const nlmsghdr*>(reply.data());
  if (h->nlmsg_type != RTM_NEWLINK || h->nlmsg_len < NLMSG_LENGTH(sizeof(ifinfomsg))) return false;
  auto* ifi = static_cast<const ifinfomsg*>(NLMSG_DATA(h));
  link->ifindex = ifi->ifi_index;
  link->type = ifi->ifi_type;
  link->flags = ifi->ifi_flags;
  int left = static_cast<int>(h->nlmsg_len - NLMSG_LENGTH(sizeof(ifinfomsg)));
  for (auto* a = reinterpret_cast<const rtattr*>(reinterpret_cast<const char*>(ifi) + NLMSG_ALIGN(sizeof(ifinfomsg)));
       RTA_OK(a, left); a = RTA_NEXT(a, left)) {
    if (a->rta_type == IFLA_IFNAME) {
      link->name.assign(static_cast<const char*>(RTA_DATA(a)), strnlen(static_cast<const char*>(RTA_DATA(a)), RTA_PAYLOAD(a)));
    } else if ((a->rta_type & NLA_TYPE_MASK) == IFLA_LINKINFO) {
      int inner_left = static_cast<int>(RTA_PAYLOAD(a));
      for (auto* b = static_cast<const rtattr*>(RTA_DATA(a)); RTA_OK(b, inner_left); b = RTA_NEXT(b, inner_left)) {
        if (b->rta_type == IFLA_INFO_KIND) {
          link->kind.assign(static_cast<const char*>(RTA_DATA(b)), strnlen(static_cast<const char*>(RTA_DATA(b)), RTA_PAYLOAD(b)));
        }
      }
    }
  }
  return true;
}

ifinfomsg IfInfo(int ifindex) {
  ifinfomsg ifi;
  std::memset(&ifi, 0, sizeof ifi);
  ifi.ifi_family = AF_UNSPEC;
  ifi.ifi_index = ifindex;
  return ifi;
}

// The link named `name`: 0, -ENODEV when there is none, or another -errno.
int GetLinkByName(Rtnl& nl, const std::string& name, Link* link, std::string* kernel_msg) {
  NlMsg msg(RTM_GETLINK, 0);
  msg.PutFamilyHeader(IfInfo(0));
  msg.PutString(IFLA_IFNAME, name);
  msg.PutU32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS);
  Replies replies;
  int rc = nl.Request(msg, kernel_msg, &replies);
  if (rc < 0) return rc;
  for (const auto& reply : replies) {
    if (ParseLink(reply, link)) return 0;
  }
  return -ENODEV;
}

int DumpLinks(Rtnl& nl, std::vector<Link>* links) {
  NlMsg msg(RTM_GETLINK, 0);
  msg.PutFamilyHeader(IfInfo(0));
  msg.PutU32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS);
  Replies replies;
  std::string kernel_msg;
  int rc = nl.Dump(msg, &replies, &kernel_msg);
  if (rc < 0) return rc;
  for (const auto& reply : replies) {
    Link link;
    if (ParseLink(reply, &link)) links->push_back(link);
  }
  return 0;
}

int DeleteLink(Rtnl& nl, int ifindex, std::string* kernel_msg) {
  NlMsg msg(RTM_DELLINK, 0);
  msg.PutFamilyHeader(IfInfo(ifindex));
  return nl.Request(msg, kernel_msg);
}

tcmsg TcMsg(int ifindex, uint32_t handle, uint32_t parent) {
  tcmsg tc;
  std::memset(&tc, 0, sizeof tc);
  tc.tcm_family = AF_UNSPEC;
  tc.tcm_ifindex = ifindex;
  tc.tcm_handle = handle;
  tc.tcm_parent = parent;
  return tc;
}

}  // namespace

IngressQueue::~IngressQueue() { Close(); }

int IngressQueue::ifb_ifindex() const {
  std::lock_guard<std::mutex> lock(mu_);
  return ifb_ifindex_;
}

bool IngressQueue::Open(const std::string& ifb_name, std::string* error) {
  std::lock_guard<std::mutex> lock(mu_);
  if (ifb_ifindex_ != 0) {
    SetError(error, "IFB device " + ifb_name_ + " is already open");
    return false;
  }
  if (ifb_name.empty() || ifb_name.size() >= IF_NAMESIZE || ifb_name.find('/') != std::string::npos) {
    SetError(error, "invalid IFB device name '" + ifb_name + "' (1 to " + std::to_string(IF_NAMESIZE - 1) +
                        " characters, no '/')");
    return false;
  }
  Rtnl nl;
  int rc = OpenRtnl(nl, error);
  if (rc < 0) return false;
  std::string kernel_msg;

  // A device of that name left by a crashed run: delete it (with its qdiscs). Only an IFB, though: the
  // name could be a real interface, which is not ours to remove.
  Link old;
  rc = GetLinkByName(nl, ifb_name, &old, &kernel_msg);
  if (rc == 0) {
    if (old.kind != "ifb") {
      SetError(error, "a device named " + ifb_name + " exists and is not an IFB (kind '" + old.kind +
                          "'); not deleting it");
      return false;
    }
    rc = DeleteLink(nl, old.ifindex, &kernel_msg);
    if (rc < 0 && rc != -ENODEV) {
      SetError(error, Failure("deleting leftover IFB device " + ifb_name + " (RTM_DELLINK)", rc, kernel_msg));
      return false;
    }
  } else if (rc != -ENODEV) {
    SetError(error, Failure("looking up device " + ifb_name + " (RTM_GETLINK)", rc, kernel_msg));
    return false;
  }

  NlMsg create(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
  create.PutFamilyHeader(IfInfo(0));
  create.PutString(IFLA_IFNAME, ifb_name);
  create.PutU32(IFLA_TXQLEN, kIfbTxQueueLen);
  size_t linkinfo = create.BeginNest(IFLA_LINKINFO);
  create.PutString(IFLA_INFO_KIND, "ifb");
  create.EndNest(linkinfo);
  rc = nl.Request(create, &kernel_msg);
  if (rc < 0) {
    std::string hint = rc == -EOPNOTSUPP ? " (is the ifb kernel module available?)" : "";
    SetError(error, Failure("creating IFB device " + ifb_name + " (RTM_NEWLINK)" + hint, rc, kernel_msg));
    return false;
  }
  Link ifb;
  rc = GetLinkByName(nl, ifb_name, &ifb, &kernel_msg);
  if (rc < 0) {
    SetError(error, Failure("looking up the new IFB device " + ifb_name + " (RTM_GETLINK)", rc, kernel_msg));
    return false;  // it vanished (deleted by someone else): nothing left to remove
  }

  // From here on a failure deletes the device again, so Open leaves nothing half-made.
  auto fail = [&](const std::string& what, int err) {
    SetError(error, Failure(what, err, kernel_msg));
    std::string ignored;
    DeleteLink(nl, ifb.ifindex, &ignored);
    return false;
  };

  NlMsg up(RTM_NEWLINK, 0);
  ifinfomsg ifi = IfInfo(ifb.ifindex);
  ifi.ifi_flags = IFF_UP;
  ifi.ifi_change = IFF_UP;
  up.PutFamilyHeader(ifi);
  rc = nl.Request(up, &kernel_msg);
  if (rc < 0) return fail("setting IFB device " + ifb_name + " up (RTM_NEWLINK IFF_UP)", rc);

  // Root HTB replacing the default qdisc. defcls 0: packets whose skb->priority names no class of ours
  // leave through HTB's direct queue, unshaped.
  NlMsg root(RTM_NEWQDISC, NLM_F_CREATE | NLM_F_REPLACE);
  root.PutFamilyHeader(TcMsg(ifb.ifindex, static_cast<uint32_t>(kMajor) << 16, TC_H_ROOT));
  root.PutString(TCA_KIND, "htb");
  size_t options = root.BeginNest(TCA_OPTIONS);
  tc_htb_glob glob;
  std::memset(&glob, 0, sizeof glob);
  glob.version = 3;  // HTB_VER >> 16: the kernel refuses any other
  glob.rate2quantum = kRate2Quantum;
  glob.defcls = 0;
  root.Put(TCA_HTB_INIT, &glob, sizeof glob);
  root.EndNest(options);
  // Size table with a negative overhead: HTB and the bfifo leaves count a segment's TCP payload, not its
  // frame, so a limit is what the application receives (a 1514-byte frame would count 1448: 0.956).
  size_t stab = root.BeginNest(TCA_STAB);
  tc_sizespec size;
  std::memset(&size, 0, sizeof size);
  size.overhead = -kHeaderBytes;
  root.Put(TCA_STAB_BASE, &size, sizeof size);
  root.EndNest(stab);
  rc = nl.Request(root, &kernel_msg);
  if (rc < 0) return fail("adding root HTB qdisc to " + ifb_name + " (RTM_NEWQDISC)", rc);

  ifb_name_ = ifb_name;
  ifb_ifindex_ = ifb.ifindex;
  leaf_major_.clear();
  return true;
}

bool IngressQueue::SetClass(uint16_t minor, uint16_t parent_minor, uint64_t bytes_per_sec, uint64_t ceil_bytes_per_sec,
                            uint32_t queue_bytes, std::string* error) {
  std::lock_guard<std::mutex> lock(mu_);
  const std::string what = "HTB class " + ClassName(minor) + " on " + (ifb_name_.empty() ? "the IFB" : ifb_name_);
  if (ifb_ifindex_ == 0) {
    SetError(error, "setting " + what + ": the IFB device is not open");
    return false;
  }
  if (minor == 0 || bytes_per_sec == 0 || ceil_bytes_per_sec < bytes_per_sec) {
    SetError(error, "setting " + what + ": minor and rate must be non-zero, and ceil at least the rate");
    return false;
  }
  Rtnl nl;
  int rc = OpenRtnl(nl, error);
  if (rc < 0) return false;
  std::string kernel_msg;
  const uint32_t classid = (static_cast<uint32_t>(kMajor) << 16) | minor;
  const uint32_t parent = (static_cast<uint32_t>(kMajor) << 16) | parent_minor;

  // HTB keeps burst as time: buffer is in psched ticks of 64 ns (PSCHED_TICKS2NS = << 6), i.e. how long
  // the bucket takes to fill at the class rate. Double precision is ample at 64 ns resolution.
  auto buffer_of = [](uint64_t rate) {
    const uint64_t burst = std::max<uint64_t>(rate / 100, kMinBurstBytes);
    const double ticks = static_cast<double>(burst) * 1e9 / static_cast<double>(rate) / 64.0;
    return ticks >= 4294967295.0 ? UINT32_MAX : std::max<uint32_t>(1, static_cast<uint32_t>(ticks));
  };
  const uint32_t buffer = buffer_of(bytes_per_sec);
  const uint32_t cbuffer = buffer_of(ceil_bytes_per_sec);
  const bool rate64 = ceil_bytes_per_sec > UINT32_MAX;

  tc_htb_opt opt;
  std::memset(&opt, 0, sizeof opt);
  // linklayer ETHERNET tells HTB the rate is plain bytes, so no TCA_HTB_RTAB/CTAB rate table is needed.
  opt.rate.linklayer = TC_LINKLAYER_ETHERNET;
  opt.rate.rate = rate64 ? UINT32_MAX : static_cast<uint32_t>(bytes_per_sec);  // RATE64 carries the rest
  opt.ceil = opt.rate;
  opt.ceil.rate = rate64 ? UINT32_MAX : static_cast<uint32_t>(ceil_bytes_per_sec);
  opt.buffer = buffer;
  opt.cbuffer = cbuffer;
  // An explicit quantum silences HTB's "quantum is big/small" warnings for very high or low rates.
  opt.quantum = static_cast<uint32_t>(std::min<uint64_t>(std::max<uint64_t>(bytes_per_sec / kRate2Quantum, kMinQuantum), kMaxQuantum));
  opt.prio = 0;

  // NLM_F_CREATE without NLM_F_EXCL is `tc class replace`: creates the class or changes the existing one.
  NlMsg cls(RTM_NEWTCLASS, NLM_F_CREATE);
  cls.PutFamilyHeader(TcMsg(ifb_ifindex_, classid, parent));
  cls.PutString(TCA_KIND, "htb");
  size_t options = cls.BeginNest(TCA_OPTIONS);
  cls.Put(TCA_HTB_PARMS, &opt, sizeof opt);
  if (rate64) {
    cls.PutU64(TCA_HTB_RATE64, bytes_per_sec);
    cls.PutU64(TCA_HTB_CEIL64, ceil_bytes_per_sec);
  }
  cls.EndNest(options);
  rc = nl.Request(cls, &kernel_msg);
  if (rc < 0) {
    SetError(error, Failure("setting " + what + " (RTM_NEWTCLASS)", rc, kernel_msg));
    return false;
  }

  if (queue_bytes == 0) return true;  // an inner class: its children hold the queues

  // The bfifo leaf's handle major: the minor itself when that is usable, else the lowest unused one.
  // It must not be our HTB's major nor in the kernel's auto-allocated range (the default pfifo leaves).
  const bool new_class = leaf_major_.count(minor) == 0;
  uint16_t leaf = 0;
  if (!new_class) {
    leaf = leaf_major_[minor];
  } else {
    auto taken = [&](uint16_t major) {
      if (major == 0 || major == kMajor || major > kMaxLeafMajor) return true;
      for (const auto& entry : leaf_major_) {
        if (entry.second == major) return true;
      }
      return false;
    };
    leaf = minor;
    if (taken(leaf)) {
      for (leaf = 1; leaf <= kMaxLeafMajor && taken(leaf); ++leaf) {
      }
    }
    if (leaf > kMaxLeafMajor) leaf = 0;
  }
  if (leaf != 0) {
    // With the leaf's own handle and NLM_F_REPLACE this grafts a new bfifo over the class's default
    // pfifo the first time, and changes the existing bfifo's limit afterwards.
    NlMsg fifo(RTM_NEWQDISC, NLM_F_CREATE | NLM_F_REPLACE);
    fifo.PutFamilyHeader(TcMsg(ifb_ifindex_, static_cast<uint32_t>(leaf) << 16, classid));
    fifo.PutString(TCA_KIND, "bfifo");
    tc_fifo_qopt qopt;
    std::memset(&qopt, 0, sizeof qopt);
    qopt.limit = queue_bytes;
    fifo.Put(TCA_OPTIONS, &qopt, sizeof qopt);
    rc = nl.Request(fifo, &kernel_msg);
  } else {
    rc = -ENOSPC;
    kernel_msg = "no free qdisc handle for the leaf";
  }
  if (rc < 0) {
    SetError(error, Failure("adding the bfifo leaf qdisc of " + what + " (RTM_NEWQDISC)", rc, kernel_msg));
    if (new_class) {  // do not leave a shaped class with an unbounded-by-us default queue behind
      NlMsg del(RTM_DELTCLASS, 0);
      del.PutFamilyHeader(TcMsg(ifb_ifindex_, classid, static_cast<uint32_t>(kMajor) << 16));
      std::string ignored;
      nl.Request(del, &ignored);
    }
    return false;
  }
  leaf_major_[minor] = leaf;
  return true;
}

bool IngressQueue::DeleteClass(uint16_t minor, std::string* error) {
  std::lock_guard<std::mutex> lock(mu_);
  if (ifb_ifindex_ == 0) {
    SetError(error, "deleting an HTB class: the IFB device is not open");
    return false;
  }
  if (minor == 0) return true;  // class 0 is the direct queue, never a class of ours
  Rtnl nl;
  int rc = OpenRtnl(nl, error);
  if (rc < 0) return false;
  const uint32_t classid = (static_cast<uint32_t>(kMajor) << 16) | minor;
  NlMsg del(RTM_DELTCLASS, 0);
  del.PutFamilyHeader(TcMsg(ifb_ifindex_, classid, static_cast<uint32_t>(kMajor) << 16));
  std::string kernel_msg;
  rc = nl.Request(del, &kernel_msg);  // the class's leaf qdisc goes with it
  if (rc < 0 && rc != -ENOENT) {
    SetError(error, Failure("deleting HTB class " + ClassName(minor) + " on " + ifb_name_ + " (RTM_DELTCLASS)", rc, kernel_msg));
    return false;
  }
  leaf_major_.erase(minor);
  return true;
}

std::vector<int> IngressQueue::CandidateInterfaces() {
  std::vector<int> out;
  Rtnl nl;
  std::vector<Link> links;
  if (nl.Open() < 0 || DumpLinks(nl, &links) < 0) return out;
  for (const auto& link : links) {
    if (link.kind == "ifb" || !(link.flags & IFF_UP)) continue;
    if (link.type != ARPHRD_ETHER && link.type != ARPHRD_LOOPBACK) continue;
    out.push_back(link.ifindex);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<std::string> IngressQueue::LinkNames() {
  std::vector<std::string> out;
  Rtnl nl;
  std::vector<Link> links;
  if (nl.Open() < 0 || DumpLinks(nl, &links) < 0) return out;
  for (const auto& link : links) out.push_back(link.name);
  return out;
}

void IngressQueue::DeleteDevice(const std::string& name) {
  Rtnl nl;
  Link link;
  std::string ignored;
  if (nl.Open() == 0 && GetLinkByName(nl, name, &link, &ignored) == 0 && link.kind == "ifb") DeleteLink(nl, link.ifindex, &ignored);
}

void IngressQueue::Forget() {
  std::lock_guard<std::mutex> lock(mu_);
  ifb_ifindex_ = 0;
  ifb_name_.clear();
  leaf_major_.clear();
}

void IngressQueue::Close() {
  std::lock_guard<std::mutex> lock(mu_);
  CloseLocked();
}

void IngressQueue::CloseLocked() {
  if (ifb_ifindex_ != 0) {
    Rtnl nl;
    std::string ignored;
    if (nl.Open() == 0) DeleteLink(nl, ifb_ifindex_, &ignored);  // ENODEV: already gone
  }
  ifb_ifindex_ = 0;
  ifb_name_.clear();
  leaf_major_.clear();
}

}  // namespace netclamp
