// The Windows backend: WFP through fwpuclnt in a non-dynamic session, NetClamp's persistent provider and
// sublayer, one filter set per rule (planned by wfp_plan.cc), the driver for LIMIT rules, BFE-loss
// recovery on a background thread. docs/windows.md follows one rule through this file.
#include <winsock2.h>
#include <windows.h>
#include <fwpmu.h>
#include <winsvc.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "../common/backend.h"
#include "driver_client.h"
#include "wfp_compat.h"
#include "wfp_plan.h"
#include "win_errors.h"
#include "win_system.h"

namespace netclamp {
namespace {

using win::WinError;

constexpr GUID kProviderKey = NETCLAMP_PROVIDER_GUID_INIT;
constexpr GUID kSublayerKey = NETCLAMP_SUBLAYER_GUID_INIT;
// High, but below the top so that a security product can still sit above us (and we report it if it does).
constexpr UINT16 kSublayerWeight = 0xFFF0;
wchar_t kName[] = L"NetClamp";

GUID ToGuid(const nc_guid& g) {
  GUID out;
  static_assert(sizeof out == sizeof g, "GUID layout");
  std::memcpy(&out, &g, sizeof out);
  return out;
}
nc_guid FromGuid(const GUID& g) {
  nc_guid out;
  std::memcpy(&out, &g, sizeof out);
  return out;
}
bool SameGuid(const GUID& a, const GUID& b) { return std::memcmp(&a, &b, sizeof a) == 0; }

const GUID& LayerKey(wfp::LayerSlot slot) {
  using wfp::LayerSlot;
  switch (slot) {
    case LayerSlot::ConnectV4: return wfp::kLayerAleAuthConnectV4;
    case LayerSlot::ConnectV6: return wfp::kLayerAleAuthConnectV6;
    case LayerSlot::RecvAcceptV4: return wfp::kLayerAleAuthRecvAcceptV4;
    case LayerSlot::RecvAcceptV6: return wfp::kLayerAleAuthRecvAcceptV6;
    case LayerSlot::FlowEstablishedV4: return wfp::kLayerAleFlowEstablishedV4;
    case LayerSlot::FlowEstablishedV6: return wfp::kLayerAleFlowEstablishedV6;
    case LayerSlot::OutboundTransportV4: return wfp::kLayerOutboundTransportV4;
    case LayerSlot::OutboundTransportV6: return wfp::kLayerOutboundTransportV6;
    case LayerSlot::InboundTransportV4: return wfp::kLayerInboundTransportV4;
    default: return wfp::kLayerInboundTransportV6;
  }
}

// An app id blob from FwpmGetAppIdFromFileName0, freed with FwpmFreeMemory0.
class AppId {
 public:
  AppId() = default;
  ~AppId() { Reset(); }
  AppId(const AppId&) = delete;
  AppId& operator=(const AppId&) = delete;
  void Reset() {
    if (blob_ != nullptr) FwpmFreeMemory0(reinterpret_cast<void**>(&blob_));
    blob_ = nullptr;
  }
  FWP_BYTE_BLOB** out() {
    Reset();
    return &blob_;
  }
  FWP_BYTE_BLOB* get() const { return blob_; }
  uint64_t Key() const { return blob_ ? nc_app_key_from_app_id(blob_->data, blob_->size) : 0; }

 private:
  FWP_BYTE_BLOB* blob_ = nullptr;
};

// Resolves a path to its WFP app id; ENOENT when the file (or folder) does not exist.
void ResolveAppId(const std::string& path, bool prefix, AppId* out, FWP_BYTE_BLOB* prefix_blob,
                  std::vector<uint8_t>* prefix_storage) {
  std::wstring wide = win::Utf8ToWide(path);
  if (prefix) {
    while (!wide.empty() && (wide.back() == L'\\' || wide.back() == L'/')) wide.pop_back();
  }
  DWORD rc = FwpmGetAppIdFromFileName0(wide.c_str(), out->out());
  if (rc != ERROR_SUCCESS) throw WinError(rc, "FwpmGetAppIdFromFileName0", "resolving '" + path + "'");
  if (prefix) {
    // The blob is a NUL-terminated UTF-16 device path; the prefix is that path plus a separator, without
    // the NUL, so "C:\\Apps" matches "C:\\Apps\\x.exe" but not "C:\\AppsOld\\x.exe".
    FWP_BYTE_BLOB* b = out->get();
    size_t chars = b->size / 2;
    const wchar_t* text = reinterpret_cast<const wchar_t*>(b->data);
    while (chars > 0 && text[chars - 1] == L'\0') chars--;
    std::wstring dir(text, chars);
    dir.push_back(L'\\');
    prefix_storage->assign(reinterpret_cast<const uint8_t*>(dir.data()),
                           reinterpret_cast<const uint8_t*>(dir.data()) + dir.size() * sizeof(wchar_t));
    prefix_blob->size = static_cast<UINT32>(prefix_storage->size());
    prefix_blob->data = prefix_storage->data();
  }
}

// FwpmTransactionBegin0 ... Commit0, aborted by the destructor unless committed.
class Transaction {
 public:
  explicit Transaction(HANDLE engine) : engine_(engine) {
    DWORD rc = FwpmTransactionBegin0(engine_, 0);
    if (rc != ERROR_SUCCESS) throw WinError(rc, "FwpmTransactionBegin0", "starting a WFP transaction");
    open_ = true;
  }
  ~Transaction() {
    if (open_) FwpmTransactionAbort0(engine_);
  }
  void Commit() {
    DWORD rc = FwpmTransactionCommit0(engine_);
    open_ = false;
    if (rc != ERROR_SUCCESS) throw WinError(rc, "FwpmTransactionCommit0", "committing a WFP transaction");
  }

