// The Linux backend: loads binding/bpf/netclamp.bpf.c (embedded as a libbpf skeleton), attaches it at
// the cgroup v2 root through bpf_links (never pinned: if this process dies the kernel detaches
// everything), and keeps the kernel's rule tables. See binding/README.md for the design.
#include <arpa/inet.h>
#include <dirent.h>
#include <linux/types.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <limits.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cerrno>
#include <cstdarg>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "../common/backend.h"
#include "netclamp.skel.h"
#include "netclamp_shared.h"
#include "download_queues.h"
#include "socket_table.h"

// nc_app_key lives in the global namespace (shared C header): its operators must too, for ADL.
static bool operator<(const nc_app_key& a, const nc_app_key& b) {
  return std::tie(a.dev, a.ino) < std::tie(b.dev, b.ino);
}
static bool operator==(const nc_app_key& a, const nc_app_key& b) { return a.dev == b.dev && a.ino == b.ino; }

namespace netclamp {
namespace {

// libbpf's log of the last failing call, so a load error can say what the verifier said.
std::mutex g_log_mu;
std::string g_log;

int CaptureLibbpfLog(enum libbpf_print_level level, const char* fmt, va_list args) {
  if (level == LIBBPF_DEBUG) return 0;
  char line[1024];
  vsnprintf(line, sizeof line, fmt, args);
  std::lock_guard<std::mutex> lock(g_log_mu);
  g_log += line;
  if (g_log.size() > 16384) g_log.erase(0, g_log.size() - 16384);
  return 0;
}

std::string TakeLibbpfLogTail(size_t max_chars = 1500) {
  std::lock_guard<std::mutex> lock(g_log_mu);
  std::string tail = g_log.size() > max_chars ? g_log.substr(g_log.size() - max_chars) : g_log;
  g_log.clear();
  return tail;
}

// The cgroup v2 mount point, from /proc/self/mountinfo (hybrid layouts mount it at .../unified).
std::string FindCgroup2Mount() {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    size_t sep = line.find(" - ");
    if (sep == std::string::npos) continue;
    std::istringstream tail(line.substr(sep + 3));
    std::string fstype;
    tail >> fstype;
    if (fstype != "cgroup2") continue;
    std::istringstream head(line.substr(0, sep));
    std::string id, parent, devno, root, mount_point;
    head >> id >> parent >> devno >> root >> mount_point;
    if (root == "/") return mount_point;
  }
  return "";
}

bool HasEffectiveCapability(int cap) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("CapEff:", 0) == 0) {
      unsigned long long mask = std::stoull(line.substr(7), nullptr, 16);
      return (mask >> cap) & 1ULL;
    }
  }
  return false;
}

constexpr int kCapBpf = 39;

uint8_t ActionRank(Action a) {  // decision order on a priority tie: BLOCK, LIMIT, ALLOW
  switch (a) {
    case Action::Block: return 0;
    case Action::Limit: return 1;
    default: return 2;
  }
}

// Parses "", "1.2.3.4", "10.0.0.0/8", "::1", "2001:db8::/32" into family, masked address and mask.
void ParseRemote(const std::string& text, nc_rule& r) {
  r.family = 0;
  std::memset(r.addr, 0, sizeof r.addr);
  std::memset(r.mask, 0, sizeof r.mask);
  if (text.empty()) return;
  std::string addr = text;
  int prefix = -1;
  size_t slash = text.find('/');
  if (slash != std::string::npos) {
    addr = text.substr(0, slash);
    std::string p = text.substr(slash + 1);
    if (p.empty() || p.size() > 3 || p.find_first_not_of("0123456789") != std::string::npos)
      throw BackendError("EINVAL", "remoteAddress '" + text + "' has an invalid prefix length", EINVAL);
    prefix = std::stoi(p);
  }
  uint8_t bytes[16] = {};
  int bits;
  if (inet_pton(AF_INET, addr.c_str(), bytes) == 1) {
    r.family = 4;
    bits = 32;
  } else if (inet_pton(AF_INET6, addr.c_str(), bytes) == 1) {
    static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (std::memcmp(bytes, v4mapped, 12) == 0) {  // flows fold v4-mapped into IPv4; so do rules
      std::memmove(bytes, bytes + 12, 4);
      std::memset(bytes + 4, 0, 12);
      r.family = 4;
      bits = 32;
      if (prefix >= 0) prefix = prefix >= 96 ? prefix - 96 : 0;
    } else {
      r.family = 6;
      bits = 128;
    }
  } else {
    throw BackendError("EINVAL", "remoteAddress '" + text + "' is not an IPv4/IPv6 address or prefix", EINVAL);
  }
  if (prefix < 0) prefix = bits;
  if (prefix > bits) throw BackendError("EINVAL", "remoteAddress '" + text + "' has a prefix longer than the address", EINVAL);
  uint8_t mask[16] = {};
  for (int i = 0; i < prefix; i++) mask[i / 8] |= static_cast<uint8_t>(0x80 >> (i % 8));
  for (int i = 0; i < 16; i++) bytes[i] &= mask[i];
  std::memcpy(r.addr, bytes, 16);
  std::memcpy(r.mask, mask, 16);
}

nc_app_key KeyOfStat(const struct stat& st) {
  nc_app_key key = {};
  key.ino = st.st_ino;
  key.dev = (major(st.st_dev) << 20) | minor(st.st_dev);  // the kernel's s_dev encoding
  return key;
}

