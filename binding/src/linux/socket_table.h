// The machine's socket table for /connections: sock_diag (NETLINK_INET_DIAG) dumps of TCP and UDP over
// IPv4 and IPv6 in the caller's network namespace, each socket's owner found by its inode in /proc/*/fd.
//
// The inode -> pid map is cached: a full /proc walk happens only when the dump holds an inode the cache
// does not know (a new socket), and at most once per kRescanIntervalMs (a socket newer than that may show pid 0 until the next call), so calling this every second with
// thousands of long-lived sockets costs four netlink dumps and no /proc walk.
#pragma once

#include <arpa/inet.h>
#include <dirent.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "../common/backend.h"

namespace netclamp {

class SocketTable {
 public:
  std::vector<ConnectionInfo> Read() {
    struct Raw {
      ConnectionInfo info;
      uint32_t inode;
    };
    std::vector<Raw> raw;
    const struct {
      uint8_t family;
      uint8_t protocol;
    } kinds[] = {{AF_INET, IPPROTO_TCP}, {AF_INET6, IPPROTO_TCP}, {AF_INET, IPPROTO_UDP}, {AF_INET6, IPPROTO_UDP}};
    for (const auto& kind : kinds) {
      Dump(kind.family, kind.protocol, [&](const inet_diag_msg& msg) {
        Raw entry;
        entry.inode = msg.idiag_inode;
        ConnectionInfo& c = entry.info;
        bool tcp = kind.protocol == IPPROTO_TCP;
        c.protocol = tcp ? "TCP" : "UDP";
        c.local_address = Address(kind.family, msg.id.idiag_src);
        c.local_port = ntohs(msg.id.idiag_sport);
        c.remote_port = ntohs(msg.id.idiag_dport);
        // An unconnected UDP socket has no peer: the contract's remote is then "".
        c.remote_address = (!tcp && c.remote_port == 0) ? "" : Address(kind.family, msg.id.idiag_dst);
        c.state = tcp ? TcpStateName(msg.idiag_state) : "";
        raw.push_back(std::move(entry));
      });
    }

    bool unknown = false;
    for (const Raw& r : raw) {
      unknown |= r.inode != 0 && owners_.find(r.inode) == owners_.end() && ownerless_.find(r.inode) == ownerless_.end();
    }
    auto now = std::chrono::steady_clock::now();
    if ((unknown && now - last_scan_ >= std::chrono::milliseconds(kRescanIntervalMs)) || last_scan_.time_since_epoch().count() == 0) {
      ScanProc();
      last_scan_ = now;
      // Sockets no process holds (kernel sockets, fds of processes that are gone) would otherwise force a
      // walk on every call.
      ownerless_.clear();
      for (const Raw& r : raw) {
        if (r.inode != 0 && owners_.find(r.inode) == owners_.end()) ownerless_.insert(r.inode);
      }
    }

    std::vector<ConnectionInfo> out;
    out.reserve(raw.size());
    for (Raw& r : raw) {
      auto owner = owners_.find(r.inode);
      if (r.inode != 0 && owner != owners_.end()) {
        r.info.pid = owner->second;
        r.info.app_path = ExePath(owner->second);
      }
      out.push_back(std::move(r.info));
    }
    return out;
  }

 private:
  static constexpr int kRescanIntervalMs = 200;