 private:
  HANDLE engine_;
  bool open_ = false;
};

std::string DisplayName(const FWPM_DISPLAY_DATA0& d) {
  return d.name ? win::WideToUtf8(d.name) : std::string("(unnamed)");
}

class WinBackend : public Backend {
 public:
  WinBackend() { wake_ = CreateEventW(nullptr, FALSE, FALSE, nullptr); }
  ~WinBackend() override {
    try {
      Close();
    } catch (...) {
    }
    if (wake_ != nullptr) CloseHandle(wake_);
  }

  void Open(uint32_t exempt_pid) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (engine_ != nullptr) return;
      service_path_ = win::ProcessImagePath(exempt_pid != 0 ? exempt_pid : GetCurrentProcessId());
      OpenSessionLocked();  // throws: BFE not running, not an administrator...
      Transaction txn(engine_);
      RemoveInfrastructureLocked();
      AddInfrastructureLocked();
      txn.Commit();
      ConnectDriverLocked();
      SetState("OPEN", "");
    }
    StartWatcher();
  }

  void Close() override {
    StopWatcher();
    std::lock_guard<std::mutex> lock(mu_);
    driver_.Disconnect();
    if (engine_ != nullptr) {
      // An orderly close removes everything NetClamp put into WFP (engine contract). A crash leaves the
      // persistent filters in place: blocks keep blocking, callout filters permit without the driver.
      try {
        Transaction txn(engine_);
        for (const auto& f : EnumerateOwnFiltersLocked()) DeleteFilterLocked(f.key);
        txn.Commit();
      } catch (const BackendError&) {
      }
      FwpmEngineClose0(engine_);
      engine_ = nullptr;
    }
    rules_.clear();
    SetState("DOWN", "closed");
  }

  Status GetStatus() override {
    std::lock_guard<std::mutex> lock(status_mu_);
    return status_;
  }

  void ApplyRule(const RuleSpec& rule) override {
    std::lock_guard<std::mutex> lock(mu_);
    RequireOpenLocked();
    wfp::RulePlan plan = wfp::PlanRule(rule);
    AppId app;
    FWP_BYTE_BLOB prefix{};
    std::vector<uint8_t> prefix_storage;
    if (plan.app != wfp::AppMatch::Any) {
      try {
        ResolveAppId(rule.app_path, plan.app == wfp::AppMatch::AppIdPrefix, &app, &prefix, &prefix_storage);
      } catch (const BackendError& e) {
        if (e.code() == "ENOENT") RemoveRuleLocked(rule.id);  // contract: a previous version is removed
        throw;
      }
    }
    const FWP_BYTE_BLOB* app_blob = plan.app == wfp::AppMatch::AppIdPrefix ? &prefix : app.get();
    bool limit_set = false;
    try {
      Transaction txn(engine_);
      DeleteRuleFiltersLocked(rule.id);
      auto data = wfp::EncodeProviderData(rule.id, rule.fingerprint, static_cast<uint8_t>(plan.filters.size()));
      for (const auto& f : plan.filters) AddFilterLocked(f, app_blob, data.data(), static_cast<UINT32>(data.size()));
      if (plan.needs_driver_limit) {
        // DIRECTORY rules and "every app" rules let the filters match; the driver then keys by flow's app.
        uint64_t app_key = plan.app == wfp::AppMatch::ExactAppId ? app.Key() : 0;
        driver_.SetAppLimit(rule.id, wfp::DriverScope(rule.scope), app_key, wfp::ClampRate(rule.rate_up),
                            wfp::ClampRate(rule.rate_down));
        limit_set = true;
      } else if (driver_.connected()) {
        driver_.RemoveAppLimit(rule.id);  // the rule may have been a LIMIT before
      }
      txn.Commit();
    } catch (const BackendError& e) {
      if (limit_set) {
        try {
          driver_.RemoveAppLimit(rule.id);
        } catch (...) {
        }
      }
      NoteFailureLocked(e);
      throw;
    }
    rules_[rule.id] = rule;
  }

  void RemoveRule(uint32_t id) override {
    std::lock_guard<std::mutex> lock(mu_);
    RequireOpenLocked();
    RemoveRuleLocked(id);
  }

  std::vector<InstalledRule> InstalledRules() override {
    std::lock_guard<std::mutex> lock(mu_);
    RequireOpenLocked();
    struct Seen {
      uint64_t fingerprint = 0;
      uint8_t expected = 0;
      uint8_t found = 0;
      bool consistent = true;
    };
    std::map<uint32_t, Seen> seen;
    try {
      for (const auto& f : EnumerateOwnFiltersLocked()) {
        if (f.rule_id == 0) continue;  // infrastructure
        Seen& s = seen[f.rule_id];
        bool first = s.found == 0;
        s.found++;
        if (!f.has_data || f.data_rule_id != f.rule_id) {
          s.consistent = false;
          continue;
        }
        if (first) {
          s.fingerprint = f.fingerprint;
          s.expected = f.filter_count;
        } else if (s.fingerprint != f.fingerprint || s.expected != f.filter_count) {
          s.consistent = false;
        }
      }
    } catch (const BackendError& e) {
      NoteFailureLocked(e);
      throw;
    }
    std::vector<InstalledRule> out;
    for (const auto& [id, s] : seen) {
      // A partial or mixed set reads as fingerprint 0: never equal to a real rule's, so reconcile repairs it.
      bool whole = s.consistent && s.found == s.expected;
      out.push_back({id, whole ? s.fingerprint : 0});
    }
    return out;
  }