std::string BaseName(const std::string& path) {
  size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// Does a FILENAME/DIRECTORY rule on `rule_path` cover the executable at `exe_path` (named `exe_name`)?
bool PatternMatches(MatchMode mode, const std::string& rule_path, const std::string& exe_path,
                    const std::string& exe_name) {
  if (mode == MatchMode::Filename) return !exe_name.empty() && exe_name == BaseName(rule_path);
  if (mode != MatchMode::Directory || exe_path.empty()) return false;
  std::string dir = rule_path;
  if (dir.empty() || dir.back() != '/') dir += '/';
  return exe_path.compare(0, dir.size(), dir) == 0;  // recursive: any depth below the folder
}

// Restores the calling thread's network namespace when it goes out of scope.
class NetnsGuard {
 public:
  NetnsGuard() : home_(open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC)) {}
  ~NetnsGuard() {
    if (home_ >= 0) {
      setns(home_, CLONE_NEWNET);
      close(home_);
    }
  }
  bool ok() const { return home_ >= 0; }

 private:
  int home_;
};

class LinuxBackend : public Backend {
 public:
  LinuxBackend() {
    libbpf_set_print(CaptureLibbpfLog);
    if (geteuid() != 0 && !HasEffectiveCapability(kCapBpf)) {
      SetStatus(false, false, "UNAVAILABLE", "needs root (CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON) to load eBPF programs");
    } else if (access("/sys/kernel/btf/vmlinux", R_OK) != 0) {
      SetStatus(false, false, "UNAVAILABLE", "the kernel exposes no BTF (/sys/kernel/btf/vmlinux): CO-RE eBPF cannot load");
    } else {
      SetStatus(false, false, "DOWN", "engine not open");
    }
  }

  ~LinuxBackend() override { Detach("engine destroyed"); }

