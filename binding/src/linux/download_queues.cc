#include "download_queues.h"

#include <bpf/bpf.h>
#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <set>
#include <vector>

#include <linux/types.h>

#include "netclamp_shared.h"

namespace netclamp {
namespace {

constexpr int kTcxIngress = 46;     // BPF_TCX_INGRESS (kernel 6.6+); Debian's uapi headers predate it
constexpr int kSoNetnsCookie = 71;  // SO_NETNS_COOKIE (5.14+)
constexpr const char* kDevicePrefix = "nc-q";

// Bytes one child class of a queue may hold: 1/8 of a second of the whole rate (TCP recovers from a tail
// drop before its queue runs dry), at least two 64 KiB skbs (loopback's segments and GRO's are that big,
// and a bfifo drops whatever does not fit whole), at most 4 MiB.
uint32_t ChildQueueBytes(uint64_t rate) {
  return static_cast<uint32_t>(std::clamp<uint64_t>(rate / 8, 2 * NC_MIN_BUCKET, 4ull << 20));
}

// The cookie of this thread's network namespace, as bpf_get_netns_cookie() reports it; 0 if unknown.
uint64_t CurrentNetnsCookie() {
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) return 0;
  uint64_t cookie = 0;
  socklen_t len = sizeof cookie;
  if (getsockopt(s, SOL_SOCKET, kSoNetnsCookie, &cookie, &len) != 0) cookie = 0;
  close(s);
  return cookie;
}

// Queue devices of services that are gone (killed before they could delete theirs), in this namespace.
void RemoveDeadQueueDevices() {
  for (const std::string& name : IngressQueue::LinkNames()) {
    if (name.rfind(kDevicePrefix, 0) != 0) continue;
    pid_t pid = static_cast<pid_t>(atoi(name.c_str() + 4));
    if (pid > 0 && (kill(pid, 0) == 0 || errno == EPERM)) continue;
    IngressQueue::DeleteDevice(name);
  }
}

}  // namespace

DownloadQueues::DownloadQueues(int prog_fd, int queues_fd, int classes_fd, RateOf rate_of)
    : prog_fd_(prog_fd), queues_fd_(queues_fd), classes_fd_(classes_fd), rate_of_(std::move(rate_of)),
      device_name_(kDevicePrefix + std::to_string(getpid())) {}

DownloadQueues::~DownloadQueues() { Stop(); }

bool DownloadQueues::Visit(const Namespace& ns, const std::function<void()>& fn) {
  int target = open(ns.path.c_str(), O_RDONLY | O_CLOEXEC);
  if (target < 0) return false;
  struct stat st, home_st;
  if (fstat(target, &st) != 0 || st.st_ino != ns.inode) {
    close(target);
    return false;
  }
  if (stat("/proc/thread-self/ns/net", &home_st) == 0 && home_st.st_ino == st.st_ino) {
    close(target);
    fn();
    return true;
  }
  int home = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  bool entered = home >= 0 && setns(target, CLONE_NEWNET) == 0;
  close(target);
  if (entered) {
    fn();
    setns(home, CLONE_NEWNET);
  }
  if (home >= 0) close(home);
  return entered;
}