  Counters ReadCounters() override {
    std::lock_guard<std::mutex> lock(mu_);
    RequireOpenLocked();
    Counters c;
    // WFP itself counts nothing per filter in user mode; the driver counts what LIMIT rules shaped.
    std::map<uint32_t, CounterSet> by_rule;
    for (const auto& [id, rule] : rules_) by_rule[id] = CounterSet{};
    if (driver_.connected()) {
      for (const nc_rule_counters& rc : driver_.ReadCounters()) {
        CounterSet& s = by_rule[rc.rule_id];
        s.bytes_up = rc.bytes_up;
        s.bytes_down = rc.bytes_down;
      }
    }
    for (const auto& [id, s] : by_rule) {
      c.rules.push_back({id, s});
      c.totals.bytes_up += s.bytes_up;
      c.totals.bytes_down += s.bytes_down;
      c.totals.blocked += s.blocked;
    }
    return c;
  }

  ActivityCounters ReadActivity() override {
    // Processes that own sockets now, keyed like Linux by (volume serial, file index) of their image.
    ActivityCounters a;
    std::set<uint32_t> pids;
    std::map<std::pair<uint64_t, uint64_t>, bool> apps;
    for (const ConnectionInfo& conn : win::ListConnections()) {
      if (conn.pid == 0 || !pids.insert(conn.pid).second) continue;
      uint64_t volume = 0, index = 0;
      if (!win::FileIdentity(conn.app_path, &volume, &index)) continue;
      a.processes.push_back({conn.pid, volume, index, CounterSet{}});
      if (!apps[{volume, index}]) {
        apps[{volume, index}] = true;
        a.apps.push_back({volume, index, CounterSet{}});
      }
    }
    return a;
  }

  std::vector<CompetingShaper> CompetingShapers() override {
    std::lock_guard<std::mutex> lock(mu_);
    RequireOpenLocked();
    try {
      return ScanCompetitorsLocked();
    } catch (const BackendError& e) {
      NoteFailureLocked(e);
      throw;
    }
  }

  std::vector<ConnectionInfo> Connections() override { return win::ListConnections(); }
  HwidInputs ReadHwidInputs() override { return win::ReadHwidInputs(); }

  void SetEventSink(EventSink sink) override {
    std::lock_guard<std::mutex> lock(sink_mu_);
    sink_ = std::move(sink);
  }

 private:
  struct OwnFilter {
    GUID key;
    uint32_t rule_id = 0;
    wfp::LayerSlot slot = wfp::LayerSlot::ConnectV4;
    bool has_data = false;
    uint32_t data_rule_id = 0;
    uint64_t fingerprint = 0;
    uint8_t filter_count = 0;
  };

  // ---- session -------------------------------------------------------------------------------------

  void OpenSessionLocked() {
    FWPM_SESSION0 session{};
    session.displayData.name = kName;
    session.txnWaitTimeoutInMSec = 5000;  // a transaction holds a BFE-wide lock: never wait long for it
    // flags = 0: NOT FWPM_SESSION_FLAG_DYNAMIC, so our objects outlive this process (see Close()).
    HANDLE engine = nullptr;
    DWORD rc = FwpmEngineOpen0(nullptr, RPC_C_AUTHN_WINNT, nullptr, &session, &engine);
    if (rc != ERROR_SUCCESS) throw WinError(rc, "FwpmEngineOpen0", "opening the WFP engine");
    engine_ = engine;
    try {
      Transaction txn(engine_);
      FWPM_PROVIDER0 provider{};
      provider.providerKey = kProviderKey;
      provider.displayData.name = kName;
      wchar_t description[] = L"NetClamp per-application firewall and bandwidth clamp";
      provider.displayData.description = description;
      provider.flags = FWPM_PROVIDER_FLAG_PERSISTENT;
      wchar_t service[] = L"NetClamp";
      provider.serviceName = service;
      AddIgnoringExisting(FwpmProviderAdd0(engine_, &provider, nullptr), "FwpmProviderAdd0");

      FWPM_SUBLAYER0 sublayer{};
      sublayer.subLayerKey = kSublayerKey;
      sublayer.displayData.name = kName;
      sublayer.flags = FWPM_SUBLAYER_FLAG_PERSISTENT;
      GUID provider_key = kProviderKey;
      sublayer.providerKey = &provider_key;
      sublayer.weight = kSublayerWeight;
      AddIgnoringExisting(FwpmSubLayerAdd0(engine_, &sublayer, nullptr), "FwpmSubLayerAdd0");

      // The driver's callouts as management objects, so filters can point at them even before (or without)
      // the driver registering them: such filters then act as permit (PERMIT_IF_CALLOUT_UNREGISTERED).
      const struct {
        nc_guid key;
        wfp::LayerSlot slot;
      } callouts[] = {
          {NETCLAMP_CALLOUT_FLOW_ESTABLISHED_V4_GUID_INIT, wfp::LayerSlot::FlowEstablishedV4},
          {NETCLAMP_CALLOUT_FLOW_ESTABLISHED_V6_GUID_INIT, wfp::LayerSlot::FlowEstablishedV6},
          {NETCLAMP_CALLOUT_OUTBOUND_TRANSPORT_V4_GUID_INIT, wfp::LayerSlot::OutboundTransportV4},
          {NETCLAMP_CALLOUT_OUTBOUND_TRANSPORT_V6_GUID_INIT, wfp::LayerSlot::OutboundTransportV6},
          {NETCLAMP_CALLOUT_INBOUND_TRANSPORT_V4_GUID_INIT, wfp::LayerSlot::InboundTransportV4},
          {NETCLAMP_CALLOUT_INBOUND_TRANSPORT_V6_GUID_INIT, wfp::LayerSlot::InboundTransportV6},
      };
      for (const auto& c : callouts) {
        FWPM_CALLOUT0 callout{};
        callout.calloutKey = ToGuid(c.key);
        callout.displayData.name = kName;
        callout.flags = FWPM_CALLOUT_FLAG_PERSISTENT;
        callout.providerKey = &provider_key;
        callout.applicableLayer = LayerKey(c.slot);
        AddIgnoringExisting(FwpmCalloutAdd0(engine_, &callout, nullptr, nullptr), "FwpmCalloutAdd0");
      }
      txn.Commit();
    } catch (...) {
      FwpmEngineClose0(engine_);
      engine_ = nullptr;
      throw;
    }
  }

