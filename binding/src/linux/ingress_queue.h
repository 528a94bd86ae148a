// Download shaping by queueing: the tc ingress program on every interface sets skb->priority to an HTB
// class id and bpf_redirect()s the packet to an IFB device; the IFB's root HTB qdisc queues it in that
// class at the limit rate and then re-injects it into the original device's ingress (tc is skipped on
// re-injection, so there is no loop). Unclassified packets (priority with no class) go out of HTB's
// direct queue unshaped.
//
// Everything is raw rtnetlink (NETLINK_ROUTE) on a socket opened per call, so a call acts in the calling
// thread's network namespace (the device's, when the caller has setns()'d there) and no socket keeps a
// namespace alive. Each call is synchronous: it returns after the kernel has acked (or refused) the change.
// The methods take an internal mutex, so calls from several threads are serialized.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace netclamp {

class IngressQueue {
 public:
  static constexpr uint16_t kMajor = 0x4e43;  // HTB handle major ("NC"); classes are kMajor:minor

  IngressQueue() = default;
  IngressQueue(const IngressQueue&) = delete;
  IngressQueue& operator=(const IngressQueue&) = delete;
  ~IngressQueue();  // Close()

  // Deletes a leftover IFB of that name (crash of a previous run; a device of that name that is not an
  // IFB is left alone and Open fails), creates an IFB device `ifb_name` with txqueuelen 1000 (HTB's
  // direct queue length), sets it up and adds root HTB qdisc kMajor: with default class 0 (unclassified
  // -> direct, unshaped). Fails if already open. Returns false with *error set (what failed, the errno
  // name and strerror, and the kernel's extended ack message when there is one).
  bool Open(const std::string& ifb_name, std::string* error);
  int ifb_ifindex() const;

  // Adds class kMajor:minor under kMajor:parent_minor (0 = the root), or changes it if it exists, with
  // rate bytes_per_sec and ceil ceil_bytes_per_sec (HTB lends a class up to its ceil what its siblings
  // leave unused), burst = max(rate/100, 4 KiB) (cburst likewise of the ceil), quantum = rate/10 clamped
  // to [1600, 200000], prio 0, and a bfifo leaf qdisc holding at most queue_bytes; queue_bytes 0 makes an
  // inner class (no leaf: its children queue). minor and the rate must be non-zero, ceil >= rate.
  bool SetClass(uint16_t minor, uint16_t parent_minor, uint64_t bytes_per_sec, uint64_t ceil_bytes_per_sec,
                uint32_t queue_bytes, std::string* error);
  // Deletes class kMajor:minor and its bfifo (children first: HTB refuses an inner class). Deleting a
  // missing class is success.
  bool DeleteClass(uint16_t minor, std::string* error);

  // Interfaces the tc ingress program should be on, in the calling thread's network namespace: every
  // interface that is administratively up (IFF_UP) and of type ARPHRD_ETHER or ARPHRD_LOOPBACK, except
  // IFB devices (an IFB's own ingress never sees received traffic). Ascending; empty if the dump fails.
  static std::vector<int> CandidateInterfaces();
  // Names of every interface in the calling thread's network namespace.
  static std::vector<std::string> LinkNames();
  // Deletes the IFB device of that name in the calling thread's namespace (leftover of a killed run).
  static void DeleteDevice(const std::string& name);

  // Deletes the IFB device (which removes its qdiscs and classes). Idempotent.
  void Close();
  // Forgets the device without touching the kernel (its namespace is gone, and the device with it).
  void Forget();

 private:
  void CloseLocked();

  mutable std::mutex mu_;
  std::string ifb_name_;
  int ifb_ifindex_ = 0;                      // 0 when closed
  std::map<uint16_t, uint16_t> leaf_major_;  // class minor -> handle major of its bfifo leaf
};

}  // namespace netclamp
