// Download queueing for the Linux backend: nc_tc_ingress on the interfaces of every network namespace,
// and, per namespace that needs one, a queue device (IngressQueue: IFB + HTB) with one class per PER_APP
// bucket of a download limit. The tc program asks for classes through the nc_queues map; this side
// creates them. Everything here is best effort: a bucket without a class stays policed by nc_ingress.
// Not thread-safe: the backend calls it under its rules lock.
#pragma once
#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <tuple>

#include "ingress_queue.h"

namespace netclamp {

class DownloadQueues {
 public:
  // The download rate a rule gives its PER_APP buckets' queues, 0 = none (not LIMIT, other scope, gone).
  using RateOf = std::function<uint64_t(uint32_t rule_id)>;

  DownloadQueues(int prog_fd, int queues_fd, int classes_fd, RateOf rate_of);
  ~DownloadQueues();  // Stop()

  // Finds network namespaces (of running processes and /run/netns), attaches nc_tc_ingress to their
  // Ethernet-type and loopback interfaces, forgets namespaces that are gone.
  void SyncNamespaces();
  // Creates the classes nc_tc_ingress asked for since the last call.
  void ServeRequests();
  // A rule changed or went: its classes follow its new rate or are deleted with their map entries.
  void Retune(uint32_t rule_id);
  // Detaches everything and deletes every queue device this service made.
  void Stop();


 private:
  struct Namespace {
    ino_t inode = 0;
    std::string path;                 // re-opened for each visit: an open fd would keep a deleted netns alive
    std::map<int, int> links;         // ifindex -> tcx link fd
    std::unique_ptr<IngressQueue> queue;  // created with the first class
  };
  struct Class {
    uint16_t minor;  // the queue's class; its children are minor + 1 .. minor + NC_QUEUE_FLOWS
    uint64_t rate;
    uint32_t child_bytes;  // each child's bfifo limit
  };
  using Key = std::tuple<uint64_t, uint64_t, uint32_t, uint32_t>;  // netns cookie, ino, dev, rule id

  // Runs fn inside the namespace (on this thread), then returns home; false if it is gone.
  bool Visit(const Namespace& ns, const std::function<void()>& fn);
  void AttachInterfaces(Namespace& ns);
  bool AddClass(const Key& key, uint64_t rate);
  void DropClass(std::map<Key, Class>::iterator it);
  uint16_t FreeBase() const;
  static bool SetQueue(IngressQueue& queue, uint16_t base, uint64_t rate, uint32_t child_bytes, std::string* error);
  static void DeleteQueue(IngressQueue& queue, uint16_t base);

  int prog_fd_, queues_fd_, classes_fd_;
  RateOf rate_of_;
  std::string device_name_;
  std::map<uint64_t, Namespace> namespaces_;  // by netns cookie
  std::map<Key, Class> classes_;
};

}  // namespace netclamp