  static void AddIgnoringExisting(DWORD rc, const char* call) {
    if (rc != ERROR_SUCCESS && rc != static_cast<DWORD>(FWP_E_ALREADY_EXISTS))
      throw WinError(rc, call, "adding NetClamp's WFP objects");
  }

  void RequireOpenLocked() {
    if (engine_ == nullptr) {
      Status s = GetStatus();
      throw BackendError("ENGINE_DOWN", "the WFP session is not open" + (s.detail.empty() ? "" : ": " + s.detail));
    }
  }

  // A session-gone error: drop the handle, go DOWN at once, and let the watcher reopen it.
  void NoteFailureLocked(const BackendError& e) {
    if (e.err() == 0 || !win::IsSessionGone(static_cast<uint32_t>(e.err()))) return;
    LoseSessionLocked("the WFP session was lost (" + e.code() + " from " + e.syscall() + ")");
  }

  void LoseSessionLocked(const std::string& why) {
    if (engine_ != nullptr) {
      FwpmEngineClose0(engine_);  // fails harmlessly on a dead RPC binding; frees the client side
      engine_ = nullptr;
    }
    SetState("DOWN", why);
    Emit("engine_down", why);
    if (wake_ != nullptr) SetEvent(wake_);
  }

  // ---- filters -------------------------------------------------------------------------------------

  void AddFilterLocked(const wfp::FilterPlan& plan, const FWP_BYTE_BLOB* app_blob, const uint8_t* data,
                       UINT32 data_size) {
    FWPM_FILTER0 filter{};
    filter.filterKey = ToGuid(plan.key);
    filter.displayData.name = kName;
    filter.flags = FWPM_FILTER_FLAG_PERSISTENT;
    if (plan.clear_action_right) filter.flags |= FWPM_FILTER_FLAG_CLEAR_ACTION_RIGHT;
    if (plan.permit_if_callout_unregistered) filter.flags |= FWPM_FILTER_FLAG_PERMIT_IF_CALLOUT_UNREGISTERED;
    GUID provider_key = kProviderKey;
    filter.providerKey = &provider_key;
    filter.providerData.size = data_size;
    filter.providerData.data = const_cast<UINT8*>(data);
    filter.layerKey = LayerKey(plan.slot);
    filter.subLayerKey = kSublayerKey;
    filter.weight.type = FWP_UINT64;
    UINT64 weight = plan.weight;
    filter.weight.uint64 = &weight;
    switch (plan.action) {
      case wfp::FilterAction::Block: filter.action.type = FWP_ACTION_BLOCK; break;
      case wfp::FilterAction::Permit: filter.action.type = FWP_ACTION_PERMIT; break;
      case wfp::FilterAction::Callout:
        filter.action.type = FWP_ACTION_CALLOUT_UNKNOWN;
        filter.action.calloutKey = ToGuid(plan.callout_key);
        filter.rawContext = plan.raw_context;  // the rule id; the driver looks its limit up by it
        break;
    }

    std::vector<FWPM_FILTER_CONDITION0> conditions;
    conditions.reserve(5);
    FWP_V4_ADDR_AND_MASK v4{};
    FWP_V6_ADDR_AND_MASK v6{};
    FWP_BYTE_BLOB app_copy{};
    if (plan.app != wfp::AppMatch::Any) {
      if (app_blob == nullptr) throw BackendError("EINTERNAL", "app condition without an app id");
      app_copy = *app_blob;
      FWPM_FILTER_CONDITION0 c{};
      c.fieldKey = wfp::kConditionAleAppId;
      c.matchType = plan.app == wfp::AppMatch::AppIdPrefix ? static_cast<FWP_MATCH_TYPE>(wfp::kMatchPrefix)
                                                           : FWP_MATCH_EQUAL;
      c.conditionValue.type = FWP_BYTE_BLOB_TYPE;
      c.conditionValue.byteBlob = &app_copy;
      conditions.push_back(c);
    }
    if (plan.remote.family == wfp::AddressFamily::V4) {
      v4.addr = plan.remote.v4_addr;
      v4.mask = plan.remote.v4_mask;
      FWPM_FILTER_CONDITION0 c{};
      c.fieldKey = wfp::kConditionIpRemoteAddress;
      c.matchType = FWP_MATCH_EQUAL;
      c.conditionValue.type = FWP_V4_ADDR_MASK;
      c.conditionValue.v4AddrMask = &v4;
      conditions.push_back(c);
    } else if (plan.remote.family == wfp::AddressFamily::V6) {
      std::memcpy(v6.addr, plan.remote.v6_addr.data(), 16);
      v6.prefixLength = plan.remote.v6_prefix;
      FWPM_FILTER_CONDITION0 c{};
      c.fieldKey = wfp::kConditionIpRemoteAddress;
      c.matchType = FWP_MATCH_EQUAL;
      c.conditionValue.type = FWP_V6_ADDR_MASK;
      c.conditionValue.v6AddrMask = &v6;
      conditions.push_back(c);
    }
    if (plan.remote_port != 0) {
      FWPM_FILTER_CONDITION0 c{};
      c.fieldKey = wfp::kConditionIpRemotePort;
      c.matchType = FWP_MATCH_EQUAL;
      c.conditionValue.type = FWP_UINT16;
      c.conditionValue.uint16 = plan.remote_port;
      conditions.push_back(c);
    }
    if (plan.ip_protocol != 0) {
      FWPM_FILTER_CONDITION0 c{};
      c.fieldKey = wfp::kConditionIpProtocol;
      c.matchType = FWP_MATCH_EQUAL;
      c.conditionValue.type = FWP_UINT8;
      c.conditionValue.uint8 = plan.ip_protocol;
      conditions.push_back(c);
    }
    if (plan.direction != wfp::FlowDirection::Any) {
      FWPM_FILTER_CONDITION0 c{};
      c.fieldKey = wfp::kConditionDirection;
      c.matchType = FWP_MATCH_EQUAL;
      c.conditionValue.type = FWP_UINT32;
      c.conditionValue.uint32 =
          plan.direction == wfp::FlowDirection::Outbound ? wfp::kDirectionOutbound : wfp::kDirectionInbound;
      conditions.push_back(c);
    }
    filter.numFilterConditions = static_cast<UINT32>(conditions.size());
    filter.filterCondition = conditions.empty() ? nullptr : conditions.data();

    DWORD rc = FwpmFilterAdd0(engine_, &filter, nullptr, nullptr);
    if (rc != ERROR_SUCCESS)
      throw WinError(rc, "FwpmFilterAdd0",
                     std::string("adding the ") + wfp::LayerSlotName(plan.slot) + " filter of rule " +
                         std::to_string(plan.raw_context ? plan.raw_context : 0));
  }

