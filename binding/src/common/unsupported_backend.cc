// Backend for platforms without a data plane yet: reports UNAVAILABLE and refuses every kernel call.
#include "backend.h"

namespace netclamp {
namespace {

class UnsupportedBackend : public Backend {
 public:
  void Open(uint32_t) override { Refuse(); }
  void Close() override {}
  Status GetStatus() override {
    Status s;
    s.state = "UNAVAILABLE";
    s.detail = "NetClamp has no data plane for this operating system";
    return s;
  }
  void ApplyRule(const RuleSpec&) override { Refuse(); }
  void RemoveRule(uint32_t) override { Refuse(); }
  std::vector<InstalledRule> InstalledRules() override { Refuse(); }
  Counters ReadCounters() override { Refuse(); }
  ActivityCounters ReadActivity() override { Refuse(); }

 private:
  [[noreturn]] static void Refuse() {
    throw BackendError("UNSUPPORTED", "NetClamp has no data plane for this operating system");
  }
};

}  // namespace

std::unique_ptr<Backend> CreateBackend() { return std::make_unique<UnsupportedBackend>(); }

}  // namespace netclamp