  void Open(uint32_t exempt_pid) override {
    std::lock_guard<std::recursive_timed_mutex> rules_lock(rules_mu_);
    if (skel_) return;
    TakeLibbpfLogTail();
    std::string cgroup = FindCgroup2Mount();
    if (cgroup.empty()) {
      SetStatus(false, false, "UNAVAILABLE", "no cgroup v2 hierarchy is mounted");
      throw BackendError("UNSUPPORTED", "no cgroup v2 hierarchy is mounted (see /proc/self/mountinfo)");
    }
    cgroup_fd_ = open(cgroup.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (cgroup_fd_ < 0) throw SysError(errno, "open", "cannot open the cgroup v2 root " + cgroup);

    skel_ = netclamp_bpf__open();
    if (!skel_) Fail(errno, "BPF_LOAD", "cannot open the BPF object");
    int err = netclamp_bpf__load(skel_);
    if (err) Fail(-err, "BPF_LOAD", "cannot load the BPF programs");
    skel_->bss->exempt_tgid = exempt_pid;
    skel_->bss->generation = 0;
    // Tuning knobs for shaping experiments (documented in binding/README.md); defaults in the BPF object.
    if (const char* v = getenv("NETCLAMP_EGRESS_DEBT_MS")) skel_->data->egress_debt_ms = static_cast<uint32_t>(atoi(v));
    if (const char* v = getenv("NETCLAMP_INGRESS_BURST_MS")) skel_->data->ingress_burst_ms = static_cast<uint32_t>(atoi(v));

    // Identity first, so sockets created from now on are tagged; then every other hook.
    struct bpf_program* cgroup_programs[] = {
        skel_->progs.nc_sock_create, skel_->progs.nc_sockops,   skel_->progs.nc_connect4,
        skel_->progs.nc_connect6,    skel_->progs.nc_sendmsg4,  skel_->progs.nc_sendmsg6,
        skel_->progs.nc_egress,      skel_->progs.nc_ingress,
    };
    for (bpf_program* prog : cgroup_programs) {
      bpf_link* link = bpf_program__attach_cgroup(prog, cgroup_fd_);
      if (!link) Fail(errno, "BPF_ATTACH", std::string("cannot attach ") + bpf_program__name(prog) + " at " + cgroup);
      links_.push_back(link);
    }
    {
      // status() watches these from the JS thread; it gets its own copy of the fds under the lock.
      std::lock_guard<std::mutex> lock(status_mu_);
      link_fds_.clear();
      link_names_.clear();
      for (size_t i = 0; i < links_.size(); i++) {
        link_fds_.push_back(bpf_link__fd(links_[i]));
        link_names_.push_back(bpf_program__name(cgroup_programs[i]));
      }
    }
    TagExistingSockets();
    StartExecWatcher();
    StartDownloadQueue();

    free_slots_.clear();
    for (uint32_t slot = 0; slot < NC_MAX_RULES; slot++) free_slots_.push_back(slot);
    rules_.clear();
    watches_.clear();  // execs missed while closed: the next WatchPatterns() scans /proc again
    list_keys_.clear();
    WriteLists(BuildLists(rules_));
    {
      std::lock_guard<std::mutex> lock(status_mu_);
      // Attached again after the data plane was lost: that is a restart (/status bfe_restarts).
      if (lost_) status_.restarts++;
      lost_ = false;
    }
    SetStatus(true, true, "OPEN", "");
  }

  void Close() override { Detach("engine closed"); }

  // Also the loss detector: a cgroup link someone detached (bpftool link detach, BPF_LINK_DETACH)
  // still has its fd but reports no cgroup. Eight BPF_OBJ_GET_INFO_BY_FD calls: cheap enough for every call.
  Status GetStatus() override {
    std::lock_guard<std::mutex> lock(status_mu_);
    if (status_.state == "OPEN") {
      for (size_t i = 0; i < link_fds_.size(); i++) {
        bpf_link_info info = {};
        uint32_t length = sizeof info;
        int err = bpf_obj_get_info_by_fd(link_fds_[i], &info, &length);
        bool detached = err != 0 || (info.type == BPF_LINK_TYPE_CGROUP && info.cgroup.cgroup_id == 0);
        if (!detached) continue;
        lost_ = true;
        status_.filtering = false;
        status_.shaping = false;
        status_.state = "DOWN";
        status_.detail = "the data plane was detached from outside (program " + link_names_[i] +
                         " no longer attached to the cgroup root); re-attaching";
        break;
      }
    }
    return status_;
  }

  std::vector<ConnectionInfo> Connections() override { return sockets_.Read(); }

  void ApplyRule(const RuleSpec& spec) override {
    std::lock_guard<std::recursive_timed_mutex> rules_lock(rules_mu_);
    RequireOpen();
    bool pattern = spec.match_mode != MatchMode::ExactPath && !spec.app_path.empty();
    if (pattern && !exec_link_)
      throw BackendError("UNSUPPORTED", "FILENAME/DIRECTORY rules need exec notifications (tp_btf/sched_process_exec), "
                                        "which this kernel refused: " + exec_watch_error_);
    if (spec.id == 0 || spec.id > 0x7fffffffu) throw BackendError("EINVAL", "rule id out of range", EINVAL);

    nc_rule entry = {};
    entry.id = spec.id;
    entry.in_use = 1;
    entry.action = spec.action == Action::Block ? NC_ACT_BLOCK : spec.action == Action::Limit ? NC_ACT_LIMIT : NC_ACT_ALLOW;
    entry.dir_mask = spec.direction == Direction::Outbound ? NC_DIR_OUT
                     : spec.direction == Direction::Inbound ? NC_DIR_IN
                                                            : NC_DIR_BOTH;
    entry.proto = spec.protocol == Protocol::Tcp   ? NC_PROTO_TCP
                  : spec.protocol == Protocol::Udp ? NC_PROTO_UDP
                  : spec.protocol == Protocol::Icmp ? NC_PROTO_ICMP
                                                    : NC_PROTO_ANY;
    entry.port = spec.remote_port;
    entry.scope = spec.scope == LimitScope::PerProcess      ? NC_SCOPE_PROCESS
                  : spec.scope == LimitScope::PerConnection ? NC_SCOPE_CONNECTION
                                                            : NC_SCOPE_APP;
    entry.priority = static_cast<uint32_t>(spec.priority);
    entry.rate_up = spec.action == Action::Limit ? std::min<uint64_t>(spec.rate_up, NC_MAX_RATE) : 0;
    entry.rate_down = spec.action == Action::Limit ? std::min<uint64_t>(spec.rate_down, NC_MAX_RATE) : 0;
    entry.fingerprint = spec.fingerprint;
    ParseRemote(spec.remote_address, entry);

    // Identity of the executable; a missing file removes any previous version of the rule.
    std::vector<nc_app_key> identities;
    if (pattern) {
      // Keep what the rule already learned (those executables still match), then add every running
      // process that matches now; later execs arrive through the exec watcher.
      auto previous = rules_.find(spec.id);
      if (previous != rules_.end() && previous->second.pattern && previous->second.spec.match_mode == spec.match_mode &&
          previous->second.spec.app_path == spec.app_path)
        identities = previous->second.identities;
      for (const nc_app_key& k : ScanRunningProcesses(spec.match_mode, spec.app_path)) TouchIdentity(identities, k);
    } else if (!spec.app_path.empty()) {
      struct stat st;
      if (stat(spec.app_path.c_str(), &st) != 0) {
        int err = errno;
        RemoveRule(spec.id);
        throw SysError(err, "stat", "cannot resolve app path '" + spec.app_path + "'");
      }
      nc_app_key current = {};
      current.ino = st.st_ino;
      current.dev = (major(st.st_dev) << 20) | minor(st.st_dev);  // the kernel's s_dev encoding
      // A replaced executable (new inode): keep matching the old identity too, so processes still
      // running the old file obey the rule, up to NC_MAX_IDS_PER_RULE identities.
      auto previous = rules_.find(spec.id);
      if (previous != rules_.end() && previous->second.spec.app_path == spec.app_path) {
        for (const nc_app_key& k : previous->second.identities)
          if (!(k == current)) identities.push_back(k);
      }
      identities.push_back(current);
      if (identities.size() > NC_MAX_IDS_PER_RULE)
        identities.erase(identities.begin(), identities.end() - NC_MAX_IDS_PER_RULE);
    }

    if (free_slots_.empty()) throw BackendError("ENOSPC", "the kernel rule table is full", ENOSPC);
    uint32_t slot = free_slots_.front();

    // Only the lists this rule's old and new versions touch are rebuilt and rewritten (all of them when
    // either version applies to every app), so a change costs the same with 10 rules as with 10,000.
    auto old = rules_.find(spec.id);
    bool existed = old != rules_.end();
    std::optional<Installed> previous;
    if (existed) previous = old->second;
    uint32_t old_slot = existed ? old->second.slot : 0;
    bool scope_changed = existed && old->second.spec.scope != spec.scope;
    std::set<nc_app_key> keys;
    bool all = existed && ListKeysOf(old->second, keys);
    Installed fresh{spec, slot, identities, pattern};
    all |= ListKeysOf(fresh, keys);
    auto restore = [&] {
      if (previous) rules_[spec.id] = *previous;
      else rules_.erase(spec.id);
    };
    rules_[spec.id] = std::move(fresh);
    Lists lists;
    try {
      lists = BuildLists(rules_, all ? nullptr : &keys);  // throws before anything is written if a list overflows
    } catch (...) {
      restore();
      throw;
    }

    // Order for atomicity: the new rule entry in a fresh slot, then the lists pointing at it, then
    // the generation that invalidates every socket's cached decision. The old slot stays intact
    // for packets still holding it and is reused last (FIFO).
    free_slots_.pop_front();
    if (bpf_map__update_elem(skel_->maps.nc_rules, &slot, sizeof slot, &entry, sizeof entry, BPF_ANY)) {
      int err = errno;
      free_slots_.push_front(slot);
      restore();
      throw SysError(err, "bpf(BPF_MAP_UPDATE_ELEM)", "cannot write rule " + std::to_string(spec.id));
    }
    try {
      if (!existed || spec.reset_counters) ZeroRuleCounters(spec.id);
      WriteLists(lists, all ? nullptr : &keys);
    } catch (...) {
      // Put the touched lists back as they were; only then can no list point at the new slot.
      restore();
      try {
        WriteLists(BuildLists(rules_, all ? nullptr : &keys), all ? nullptr : &keys);
        free_slots_.push_front(slot);
      } catch (...) {
      }
      throw;
    }
    BumpGeneration();
    if (existed) free_slots_.push_back(old_slot);
    if (scope_changed) DeleteBuckets(spec.id);
    RetuneDownloadQueues(spec.id);
    SetExecWatch();
    DestroyBlockedConnections();
  }

  void RemoveRule(uint32_t id) override {
    std::lock_guard<std::recursive_timed_mutex> rules_lock(rules_mu_);
    RequireOpen();
    auto it = rules_.find(id);
    if (it == rules_.end()) return;
    uint32_t slot = it->second.slot;
    Installed removed = it->second;
    std::set<nc_app_key> keys;
    bool all = ListKeysOf(removed, keys);
    rules_.erase(it);
    try {
      WriteLists(BuildLists(rules_, all ? nullptr : &keys), all ? nullptr : &keys);
    } catch (...) {
      rules_[id] = std::move(removed);
      throw;
    }
    BumpGeneration();
    free_slots_.push_back(slot);
    bpf_map__delete_elem(skel_->maps.nc_rule_stats, &id, sizeof id, 0);
    DeleteBuckets(id);
    RetuneDownloadQueues(id);
    SetExecWatch();
    // Removing a higher-priority ALLOW may expose a BLOCK underneath.
    DestroyBlockedConnections();
  }

  std::vector<InstalledRule> InstalledRules() override {
    RequireOpen();
    // Read back from the kernel: every slot referenced by a list, and the rule stored there.
    std::set<uint32_t> slots;
    int lists_fd = bpf_map__fd(skel_->maps.nc_lists);
    nc_app_key key = {}, next_key = {};
    void* cursor = nullptr;
    while (bpf_map_get_next_key(lists_fd, cursor, &next_key) == 0) {
      nc_rule_list list = {};
      if (bpf_map_lookup_elem(lists_fd, &next_key, &list) == 0)
        for (uint32_t i = 0; i < list.count && i < NC_MAX_LIST; i++) slots.insert(list.slots[i]);
      key = next_key;
      cursor = &key;
    }
    std::map<uint32_t, uint64_t> by_id;
    int rules_fd = bpf_map__fd(skel_->maps.nc_rules);
    for (uint32_t slot : slots) {
      nc_rule r = {};
      if (bpf_map_lookup_elem(rules_fd, &slot, &r) == 0 && r.in_use) by_id[r.id] = r.fingerprint;
    }
    std::vector<InstalledRule> out;
    for (const auto& [id, fp] : by_id) out.push_back({id, fp});
    return out;
  }

  Counters ReadCounters() override {
    RequireOpen();
    Counters out;
    int ncpu = libbpf_num_possible_cpus();
    if (ncpu <= 0) throw SysError(-ncpu, "libbpf_num_possible_cpus", "cannot count CPUs");
    std::vector<nc_counters> per_cpu(ncpu);
    auto sum = [&]() {
      CounterSet s;
      for (const nc_counters& c : per_cpu) {
        s.bytes_up += c.bytes_up;
        s.bytes_down += c.bytes_down;
        s.blocked += c.blocked;
      }
      return s;
    };
    int stats_fd = bpf_map__fd(skel_->maps.nc_rule_stats);
    uint32_t key = 0, next_key = 0;
    uint32_t* cursor = nullptr;
    while (bpf_map_get_next_key(stats_fd, cursor, &next_key) == 0) {
      if (bpf_map_lookup_elem(stats_fd, &next_key, per_cpu.data()) == 0) out.rules.push_back({next_key, sum()});
      key = next_key;
      cursor = &key;
    }
    uint32_t zero = 0;
    if (bpf_map_lookup_elem(bpf_map__fd(skel_->maps.nc_totals), &zero, per_cpu.data()) == 0) out.totals = sum();
    return out;
  }

  std::vector<WatchedIdentities> WatchPatterns(const std::vector<PatternWatch>& watches) override {
    std::lock_guard<std::recursive_timed_mutex> rules_lock(rules_mu_);
    RequireOpen();
    if (!watches.empty() && !exec_link_)
      throw BackendError("UNSUPPORTED", "watching executables by file name or folder needs exec notifications "
                                        "(tp_btf/sched_process_exec), which this kernel refused: " + exec_watch_error_);
    std::map<uint32_t, Watch> next;
    for (const PatternWatch& w : watches) {
      if (w.mode == MatchMode::ExactPath || w.path.empty())
        throw BackendError("EINVAL", "a pattern watch needs FILENAME or DIRECTORY and a path", EINVAL);
      Watch watch{w, {}};
      auto previous = watches_.find(w.id);
      if (previous != watches_.end() && previous->second.spec.mode == w.mode && previous->second.spec.path == w.path) {
        watch.identities = previous->second.identities;
      } else {
        for (const nc_app_key& k : ScanRunningProcesses(w.mode, w.path)) TouchIdentity(watch.identities, k);
      }
      next[w.id] = std::move(watch);
    }
    watches_ = std::move(next);
    SetExecWatch();
    std::vector<WatchedIdentities> out;
    for (const auto& [id, w] : watches_) {
      WatchedIdentities entry{id, {}};
      for (const nc_app_key& k : w.identities) entry.identities.emplace_back(k.dev, k.ino);
      out.push_back(std::move(entry));
    }
    return out;
  }

  ActivityCounters ReadActivity() override {
    RequireOpen();
    ActivityCounters out;
    int apps_fd = bpf_map__fd(skel_->maps.nc_app_stats);
    nc_app_key akey = {}, anext = {};
    nc_app_key* acursor = nullptr;
    while (bpf_map_get_next_key(apps_fd, acursor, &anext) == 0) {
      nc_counters c = {};
      if (bpf_map_lookup_elem(apps_fd, &anext, &c) == 0)
        out.apps.push_back({anext.dev, anext.ino, {c.bytes_up, c.bytes_down, c.blocked}});
      akey = anext;
      acursor = &akey;
    }
    int pids_fd = bpf_map__fd(skel_->maps.nc_pid_stats);
    uint32_t pkey = 0, pnext = 0;
    uint32_t* pcursor = nullptr;
    while (bpf_map_get_next_key(pids_fd, pcursor, &pnext) == 0) {
      nc_pid_stats p = {};
      if (bpf_map_lookup_elem(pids_fd, &pnext, &p) == 0)
        out.processes.push_back({pnext, p.app.dev, p.app.ino, {p.bytes_up, p.bytes_down, p.blocked}});
      pkey = pnext;
      pcursor = &pkey;
    }
    return out;
  }

 private:
  struct Installed {
    RuleSpec spec;
    uint32_t slot;
    std::vector<nc_app_key> identities;  // empty = every application, unless pattern
    // FILENAME/DIRECTORY: identities are the executables seen so far, least recently seen first; empty
    // means none yet (the rule then applies to no socket).
    bool pattern = false;
  };
  struct Watch {
    PatternWatch spec;
    std::vector<nc_app_key> identities;  // least recently seen first, like a pattern rule's
  };
  using Lists = std::map<nc_app_key, nc_rule_list>;

  [[noreturn]] void Fail(int err, const std::string& code, const std::string& what) {
    std::string log = TakeLibbpfLogTail();
    std::string message = what + ": " + std::strerror(err);
    if (!log.empty()) message += "\nlibbpf: " + log;
    bool unavailable = err == EPERM || err == EACCES;
    Detach(message);
    if (unavailable) SetStatus(false, false, "UNAVAILABLE", message);
    throw BackendError(unavailable ? ErrnoName(err) : code, message, err, "bpf");
  }

  void RequireOpen() {
    if (!skel_) throw BackendError("ENGINE_DOWN", "the engine is not open");
    // Loaded but detached from outside: writes would go to tables nothing reads.
    Status current = GetStatus();
    if (current.state != "OPEN") throw BackendError("ENGINE_DOWN", "the engine is " + current.state + ": " + current.detail);
  }

  void SetStatus(bool filtering, bool shaping, const std::string& state, const std::string& detail) {
    std::lock_guard<std::mutex> lock(status_mu_);
    status_.filtering = filtering;
    status_.shaping = shaping;
    status_.state = state;
    status_.detail = detail;
  }

  void Detach(const std::string& why) {
    std::lock_guard<std::recursive_timed_mutex> rules_lock(rules_mu_);
    StopDownloadQueue();
    StopExecWatcher();
    {
      std::lock_guard<std::mutex> lock(status_mu_);
      link_fds_.clear();
      link_names_.clear();
    }
    for (bpf_link* link : links_) bpf_link__destroy(link);
    links_.clear();
    if (skel_) netclamp_bpf__destroy(skel_);
    skel_ = nullptr;
    if (cgroup_fd_ >= 0) close(cgroup_fd_);
    cgroup_fd_ = -1;
    rules_.clear();
    watches_.clear();
    list_keys_.clear();
    Status current = GetStatus();
    if (current.state != "UNAVAILABLE") SetStatus(false, false, "DOWN", why);
  }

  // Does rule `a` decide before rule `b`? Priority, then BLOCK/LIMIT/ALLOW, then the lower id.
  static bool DecidesBefore(const Installed* a, const Installed* b) {
    if (a->spec.priority != b->spec.priority) return a->spec.priority > b->spec.priority;
    if (ActionRank(a->spec.action) != ActionRank(b->spec.action))
      return ActionRank(a->spec.action) < ActionRank(b->spec.action);
    return a->spec.id < b->spec.id;
  }

  static bool AppliesToEveryApp(const Installed& r) { return r.identities.empty() && !r.pattern; }

  // Adds the list keys a rule sits in; returns true when it applies to every app (every list).
  static bool ListKeysOf(const Installed& r, std::set<nc_app_key>& keys) {
    if (AppliesToEveryApp(r)) return true;
    keys.insert(r.identities.begin(), r.identities.end());
    if (r.pattern) keys.insert(PatternAnchor(r.spec.id));
    return false;
  }

  // Sorted rule slots per app identity; global rules ({0,0}) are merged into every app's list. With
  // `only`, just those keys: a key no rule holds any more is absent from the result (WriteLists deletes it).
  Lists BuildLists(const std::map<uint32_t, Installed>& rules, const std::set<nc_app_key>* only = nullptr) const {
    nc_app_key global = {};
    std::vector<const Installed*> globals;
    std::map<nc_app_key, std::vector<const Installed*>> by_key;
    if (!only || only->count(global)) by_key[global];
    for (const auto& [id, r] : rules) {
      if (AppliesToEveryApp(r)) {
        globals.push_back(&r);
        continue;
      }
      if (r.pattern) {
        nc_app_key anchor = PatternAnchor(r.spec.id);
        if (!only || only->count(anchor)) by_key[anchor].push_back(&r);
      }
      for (const nc_app_key& k : r.identities)
        if (!only || only->count(k)) by_key[k].push_back(&r);
    }
    std::sort(globals.begin(), globals.end(), DecidesBefore);
    Lists lists;
    for (auto& [key, own] : by_key) {
      nc_rule_list& list = lists[key];
      if (key.ino == 0 && (key.dev & 0x80000000u)) {  // a pattern rule's anchor: that rule alone
        list.slots[list.count++] = own.front()->slot;
        continue;
      }
      std::sort(own.begin(), own.end(), DecidesBefore);
      std::vector<const Installed*> merged;
      merged.reserve(own.size() + globals.size());
      std::merge(own.begin(), own.end(), globals.begin(), globals.end(), std::back_inserter(merged), DecidesBefore);
      if (merged.size() > NC_MAX_LIST)
        throw BackendError("E2BIG", "more than " + std::to_string(NC_MAX_LIST) + " rules would apply to one application", E2BIG);
      for (const Installed* r : merged) list.slots[list.count++] = r->slot;
    }
    return lists;
  }

  // Writes `lists` into the kernel; without `only` they replace every list, with it just those keys.
  void WriteLists(const Lists& lists, const std::set<nc_app_key>* only = nullptr) {
    int fd = bpf_map__fd(skel_->maps.nc_lists);
    for (const auto& [key, list] : lists) {
      // Hash map updates replace the element as a whole (RCU), so a reader sees the old or new list.
      if (bpf_map_update_elem(fd, &key, &list, BPF_ANY))
        throw SysError(errno, "bpf(BPF_MAP_UPDATE_ELEM)", "cannot write a rule list");
      list_keys_.insert(key);
    }
    std::vector<nc_app_key> stale;
    if (only) {
      for (const nc_app_key& key : *only)
        if (!lists.count(key) && list_keys_.count(key)) stale.push_back(key);
    } else {
      for (const nc_app_key& key : list_keys_)
        if (!lists.count(key)) stale.push_back(key);
    }
    for (const nc_app_key& key : stale) {
      bpf_map_delete_elem(fd, &key);
      list_keys_.erase(key);
    }
  }

  void BumpGeneration() { __atomic_add_fetch(&skel_->bss->generation, 1, __ATOMIC_SEQ_CST); }

  void ZeroRuleCounters(uint32_t id) {
    int ncpu = libbpf_num_possible_cpus();
    std::vector<nc_counters> zeros(ncpu > 0 ? ncpu : 1);
    if (bpf_map_update_elem(bpf_map__fd(skel_->maps.nc_rule_stats), &id, zeros.data(), BPF_ANY))
      throw SysError(errno, "bpf(BPF_MAP_UPDATE_ELEM)", "cannot reset the counters of rule " + std::to_string(id));
  }

  void DeleteBuckets(uint32_t rule_id) {
    int fd = bpf_map__fd(skel_->maps.nc_buckets);
    std::vector<nc_bucket_key> doomed;
    nc_bucket_key key = {}, next_key = {};
    nc_bucket_key* cursor = nullptr;
    while (bpf_map_get_next_key(fd, cursor, &next_key) == 0) {
      if (next_key.rule_id == rule_id) doomed.push_back(next_key);
      key = next_key;
      cursor = &key;
    }
    for (const nc_bucket_key& k : doomed) bpf_map_delete_elem(fd, &k);
  }

  // Runs an iterator program to completion (its side effects are the point; it prints nothing).
  void RunIterator(bpf_program* prog) {
    bpf_link* link = bpf_program__attach_iter(prog, nullptr);
    if (!link) throw SysError(errno, "bpf(BPF_LINK_CREATE)", std::string("cannot attach iterator ") + bpf_program__name(prog));
    int fd = bpf_iter_create(bpf_link__fd(link));
    if (fd < 0) {
      int err = errno;
      bpf_link__destroy(link);
      throw SysError(err, "bpf(BPF_ITER_CREATE)", std::string("cannot start iterator ") + bpf_program__name(prog));
    }
    char buf[256];
    while (read(fd, buf, sizeof buf) > 0) {
    }
    close(fd);
    bpf_link__destroy(link);
  }

  // tcp/udp socket iterators walk the calling thread's network namespace only: visit every network
  // namespace a process on this machine uses (tests and containers put apps in their own).
  template <typename Fn>
  void ForEachNetns(Fn fn) {
    NetnsGuard guard;
    fn();
    if (!guard.ok()) return;
    std::set<std::pair<dev_t, ino_t>> seen;
    struct stat self;
    if (stat("/proc/thread-self/ns/net", &self) == 0) seen.insert({self.st_dev, self.st_ino});
    std::unique_ptr<DIR, int (*)(DIR*)> proc(opendir("/proc"), closedir);
    if (!proc) return;
    while (dirent* d = readdir(proc.get())) {
      if (d->d_name[0] < '0' || d->d_name[0] > '9') continue;
      std::string path = std::string("/proc/") + d->d_name + "/ns/net";
      struct stat st;
      if (stat(path.c_str(), &st) != 0 || !seen.insert({st.st_dev, st.st_ino}).second) continue;
      int ns = open(path.c_str(), O_RDONLY | O_CLOEXEC);
      if (ns < 0) continue;
      if (setns(ns, CLONE_NEWNET) == 0) fn();
      close(ns);
    }
  }

  void TagExistingSockets() {
    RunIterator(skel_->progs.nc_iter_owner);
    ForEachNetns([this] {
      RunIterator(skel_->progs.nc_iter_tag_tcp);
      RunIterator(skel_->progs.nc_iter_tag_udp);
    });
    // The socket-address table was only a hand-over between the passes.
    int fd = bpf_map__fd(skel_->maps.nc_pretags);
    uint64_t key;
    while (bpf_map_get_next_key(fd, nullptr, &key) == 0) bpf_map_delete_elem(fd, &key);
  }

  // Established TCP connections a rule now blocks are aborted at once (bpf_sock_destroy), so the
  // application sees an error instead of a silent stall.
  void DestroyBlockedConnections() {
    bool any_block = false;
    for (const auto& [id, r] : rules_) any_block |= r.spec.action == Action::Block;
    if (!any_block) return;
    ForEachNetns([this] { RunIterator(skel_->progs.nc_iter_destroy); });
  }

  static nc_app_key PatternAnchor(uint32_t rule_id) {
    nc_app_key key = {};
    key.dev = 0x80000000u | rule_id;
    return key;
  }

  // Moves `key` to the most recently seen end, adding it if new and evicting the least recently seen
  // beyond NC_MAX_IDS_PER_PATTERN. Returns whether the set changed (not just its order).
  static bool TouchIdentity(std::vector<nc_app_key>& ids, const nc_app_key& key) {
    auto it = std::find(ids.begin(), ids.end(), key);
    bool added = it == ids.end();
    if (!added) ids.erase(it);
    ids.push_back(key);
    if (ids.size() > NC_MAX_IDS_PER_PATTERN) ids.erase(ids.begin(), ids.end() - NC_MAX_IDS_PER_PATTERN);
    return added;
  }

  // Identities of the running processes whose executable a FILENAME/DIRECTORY rule covers.
  static std::vector<nc_app_key> ScanRunningProcesses(MatchMode mode, const std::string& rule_path) {
    std::vector<nc_app_key> found;
    std::unique_ptr<DIR, int (*)(DIR*)> proc(opendir("/proc"), closedir);
    if (!proc) return found;
    while (dirent* d = readdir(proc.get())) {
      if (d->d_name[0] < '0' || d->d_name[0] > '9') continue;
      std::string exe_link = std::string("/proc/") + d->d_name + "/exe";
      std::string path = ReadExePath(exe_link);
      if (path.empty() || !PatternMatches(mode, rule_path, path, BaseName(path))) continue;
      struct stat st;
      if (stat(exe_link.c_str(), &st) != 0) continue;
      nc_app_key key = KeyOfStat(st);
      if (std::find(found.begin(), found.end(), key) == found.end()) found.push_back(key);
    }
    return found;
  }

  // readlink of /proc/<pid>/exe without the " (deleted)" the kernel appends for a removed file.
  static std::string ReadExePath(const std::string& exe_link) {
    char buf[PATH_MAX];
    ssize_t n = readlink(exe_link.c_str(), buf, sizeof buf - 1);
    if (n <= 0) return "";
    std::string path(buf, static_cast<size_t>(n));
    static const std::string deleted = " (deleted)";
    if (path.size() > deleted.size() && path.compare(path.size() - deleted.size(), deleted.size(), deleted) == 0)
      path.resize(path.size() - deleted.size());
    return path;
  }

  // Execs are reported by the kernel only while some pattern rule is installed.
  void SetExecWatch() {
    if (!skel_) return;
    bool any = false;
    for (const auto& [id, r] : rules_) any |= r.pattern;
    any |= !watches_.empty();
    __atomic_store_n(&skel_->bss->exec_watch, any ? 1u : 0u, __ATOMIC_SEQ_CST);
  }

  // Attaches nc_exec and starts the thread that consumes its ring buffer. A kernel that refuses the
  // tracepoint leaves the rest of the engine working; pattern rules then get UNSUPPORTED.
  void StartExecWatcher() {
    exec_watch_error_.clear();
    exec_link_ = bpf_program__attach(skel_->progs.nc_exec);
    if (!exec_link_) {
      exec_watch_error_ = std::string("attach: ") + std::strerror(errno);
      return;
    }
    exec_ring_ = ring_buffer__new(bpf_map__fd(skel_->maps.nc_execs), &LinuxBackend::OnExecEvent, this, nullptr);
    if (!exec_ring_) {
      exec_watch_error_ = std::string("ring buffer: ") + std::strerror(errno);
      bpf_link__destroy(exec_link_);
      exec_link_ = nullptr;
      return;
    }
    exec_stop_ = false;
    exec_thread_ = std::thread([this] { ExecWatchLoop(); });
  }

  void StopExecWatcher() {
    exec_stop_ = true;
    if (exec_thread_.joinable()) exec_thread_.join();
    if (exec_ring_) ring_buffer__free(exec_ring_);
    exec_ring_ = nullptr;
    if (exec_link_) bpf_link__destroy(exec_link_);
    exec_link_ = nullptr;
    exec_pending_.clear();
  }

  static int OnExecEvent(void* ctx, void* data, size_t size) {
    if (size < sizeof(nc_exec_event)) return 0;
    auto* self = static_cast<LinuxBackend*>(ctx);
    self->exec_pending_.push_back(*static_cast<const nc_exec_event*>(data));
    return 0;
  }

  void ExecWatchLoop() {
    while (!exec_stop_) {
      ring_buffer__poll(exec_ring_, 100);  // wakes as soon as an exec is reported
      if (exec_pending_.empty()) continue;
      std::vector<nc_exec_event> events;
      events.swap(exec_pending_);
      // Detach() holds the lock while it waits for this thread: never block on it indefinitely.
      std::unique_lock<std::recursive_timed_mutex> lock(rules_mu_, std::defer_lock);
      while (!exec_stop_ && !lock.try_lock_for(std::chrono::milliseconds(20))) {
      }
      if (!lock.owns_lock()) return;
      try {
        LearnExecs(events);
      } catch (...) {
        // A list that would overflow (E2BIG) or a map write that failed: the identity is not learned;
        // the rule stays as it was, and the next apply or exec tries again.
      }
    }
  }

  // ---- download queueing (download_queues.h): downloads limited PER_APP are queued, not policed -----

  void StartDownloadQueue() {
    downloads_ = std::make_unique<DownloadQueues>(
        bpf_program__fd(skel_->progs.nc_tc_ingress), bpf_map__fd(skel_->maps.nc_queues),
        bpf_map__fd(skel_->maps.nc_queue_classes), [this](uint32_t id) { return QueueRate(id); });
    downloads_->SyncNamespaces();
    queue_stop_ = false;
    queue_thread_ = std::thread([this] { QueueLoop(); });
  }

  void StopDownloadQueue() {
    queue_stop_ = true;
    if (queue_thread_.joinable()) queue_thread_.join();
    if (skel_) __atomic_store_n(&skel_->bss->queue_rules, 0u, __ATOMIC_SEQ_CST);
    downloads_.reset();
    queueing_ids_.clear();
    last_queue_sync_ = {};
  }

  // While some rule queues: serves class requests every 20 ms, looks for new namespaces and interfaces
  // every second.
  void QueueLoop() {
    auto next_sync = std::chrono::steady_clock::now() + std::chrono::seconds(1);
    while (!queue_stop_) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      // Detach() holds the lock while it waits for this thread: never block on it indefinitely.
      std::unique_lock<std::recursive_timed_mutex> lock(rules_mu_, std::defer_lock);
      while (!queue_stop_ && !lock.try_lock_for(std::chrono::milliseconds(20))) {
      }
      if (!lock.owns_lock()) return;
      // Nothing queues: no requests can come, and the namespace walk (which holds the rules lock for a
      // few ms) would only delay rule changes. The first queueing rule walks them at once.
      if (!skel_ || !downloads_ || queueing_ids_.empty() || GetStatus().state != "OPEN") continue;
      downloads_->ServeRequests();
      if (std::chrono::steady_clock::now() >= next_sync) {
        downloads_->SyncNamespaces();
        next_sync = std::chrono::steady_clock::now() + std::chrono::seconds(1);
      }
    }
  }