  void DeleteFilterLocked(const GUID& key) {
    DWORD rc = FwpmFilterDeleteByKey0(engine_, &key);
    if (rc != ERROR_SUCCESS && rc != static_cast<DWORD>(FWP_E_FILTER_NOT_FOUND))
      throw WinError(rc, "FwpmFilterDeleteByKey0", "deleting a NetClamp filter");
  }

  void DeleteRuleFiltersLocked(uint32_t id) {
    for (int s = 0; s < wfp::kLayerSlotCount; s++)
      DeleteFilterLocked(ToGuid(wfp::FilterKey(id, static_cast<wfp::LayerSlot>(s))));
  }

  void RemoveRuleLocked(uint32_t id) {
    try {
      Transaction txn(engine_);
      DeleteRuleFiltersLocked(id);
      txn.Commit();
      if (driver_.connected()) driver_.RemoveAppLimit(id);
    } catch (const BackendError& e) {
      NoteFailureLocked(e);
      throw;
    }
    rules_.erase(id);
  }

  void AddInfrastructureLocked() {
    AppId self;
    bool exempt = !service_path_.empty();
    if (exempt) {
      DWORD rc = FwpmGetAppIdFromFileName0(win::Utf8ToWide(service_path_).c_str(), self.out());
      if (rc != ERROR_SUCCESS) exempt = false;  // no exemption is better than no engine
    }
    auto data = wfp::EncodeProviderData(0, 0, 0);
    for (const auto& f : wfp::PlanInfrastructure(exempt))
      AddFilterLocked(f, self.get(), data.data(), static_cast<UINT32>(data.size()));
  }

  void RemoveInfrastructureLocked() {
    for (int s = 0; s < wfp::kLayerSlotCount; s++) DeleteFilterLocked(ToGuid(wfp::FilterKey(0, static_cast<wfp::LayerSlot>(s))));
  }

  // Every filter of NetClamp's provider, layer by layer (an enum template needs a layer key).
  std::vector<OwnFilter> EnumerateOwnFiltersLocked() {
    std::vector<OwnFilter> out;
    GUID provider_key = kProviderKey;
    for (int s = 0; s < wfp::kLayerSlotCount; s++) {
      FWPM_FILTER_ENUM_TEMPLATE0 tmpl{};
      tmpl.providerKey = &provider_key;
      tmpl.layerKey = LayerKey(static_cast<wfp::LayerSlot>(s));
      tmpl.enumType = FWP_FILTER_ENUM_OVERLAPPING;
      tmpl.actionMask = 0xFFFFFFFF;
      HANDLE handle = nullptr;
      DWORD rc = FwpmFilterCreateEnumHandle0(engine_, &tmpl, &handle);
      if (rc != ERROR_SUCCESS) throw WinError(rc, "FwpmFilterCreateEnumHandle0", "listing NetClamp's filters");
      while (true) {
        FWPM_FILTER0** page = nullptr;
        UINT32 count = 0;
        rc = FwpmFilterEnum0(engine_, handle, 256, &page, &count);
        if (rc != ERROR_SUCCESS) {
          FwpmFilterDestroyEnumHandle0(engine_, handle);
          throw WinError(rc, "FwpmFilterEnum0", "listing NetClamp's filters");
        }
        for (UINT32 i = 0; i < count; i++) {
          const FWPM_FILTER0* f = page[i];
          OwnFilter own;
          own.key = f->filterKey;
          if (!wfp::DecodeFilterKey(FromGuid(f->filterKey), &own.rule_id, &own.slot)) {
            own.rule_id = 0xFFFFFFFF;  // ours by provider, but not a key we make: reported, then removed
          }
          own.has_data = wfp::DecodeProviderData(f->providerData.data, f->providerData.size, &own.data_rule_id,
                                                 &own.fingerprint, &own.filter_count);
          out.push_back(own);
        }
        if (page != nullptr) FwpmFreeMemory0(reinterpret_cast<void**>(&page));
        if (count < 256) break;
      }
      FwpmFilterDestroyEnumHandle0(engine_, handle);
    }
    return out;
  }