void DownloadQueues::SyncNamespaces() {
  // Namespaces by inode, each with a path that reaches it: processes' and `ip netns` names.
  std::map<ino_t, std::string> found;
  auto add = [&](const std::string& path) {
    struct stat st;
    if (stat(path.c_str(), &st) == 0) found.emplace(st.st_ino, path);
  };
  add("/proc/thread-self/ns/net");
  if (std::unique_ptr<DIR, int (*)(DIR*)> named(opendir("/run/netns"), closedir); named) {
    while (dirent* d = readdir(named.get()))
      if (d->d_name[0] != '.') add(std::string("/run/netns/") + d->d_name);
  }
  if (std::unique_ptr<DIR, int (*)(DIR*)> proc(opendir("/proc"), closedir); proc) {
    while (dirent* d = readdir(proc.get()))
      if (d->d_name[0] >= '0' && d->d_name[0] <= '9') add(std::string("/proc/") + d->d_name + "/ns/net");
  }

  std::set<uint64_t> alive;
  for (const auto& [inode, path] : found) {
    Namespace probe;
    probe.inode = inode;
    probe.path = path;
    uint64_t cookie = 0;
    bool fresh = false;
    Visit(probe, [&] {
      cookie = CurrentNetnsCookie();
      if (!cookie) return;
      auto [it, inserted] = namespaces_.try_emplace(cookie);
      fresh = inserted;
      it->second.inode = inode;
      it->second.path = path;
      if (fresh) RemoveDeadQueueDevices();
      AttachInterfaces(it->second);
    });
    if (cookie) alive.insert(cookie);
  }

  // Gone namespaces took their devices and queue devices with them: forget them and their classes.
  for (auto it = namespaces_.begin(); it != namespaces_.end();) {
    if (alive.count(it->first)) {
      ++it;
      continue;
    }
    for (const auto& [ifindex, fd] : it->second.links) close(fd);
    for (auto c = classes_.begin(); c != classes_.end();) {
      auto current = c++;
      if (std::get<0>(current->first) == it->first) DropClass(current);  // its Visit finds no namespace
    }
    if (it->second.queue) it->second.queue->Forget();
    it = namespaces_.erase(it);
  }
}

// In the namespace: nc_tc_ingress on every candidate interface (tcx links, so a crash detaches them).
void DownloadQueues::AttachInterfaces(Namespace& ns) {
  std::set<int> wanted;
  for (int ifindex : IngressQueue::CandidateInterfaces()) wanted.insert(ifindex);
  for (auto it = ns.links.begin(); it != ns.links.end();) {
    if (wanted.count(it->first)) {
      ++it;
      continue;
    }
    close(it->second);
    it = ns.links.erase(it);
  }
  for (int ifindex : wanted) {
    if (ns.links.count(ifindex)) continue;
    int fd = bpf_link_create(prog_fd_, ifindex, static_cast<bpf_attach_type>(kTcxIngress), nullptr);
    if (fd >= 0) ns.links[ifindex] = fd;  // else that interface's downloads stay policed
  }
}

void DownloadQueues::ServeRequests() {
  std::vector<nc_queue_key> asked;
  nc_queue_key key = {}, next_key = {};
  nc_queue_key* cursor = nullptr;
  while (bpf_map_get_next_key(queues_fd_, cursor, &next_key) == 0) {
    nc_queue q = {};
    if (bpf_map_lookup_elem(queues_fd_, &next_key, &q) == 0 && q.classid == 0) asked.push_back(next_key);
    key = next_key;
    cursor = &key;
  }
  for (const nc_queue_key& k : asked) {
    uint64_t rate = rate_of_(k.rule_id);
    // No class for it (rule gone or changed, namespace unknown yet, device refused): the entry goes, so
    // the bucket is policed and nc_tc_ingress asks again with its next segment.
    if (!rate || !AddClass({k.netns, k.ino, k.dev, k.rule_id}, rate)) bpf_map_delete_elem(queues_fd_, &k);
  }
}

// The queue of a bucket: class `base` at the rate, and NC_QUEUE_FLOWS children that each get a fair
// share and may borrow up to the whole rate (HTB lends round-robin), each with its own bfifo.
bool DownloadQueues::SetQueue(IngressQueue& queue, uint16_t base, uint64_t rate, uint32_t child_bytes, std::string* error) {
  if (!queue.SetClass(base, 0, rate, rate, 0, error)) return false;
  uint64_t share = std::max<uint64_t>(rate / NC_QUEUE_FLOWS, 1);
  for (uint16_t i = 1; i <= NC_QUEUE_FLOWS; i++)
    if (!queue.SetClass(base + i, base, share, rate, child_bytes, error)) return false;
  return true;
}

void DownloadQueues::DeleteQueue(IngressQueue& queue, uint16_t base) {
  std::string ignored;
  for (uint16_t i = 1; i <= NC_QUEUE_FLOWS; i++) queue.DeleteClass(base + i, &ignored);
  queue.DeleteClass(base, &ignored);
}