  // The download rate a rule gives its PER_APP buckets' queues, or 0 when they should have none.
  uint64_t QueueRate(uint32_t rule_id) const {
    auto it = rules_.find(rule_id);
    if (it == rules_.end()) return 0;
    const RuleSpec& spec = it->second.spec;
    if (spec.action != Action::Limit || spec.scope != LimitScope::PerApp) return 0;
    return std::min<uint64_t>(spec.rate_down, NC_MAX_RATE);
  }

  // After a rule changed or went: its queues follow, and nc_tc_ingress knows whether any rule queues.
  void RetuneDownloadQueues(uint32_t rule_id) {
    if (!skel_ || !downloads_) return;
    bool queues = QueueRate(rule_id) != 0;
    if (queues) queueing_ids_.insert(rule_id);
    else queueing_ids_.erase(rule_id);
    __atomic_store_n(&skel_->bss->queue_rules, static_cast<uint32_t>(queueing_ids_.size()), __ATOMIC_SEQ_CST);
    downloads_->Retune(rule_id);
    // Namespaces made since the last look (a container, a test lab) get the program now rather than at
    // the next second; at most every 250 ms, so creating many rules does not walk /proc for each.
    auto now = std::chrono::steady_clock::now();
    if (queues && now - last_queue_sync_ >= std::chrono::milliseconds(250)) {
      downloads_->SyncNamespaces();
      last_queue_sync_ = now;
    }
  }