  // ---- the driver ----------------------------------------------------------------------------------

  void ConnectDriverLocked() {
    std::string why;
    bool shaping = false;
    try {
      shaping = driver_.Connect(&why);
    } catch (const BackendError& e) {
      why = std::string("the NetClamp driver refused the connection: ") + e.what();
    }
    if (shaping) {
      driver_.StartEvents([this](const nc_event& e, uint32_t lost) { OnDriverEvent(e, lost); },
                          [this](const std::string& gone) { OnDriverGone(gone); });
    }
    std::lock_guard<std::mutex> lock(status_mu_);
    status_.shaping = shaping;
    driver_detail_ = shaping ? "" : why;
  }

  void OnDriverEvent(const nc_event& e, uint32_t lost) {
    EngineEvent out;
    switch (e.type) {
      case NETCLAMP_EVENT_FLOW_ESTABLISHED: out.type = "flow_established"; break;
      case NETCLAMP_EVENT_FLOW_DELETED: out.type = "flow_deleted"; break;
      case NETCLAMP_EVENT_QUEUE_OVERFLOW: out.type = "queue_overflow"; break;
      case NETCLAMP_EVENT_BFE_STATE: out.type = "bfe_state"; break;
      default: out.type = "driver_event_" + std::to_string(e.type); break;
    }
    out.rule_id = e.rule_id;
    out.flow_id = e.flow_id;
    out.app_key = e.app_key;
    out.pid = e.process_id;
    out.value = e.value;
    out.timestamp_100ns = e.timestamp_100ns;
    out.lost = lost;
    EmitEvent(out);
    // The kernel sees BFE go before the service-status notification arrives: act on whichever is first.
    if (e.type == NETCLAMP_EVENT_BFE_STATE && e.value == 0 && wake_ != nullptr) {
      bfe_stopped_hint_ = true;
      SetEvent(wake_);
    }
  }

  void OnDriverGone(const std::string& why) {
    {
      std::lock_guard<std::mutex> lock(status_mu_);
      status_.shaping = false;
      driver_detail_ = why;
    }
    Emit("driver_down", why);
    if (wake_ != nullptr) SetEvent(wake_);  // the watcher tries to reconnect it
  }

  // ---- competing shapers ---------------------------------------------------------------------------

  std::vector<CompetingShaper> ScanCompetitorsLocked() {
    std::vector<CompetingShaper> out;
    std::map<std::string, std::string> providers;  // key text -> name (service)
    {
      HANDLE h = nullptr;
      DWORD rc = FwpmProviderCreateEnumHandle0(engine_, nullptr, &h);
      if (rc != ERROR_SUCCESS) throw WinError(rc, "FwpmProviderCreateEnumHandle0", "listing WFP providers");
      FWPM_PROVIDER0** page = nullptr;
      UINT32 count = 0;
      rc = FwpmProviderEnum0(engine_, h, 0xFFFFFFFF, &page, &count);
      if (rc == ERROR_SUCCESS) {
        for (UINT32 i = 0; i < count; i++) {
          std::string name = DisplayName(page[i]->displayData);
          if (page[i]->serviceName) name += " (service " + win::WideToUtf8(page[i]->serviceName) + ")";
          providers[wfp::GuidToString(FromGuid(page[i]->providerKey))] = name;
        }
        FwpmFreeMemory0(reinterpret_cast<void**>(&page));
      }
      FwpmProviderDestroyEnumHandle0(engine_, h);
      if (rc != ERROR_SUCCESS) throw WinError(rc, "FwpmProviderEnum0", "listing WFP providers");
    }
    auto owner = [&](const GUID* provider_key, const std::string& fallback) {
      if (provider_key == nullptr) return fallback;
      auto it = providers.find(wfp::GuidToString(FromGuid(*provider_key)));
      return it != providers.end() ? it->second : fallback;
    };

    const struct {
      const GUID* layer;
      const char* name;
    } shaping_layers[] = {
        {&wfp::kLayerOutboundTransportV4, "OUTBOUND_TRANSPORT_V4"}, {&wfp::kLayerOutboundTransportV6, "OUTBOUND_TRANSPORT_V6"},
        {&wfp::kLayerInboundTransportV4, "INBOUND_TRANSPORT_V4"},   {&wfp::kLayerInboundTransportV6, "INBOUND_TRANSPORT_V6"},
        {&wfp::kLayerStreamV4, "STREAM_V4"},                        {&wfp::kLayerStreamV6, "STREAM_V6"},
        {&wfp::kLayerDatagramDataV4, "DATAGRAM_DATA_V4"},           {&wfp::kLayerDatagramDataV6, "DATAGRAM_DATA_V6"},
        {&wfp::kLayerInboundIpPacketV4, "INBOUND_IPPACKET_V4"},     {&wfp::kLayerInboundIpPacketV6, "INBOUND_IPPACKET_V6"},
        {&wfp::kLayerOutboundIpPacketV4, "OUTBOUND_IPPACKET_V4"},   {&wfp::kLayerOutboundIpPacketV6, "OUTBOUND_IPPACKET_V6"},
        {&wfp::kLayerInboundMacFrame8023, "INBOUND_MAC_FRAME_802_3"},
        {&wfp::kLayerOutboundMacFrame8023, "OUTBOUND_MAC_FRAME_802_3"},
    };
    {
      HANDLE h = nullptr;
      DWORD rc = FwpmCalloutCreateEnumHandle0(engine_, nullptr, &h);
      if (rc != ERROR_SUCCESS) throw WinError(rc, "FwpmCalloutCreateEnumHandle0", "listing WFP callouts");
      FWPM_CALLOUT0** page = nullptr;
      UINT32 count = 0;
      rc = FwpmCalloutEnum0(engine_, h, 0xFFFFFFFF, &page, &count);
      if (rc == ERROR_SUCCESS) {
        for (UINT32 i = 0; i < count; i++) {
          const FWPM_CALLOUT0* c = page[i];
          if (c->providerKey != nullptr && SameGuid(*c->providerKey, kProviderKey)) continue;
          for (const auto& layer : shaping_layers) {
            if (!SameGuid(c->applicableLayer, *layer.layer)) continue;
            std::string callout_name = DisplayName(c->displayData);
            out.push_back({owner(c->providerKey, callout_name),
                           "WFP callout '" + callout_name + "' at " + layer.name + " (can delay or drop packets)"});
          }
        }
        FwpmFreeMemory0(reinterpret_cast<void**>(&page));
      }
      FwpmCalloutDestroyEnumHandle0(engine_, h);
      if (rc != ERROR_SUCCESS) throw WinError(rc, "FwpmCalloutEnum0", "listing WFP callouts");
    }
    {
      HANDLE h = nullptr;
      DWORD rc = FwpmSubLayerCreateEnumHandle0(engine_, nullptr, &h);
      if (rc != ERROR_SUCCESS) throw WinError(rc, "FwpmSubLayerCreateEnumHandle0", "listing WFP sublayers");
      FWPM_SUBLAYER0** page = nullptr;
      UINT32 count = 0;
      rc = FwpmSubLayerEnum0(engine_, h, 0xFFFFFFFF, &page, &count);
      if (rc == ERROR_SUCCESS) {
        for (UINT32 i = 0; i < count; i++) {
          const FWPM_SUBLAYER0* s = page[i];
          if (SameGuid(s->subLayerKey, kSublayerKey) || s->weight < kSublayerWeight) continue;
          std::string name = DisplayName(s->displayData);
          out.push_back({owner(s->providerKey, name), "WFP sublayer '" + name + "' with weight " +
                                                          std::to_string(s->weight) + " is evaluated before NetClamp's (" +
                                                          std::to_string(kSublayerWeight) + ")"});
        }
        FwpmFreeMemory0(reinterpret_cast<void**>(&page));
      }
      FwpmSubLayerDestroyEnumHandle0(engine_, h);
      if (rc != ERROR_SUCCESS) throw WinError(rc, "FwpmSubLayerEnum0", "listing WFP sublayers");
    }
    return out;
  }