bool DownloadQueues::AddClass(const Key& key, uint64_t rate) {
  auto ns = namespaces_.find(std::get<0>(key));
  uint16_t base = FreeBase();
  if (ns == namespaces_.end() || !base) return false;
  bool ok = false;
  int ifindex = 0;
  std::string error;
  Visit(ns->second, [&] {
    if (!ns->second.queue) {
      auto queue = std::make_unique<IngressQueue>();
      if (!queue->Open(device_name_, &error)) return;
      ns->second.queue = std::move(queue);
    }
    ok = SetQueue(*ns->second.queue, base, rate, ChildQueueBytes(rate), &error);
    if (!ok) DeleteQueue(*ns->second.queue, base);
    ifindex = ns->second.queue->ifb_ifindex();
  });
  if (!ok) return false;
  nc_queue_key k = {std::get<0>(key), std::get<1>(key), std::get<2>(key), std::get<3>(key)};
  nc_queue q = {(static_cast<uint32_t>(NC_QUEUE_MAJOR) << 16) | base, static_cast<uint32_t>(ifindex)};
  // The queue's owner first: nc_ingress must recognize the first segment that comes out of it.
  if (bpf_map_update_elem(classes_fd_, &q.classid, &k, BPF_ANY) != 0 || bpf_map_update_elem(queues_fd_, &k, &q, BPF_ANY) != 0) {
    bpf_map_delete_elem(classes_fd_, &q.classid);
    Visit(ns->second, [&] { DeleteQueue(*ns->second.queue, base); });
    return false;
  }
  classes_[key] = Class{base, rate, ChildQueueBytes(rate)};
  return true;
}

void DownloadQueues::DropClass(std::map<Key, Class>::iterator it) {
  nc_queue_key k = {std::get<0>(it->first), std::get<1>(it->first), std::get<2>(it->first), std::get<3>(it->first)};
  uint32_t classid = (static_cast<uint32_t>(NC_QUEUE_MAJOR) << 16) | it->second.minor;
  bpf_map_delete_elem(queues_fd_, &k);
  bpf_map_delete_elem(classes_fd_, &classid);
  auto ns = namespaces_.find(k.netns);
  if (ns != namespaces_.end() && ns->second.queue) {
    uint16_t base = it->second.minor;
    Visit(ns->second, [&] { DeleteQueue(*ns->second.queue, base); });
  }
  classes_.erase(it);
}

void DownloadQueues::Retune(uint32_t rule_id) {
  uint64_t rate = rate_of_(rule_id);
  for (auto it = classes_.begin(); it != classes_.end();) {
    auto current = it++;
    if (std::get<3>(current->first) != rule_id || (rate && rate == current->second.rate)) continue;
    auto ns = namespaces_.find(std::get<0>(current->first));
    bool retuned = false;
    // Queues never shrink: a smaller FIFO than its backlog drops every arrival until it drains, and the
    // holes stalled a 20 ms download lowered from 8 to 2 MiB/s for 1.5 s. The backlog drains at the new rate.
    uint32_t child_bytes = std::max(current->second.child_bytes, ChildQueueBytes(rate));
    if (rate && ns != namespaces_.end() && ns->second.queue) {
      std::string error;
      Visit(ns->second, [&] { retuned = SetQueue(*ns->second.queue, current->second.minor, rate, child_bytes, &error); });
    }
    if (retuned) current->second = Class{current->second.minor, rate, child_bytes};
    else DropClass(current);  // queued segments go with it; TCP resends them
  }
}

uint16_t DownloadQueues::FreeBase() const {
  std::set<uint16_t> used;
  for (const auto& [key, c] : classes_) used.insert(c.minor);
  for (uint32_t base = 16; base + NC_QUEUE_FLOWS <= 0xffff && base / 16 <= NC_MAX_QUEUES; base += 16)
    if (!used.count(static_cast<uint16_t>(base))) return static_cast<uint16_t>(base);
  return 0;
}

void DownloadQueues::Stop() {
  for (auto& [cookie, ns] : namespaces_) {
    for (const auto& [ifindex, fd] : ns.links) close(fd);
    ns.links.clear();
    if (!ns.queue) continue;
    if (!Visit(ns, [&] { ns.queue->Close(); })) ns.queue->Forget();
    ns.queue.reset();
  }
  namespaces_.clear();
  classes_.clear();
}

}  // namespace netclamp
