// The OS-agnostic backend interface the N-API glue drives. One implementation per platform
// (binding/src/linux, binding/src/win), chosen at build time; an "unsupported" one elsewhere.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace netclamp {

enum class Action { Allow, Block, Limit };
enum class Direction { Inbound, Outbound, Both };
enum class Protocol { Any, Tcp, Udp, Icmp };
enum class LimitScope { PerApp, PerProcess, PerConnection };
enum class MatchMode { ExactPath, Filename, Directory };

// One enabled rule as the engine contract (lib/engine/engine.ts) describes it, already parsed.
struct RuleSpec {
  uint32_t id = 0;
  Action action = Action::Allow;
  Direction direction = Direction::Both;
  Protocol protocol = Protocol::Any;
  std::string remote_address;  // "" = any; address or CIDR prefix
  uint16_t remote_port = 0;    // 0 = any
  uint64_t rate_down = 0;      // bytes/s, 0 = no limit
  uint64_t rate_up = 0;
  LimitScope scope = LimitScope::PerApp;
  MatchMode match_mode = MatchMode::ExactPath;
  std::string app_path;        // "" = every application
  int32_t priority = 0;
  bool reset_counters = false;
  uint64_t fingerprint = 0;
};

struct InstalledRule {
  uint32_t id;
  uint64_t fingerprint;
};

struct CounterSet {
  uint64_t bytes_up = 0;
  uint64_t bytes_down = 0;
  uint64_t blocked = 0;
};

struct RuleCounters {
  uint32_t id;
  CounterSet counters;
};

struct Counters {
  std::vector<RuleCounters> rules;
  CounterSet totals;
};

// Traffic of one executable identity or one process, for the service's /apps view.
struct AppCounters {
  uint64_t dev;
  uint64_t ino;
  CounterSet counters;
};
struct ProcessCounters {
  uint32_t pid;
  uint64_t dev;
  uint64_t ino;
  CounterSet counters;
};
struct ActivityCounters {
  std::vector<AppCounters> apps;
  std::vector<ProcessCounters> processes;
};

struct Status {
  bool filtering = false;
  bool shaping = false;
  std::string state = "DOWN";  // OPEN, DOWN, RECOVERING, UNAVAILABLE
  std::string detail;          // empty when OPEN
  uint64_t restarts = 0;       // Windows: BFE bounces survived (session reopened); Linux: always 0
};

// Another traffic shaper or filter found on the machine (contract: /status competing_shapers).
struct CompetingShaper {
  std::string name;
  std::string detail;
};

// Something the data plane reports on its own (Windows: the driver's events; also engine_down /
// engine_recovered when the WFP session is lost and reopened). Delivered on a backend thread.
struct EngineEvent {
  std::string type;  // "flow_established", "flow_deleted", "queue_overflow", "bfe_state", "engine_down", ...
  uint32_t rule_id = 0;
  uint64_t flow_id = 0;
  uint64_t app_key = 0;
  uint32_t pid = 0;
  uint64_t value = 0;
  uint64_t timestamp_100ns = 0;  // FILETIME epoch; 0 when unknown
  uint32_t lost = 0;             // events the source dropped before this one
  std::string detail;
};
using EventSink = std::function<void(const EngineEvent&)>;

// One socket of the OS connection table, with its owning process.
struct ConnectionInfo {
  std::string protocol;  // "TCP" or "UDP"
  std::string local_address;
  uint16_t local_port = 0;
  std::string remote_address;  // "" for UDP
  uint16_t remote_port = 0;
  std::string state;           // TCP state name; "" for UDP
  uint32_t pid = 0;
  std::string app_path;        // "" when the process image cannot be read
};

// A FILENAME/DIRECTORY pattern whose executables the service wants to know outside any rule (quotas
// count by executable identity), and what the engine learned for it: every identity seen running or
// exec'ing that the pattern covers, most recently seen last.
struct PatternWatch {
  uint32_t id = 0;
  MatchMode mode = MatchMode::Filename;
  std::string path;
};
struct WatchedIdentities {
  uint32_t id = 0;
  std::vector<std::pair<uint64_t, uint64_t>> identities;  // {dev, ino}
};

// Stable machine identifiers the service hashes into the HWID (contract: licensing).
struct HwidInputs {
  std::string machine_guid;  // Windows: HKLM\SOFTWARE\Microsoft\Cryptography\MachineGuid
  std::string smbios_uuid;   // SMBIOS type 1 UUID, canonical lower-case text; "" when absent
};

// A structured error: `code` is a stable string (errno name, ENGINE_DOWN, BPF_LOAD, UNSUPPORTED...),
// `err` the OS errno when there is one, `syscall` the failing call when there is one.
class BackendError : public std::runtime_error {
 public:
  BackendError(std::string code, const std::string& message, int err = 0, std::string syscall = "")
      : std::runtime_error(message), code_(std::move(code)), errno_(err), syscall_(std::move(syscall)) {}
  const std::string& code() const { return code_; }
  int err() const { return errno_; }
  const std::string& syscall() const { return syscall_; }

 private:
  std::string code_;
  int errno_;
  std::string syscall_;
};

// Symbolic name of an errno value ("ENOENT"), or "E<number>" when unknown.
std::string ErrnoName(int err);
// BackendError for a failed system call, with errno name as code.
BackendError SysError(int err, const std::string& syscall, const std::string& what);

// Calls are serialized by the caller (the glue's mutex), except status(), which must be cheap and
// thread-safe because it runs on the JS thread while a call may be in flight.
class Backend {
 public:
  virtual ~Backend() = default;
  virtual void Open(uint32_t exempt_pid) = 0;
  virtual void Close() = 0;
  virtual Status GetStatus() = 0;
  virtual void ApplyRule(const RuleSpec& rule) = 0;
  virtual void RemoveRule(uint32_t id) = 0;
  virtual std::vector<InstalledRule> InstalledRules() = 0;
  virtual Counters ReadCounters() = 0;
  virtual ActivityCounters ReadActivity() = 0;
  // Optional capabilities; the defaults suit a backend that has nothing to report.
  virtual std::vector<CompetingShaper> CompetingShapers() { return {}; }
  virtual std::vector<ConnectionInfo> Connections() { return {}; }
  virtual HwidInputs ReadHwidInputs() { return {}; }
  // Replaces the set of pattern watches (a watch whose mode and path are unchanged keeps what it learned)
  // and returns what each one knows now. Backends without exec notifications refuse any watch.
  virtual std::vector<WatchedIdentities> WatchPatterns(const std::vector<PatternWatch>& watches) {
    if (!watches.empty()) throw BackendError("UNSUPPORTED", "this platform cannot watch executables by file name or folder");
    return {};
  }
  // Must be thread-safe (called on the JS thread while a call may run); an empty sink detaches.
  virtual void SetEventSink(EventSink sink) { (void)sink; }
};

// Defined by the platform backend compiled in (see CMakeLists.txt).
std::unique_ptr<Backend> CreateBackend();

}  // namespace netclamp