  // ---- BFE watcher and recovery --------------------------------------------------------------------

  void StartWatcher() {
    if (watcher_.joinable()) return;
    stop_ = false;
    watcher_ = std::thread([this] { WatchLoop(); });
  }

  void StopWatcher() {
    if (!watcher_.joinable()) return;
    stop_ = true;
    SetEvent(wake_);
    watcher_.join();
  }

  struct NotifyContext {
    SERVICE_NOTIFYW notify{};
    std::atomic<DWORD> state{0};
    std::atomic<bool> fired{false};
  };

  static VOID CALLBACK OnServiceNotify(PVOID parameter) {
    auto* n = static_cast<SERVICE_NOTIFYW*>(parameter);
    auto* ctx = static_cast<NotifyContext*>(n->pContext);
    ctx->state = n->ServiceStatus.dwCurrentState;
    ctx->fired = true;
  }

  // Runs on its own thread: service-status notifications for BFE (delivered as APCs, hence the alertable
  // wait), wake-ups from calls that saw a session-gone error, and the reopen-with-backoff loop.
  void WatchLoop() {
    SC_HANDLE scm = OpenSCManagerW(nullptr, nullptr, SC_MANAGER_CONNECT);
    SC_HANDLE bfe = scm ? OpenServiceW(scm, L"BFE", SERVICE_QUERY_STATUS) : nullptr;
    NotifyContext ctx;
    bool armed = false;
    DWORD backoff_ms = 250;
    while (!stop_) {
      if (bfe != nullptr && !armed) {
        std::memset(&ctx.notify, 0, sizeof ctx.notify);
        ctx.notify.dwVersion = SERVICE_NOTIFY_STATUS_CHANGE;
        ctx.notify.pfnNotifyCallback = reinterpret_cast<PFN_SC_NOTIFY_CALLBACK>(&WinBackend::OnServiceNotify);
        ctx.notify.pContext = &ctx;
        ctx.fired = false;
        DWORD rc = NotifyServiceStatusChangeW(bfe, SERVICE_NOTIFY_STOPPED | SERVICE_NOTIFY_STOP_PENDING |
                                                       SERVICE_NOTIFY_RUNNING, &ctx.notify);
        armed = rc == ERROR_SUCCESS;
      }
      bool down;
      {
        std::lock_guard<std::mutex> lock(mu_);
        down = engine_ == nullptr;
      }
      DWORD wait_ms = down ? backoff_ms : (status_shaping() ? INFINITE : 5000);
      WaitForSingleObjectEx(wake_, wait_ms, TRUE);
      if (stop_) break;
      if (ctx.fired) {
        armed = false;  // one notification per registration
        ctx.fired = false;
        DWORD state = ctx.state;
        if (state == SERVICE_STOPPED || state == SERVICE_STOP_PENDING) {
          std::lock_guard<std::mutex> lock(mu_);
          if (engine_ != nullptr) LoseSessionLocked("the Base Filtering Engine (BFE) service stopped");
          continue;
        }
      }
      if (bfe_stopped_hint_.exchange(false)) {
        std::lock_guard<std::mutex> lock(mu_);
        if (engine_ != nullptr) LoseSessionLocked("the driver reported that BFE stopped");
        continue;
      }
      std::lock_guard<std::mutex> lock(mu_);
      if (engine_ == nullptr && !closing_) {
        if (TryRecoverLocked()) {
          backoff_ms = 250;
        } else {
          backoff_ms = std::min<DWORD>(backoff_ms * 2, 30000);
        }
      } else if (engine_ != nullptr && !driver_.connected()) {
        ConnectDriverLocked();  // the driver may have been (re)started: re-send every LIMIT
        if (driver_.connected()) ResendLimitsLocked();
      }
    }
    if (bfe) CloseServiceHandle(bfe);  // cancels a pending notification
    if (scm) CloseServiceHandle(scm);
    SleepEx(0, TRUE);  // drain an APC queued before the handle closed, while ctx is alive
  }