  // Adds the identities of matching execs to their pattern rules and rewrites the lists if that changed.
  void LearnExecs(const std::vector<nc_exec_event>& events) {
    if (!skel_ || GetStatus().state != "OPEN") return;
    std::map<uint32_t, Installed> next = rules_;
    bool changed = false;
    for (const nc_exec_event& e : events) {
      std::string name(e.name, strnlen(e.name, sizeof e.name));
      std::string path;
      bool need_path = false;
      for (const auto& [id, r] : next) need_path |= r.pattern && r.spec.match_mode == MatchMode::Directory;
      for (const auto& [id, w] : watches_) need_path |= w.spec.mode == MatchMode::Directory;
      if (need_path) {
        // The full path of what was executed: /proc/<pid>/exe if the process still runs that file,
        // else the execve argument when it was absolute.
        std::string exe_link = "/proc/" + std::to_string(e.tgid) + "/exe";
        struct stat st;
        if (stat(exe_link.c_str(), &st) == 0 && KeyOfStat(st) == e.app) path = ReadExePath(exe_link);
        if (path.empty() && e.path[0] == '/') path.assign(e.path, strnlen(e.path, sizeof e.path));
      }
      for (auto& [id, r] : next)
        if (r.pattern && PatternMatches(r.spec.match_mode, r.spec.app_path, path, name))
          changed |= TouchIdentity(r.identities, e.app);
      for (auto& [id, w] : watches_)
        if (PatternMatches(w.spec.mode, w.spec.path, path, name)) TouchIdentity(w.identities, e.app);
    }
    if (!changed) {
      rules_ = std::move(next);  // recency order only
      return;
    }
    auto lists = BuildLists(next);
    WriteLists(lists);
    rules_ = std::move(next);
    BumpGeneration();
  }