  template <typename Visit>
  void Dump(uint8_t family, uint8_t protocol, Visit visit) {
    int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_INET_DIAG);
    if (fd < 0) throw SysError(errno, "socket", "cannot open a sock_diag netlink socket");
    struct {
      nlmsghdr header;
      inet_diag_req_v2 request;
    } message = {};
    message.header.nlmsg_len = sizeof message;
    message.header.nlmsg_type = SOCK_DIAG_BY_FAMILY;
    message.header.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    message.header.nlmsg_seq = 1;
    message.request.sdiag_family = family;
    message.request.sdiag_protocol = protocol;
    message.request.idiag_states = ~0u;  // every state, listeners and TIME_WAIT included
    sockaddr_nl kernel = {};
    kernel.nl_family = AF_NETLINK;
    if (sendto(fd, &message, sizeof message, 0, reinterpret_cast<sockaddr*>(&kernel), sizeof kernel) < 0) {
      int err = errno;
      close(fd);
      throw SysError(err, "sendto", "cannot request a sock_diag dump");
    }
    std::vector<char> buffer(64 * 1024);
    for (;;) {
      ssize_t got = recv(fd, buffer.data(), buffer.size(), 0);
      if (got < 0) {
        if (errno == EINTR) continue;
        int err = errno;
        close(fd);
        throw SysError(err, "recv", "cannot read a sock_diag dump");
      }
      int remaining = static_cast<int>(got);
      for (nlmsghdr* h = reinterpret_cast<nlmsghdr*>(buffer.data()); NLMSG_OK(h, remaining); h = NLMSG_NEXT(h, remaining)) {
        if (h->nlmsg_type == NLMSG_DONE) {
          close(fd);
          return;
        }
        if (h->nlmsg_type == NLMSG_ERROR) {
          const nlmsgerr* e = static_cast<const nlmsgerr*>(NLMSG_DATA(h));
          close(fd);
          // A protocol the kernel does not offer (no IPv6, no UDP diag module) has no sockets to list.
          if (e->error == -ENOENT || e->error == -EOPNOTSUPP || e->error == -EAFNOSUPPORT) return;
          throw SysError(-e->error, "sock_diag", "the kernel refused a sock_diag dump");
        }
        if (h->nlmsg_len >= NLMSG_LENGTH(sizeof(inet_diag_msg))) visit(*static_cast<const inet_diag_msg*>(NLMSG_DATA(h)));
      }
    }
  }

  static std::string Address(uint8_t family, const __be32 words[4]) {
    char text[INET6_ADDRSTRLEN] = "";
    inet_ntop(family, words, text, sizeof text);
    return text;
  }

  static const char* TcpStateName(uint8_t state) {
    static const char* const kNames[] = {"",          "ESTABLISHED", "SYN_SENT",   "SYN_RECV",  "FIN_WAIT1",
                                         "FIN_WAIT2", "TIME_WAIT",   "CLOSE",      "CLOSE_WAIT", "LAST_ACK",
                                         "LISTEN",    "CLOSING",     "NEW_SYN_RECV"};
    return state < sizeof kNames / sizeof kNames[0] ? kNames[state] : "UNKNOWN";
  }

  // Every socket fd of every process: "socket:[inode]" -> tgid. Threads share the fd table, so
  // /proc/<tgid>/fd is enough.
  void ScanProc() {
    owners_.clear();
    exe_.clear();
    DIR* proc = opendir("/proc");
    if (!proc) return;
    std::string fd_dir;
    char target[64];
    while (dirent* process = readdir(proc)) {
      char* end = nullptr;
      unsigned long pid = strtoul(process->d_name, &end, 10);
      if (pid == 0 || *end != '\0') continue;
      fd_dir = std::string("/proc/") + process->d_name + "/fd";
      DIR* fds = opendir(fd_dir.c_str());
      if (!fds) continue;  // gone, or not ours to read
      int dir_fd = dirfd(fds);
      while (dirent* entry = readdir(fds)) {
        if (entry->d_name[0] == '.') continue;
        ssize_t n = readlinkat(dir_fd, entry->d_name, target, sizeof target - 1);
        if (n < 9 || memcmp(target, "socket:[", 8) != 0) continue;
        target[n] = '\0';
        uint32_t inode = static_cast<uint32_t>(strtoul(target + 8, nullptr, 10));
        owners_.emplace(inode, static_cast<uint32_t>(pid));  // the first holder wins (forked fds are shared)
      }
      closedir(fds);
    }
    closedir(proc);
  }

  const std::string& ExePath(uint32_t pid) {
    auto cached = exe_.find(pid);
    if (cached != exe_.end()) return cached->second;
    char path[4096];
    std::string link = "/proc/" + std::to_string(pid) + "/exe";
    ssize_t n = readlink(link.c_str(), path, sizeof path - 1);
    std::string exe = n > 0 ? std::string(path, static_cast<size_t>(n)) : "";
    return exe_.emplace(pid, std::move(exe)).first->second;
  }

  std::unordered_map<uint32_t, uint32_t> owners_;
  std::unordered_map<uint32_t, std::string> exe_;
  std::unordered_set<uint32_t> ownerless_;
  std::chrono::steady_clock::time_point last_scan_{};
};

}  // namespace netclamp