  bool status_shaping() {
    std::lock_guard<std::mutex> lock(status_mu_);
    return status_.shaping;
  }

  // Reopens the session and re-applies every rule we hold in one transaction: the state after recovery is
  // exactly rules_, whatever BFE kept or lost.
  bool TryRecoverLocked() {
    SetState("RECOVERING", "reopening the WFP session after BFE was lost");
    try {
      OpenSessionLocked();
      Transaction txn(engine_);
      for (const auto& f : EnumerateOwnFiltersLocked()) DeleteFilterLocked(f.key);
      AddInfrastructureLocked();
      std::vector<uint32_t> failed;
      for (const auto& [id, rule] : rules_) {
        wfp::RulePlan plan = wfp::PlanRule(rule);
        AppId app;
        FWP_BYTE_BLOB prefix{};
        std::vector<uint8_t> storage;
        if (plan.app != wfp::AppMatch::Any) {
          try {
            ResolveAppId(rule.app_path, plan.app == wfp::AppMatch::AppIdPrefix, &app, &prefix, &storage);
          } catch (const BackendError& e) {
            if (e.code() != "ENOENT") throw;
            failed.push_back(id);  // the file vanished meanwhile; reconcile reports it as missing
            continue;
          }
        }
        const FWP_BYTE_BLOB* blob = plan.app == wfp::AppMatch::AppIdPrefix ? &prefix : app.get();
        auto data = wfp::EncodeProviderData(rule.id, rule.fingerprint, static_cast<uint8_t>(plan.filters.size()));
        for (const auto& f : plan.filters) AddFilterLocked(f, blob, data.data(), static_cast<UINT32>(data.size()));
      }
      txn.Commit();
      for (uint32_t id : failed) rules_.erase(id);
    } catch (const BackendError& e) {
      if (engine_ != nullptr) {
        FwpmEngineClose0(engine_);
        engine_ = nullptr;
      }
      SetState("DOWN", std::string("BFE is not back yet: ") + e.what());
      return false;
    }
    if (!driver_.connected()) ConnectDriverLocked();
    if (driver_.connected()) ResendLimitsLocked();
    {
      std::lock_guard<std::mutex> lock(status_mu_);
      status_.restarts++;
    }
    SetState("OPEN", "");
    Emit("engine_recovered", "the WFP session was reopened and every rule re-applied");
    return true;
  }

  void ResendLimitsLocked() {
    for (const auto& [id, rule] : rules_) {
      if (rule.action != Action::Limit) continue;
      try {
        AppId app;
        uint64_t key = 0;
        if (!rule.app_path.empty() && rule.match_mode == MatchMode::ExactPath &&
            FwpmGetAppIdFromFileName0(win::Utf8ToWide(rule.app_path).c_str(), app.out()) == ERROR_SUCCESS)
          key = app.Key();
        driver_.SetAppLimit(id, wfp::DriverScope(rule.scope), key, wfp::ClampRate(rule.rate_up),
                            wfp::ClampRate(rule.rate_down));
      } catch (const BackendError& e) {
        Emit("rule_sync_error", "rule " + std::to_string(id) + ": " + e.what());
      }
    }
  }

  // ---- status and events ---------------------------------------------------------------------------

  void SetState(const std::string& state, const std::string& detail) {
    std::lock_guard<std::mutex> lock(status_mu_);
    status_.state = state;
    status_.filtering = state == "OPEN";
    if (state != "OPEN") status_.shaping = status_.shaping && engine_ != nullptr;
    status_.detail = detail;
    if (state == "OPEN" && !status_.shaping && !driver_detail_.empty()) status_.detail = driver_detail_;
  }

  void Emit(const std::string& type, const std::string& detail) {
    EngineEvent e;
    e.type = type;
    e.detail = detail;
    EmitEvent(e);
  }

  void EmitEvent(const EngineEvent& e) {
    std::lock_guard<std::mutex> lock(sink_mu_);
    if (sink_) sink_(e);
  }

  std::mutex mu_;  // engine_, rules_, driver_ calls; the recovery thread takes it too
  HANDLE engine_ = nullptr;
  std::map<uint32_t, RuleSpec> rules_;  // what we applied: re-added after BFE loss
  std::string service_path_;
  win::DriverClient driver_;

  std::mutex status_mu_;
  Status status_;
  std::string driver_detail_;

  std::mutex sink_mu_;
  EventSink sink_;

  std::thread watcher_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> bfe_stopped_hint_{false};
  bool closing_ = false;
  HANDLE wake_ = nullptr;
};

}  // namespace

std::unique_ptr<Backend> CreateBackend() { return std::make_unique<WinBackend>(); }

}  // namespace netclamp