  std::mutex status_mu_;
  Status status_;
  netclamp_bpf* skel_ = nullptr;
  std::vector<bpf_link*> links_;
  // Guarded by status_mu_: what GetStatus() checks, and whether the links were lost since the last Open().
  std::vector<int> link_fds_;
  std::vector<std::string> link_names_;
  bool lost_ = false;
  SocketTable sockets_;
  int cgroup_fd_ = -1;
  std::map<uint32_t, Installed> rules_;
  std::map<uint32_t, Watch> watches_;  // WatchPatterns(): quotas' FILENAME/DIRECTORY patterns
  std::deque<uint32_t> free_slots_;
  std::set<nc_app_key> list_keys_;
  // Guards rules_, free_slots_, list_keys_ and the kernel tables against the exec watcher thread (the
  // addon already serializes its own calls). Recursive: ApplyRule -> RemoveRule, Open -> Fail -> Detach.
  std::recursive_timed_mutex rules_mu_;
  bpf_link* exec_link_ = nullptr;
  ring_buffer* exec_ring_ = nullptr;
  std::thread exec_thread_;
  std::atomic<bool> exec_stop_{false};
  std::vector<nc_exec_event> exec_pending_;  // filled by OnExecEvent, on the watcher thread only
  std::string exec_watch_error_ = "the engine is not open";
  std::unique_ptr<DownloadQueues> downloads_;  // guarded by rules_mu_, like the two below
  std::set<uint32_t> queueing_ids_;              // rules whose downloads are queued (QueueRate > 0)
  std::chrono::steady_clock::time_point last_queue_sync_;
  std::thread queue_thread_;
  std::atomic<bool> queue_stop_{false};
};

}  // namespace

std::unique_ptr<Backend> CreateBackend() { return std::make_unique<LinuxBackend>(); }

}  // namespace netclamp
