// Unit tests of binding/src/win/wfp_plan.cc, the portable half of the WFP backend. Built and run on Linux
// by test/win/wfp-plan.test.ts. Prints "N passed, M failed" last; exits non-zero on any failure.
#include <cstdio>
#include <cstring>
#include <random>
#include <set>
#include <string>

#include "../../binding/src/win/smbios.h"
#include "../../binding/src/win/wfp_plan.h"
#include "../../binding/src/win/win_errors.h"

using namespace netclamp;
using namespace netclamp::wfp;

static int g_passed = 0, g_failed = 0;
#define CHECK(cond)                                                        \
  do {                                                                     \
    if (cond) {                                                            \
      g_passed++;                                                          \
    } else {                                                               \
      g_failed++;                                                          \
      std::printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);          \
    }                                                                      \
  } while (0)

template <typename F>
static std::string ErrorCodeOf(F f) {
  try {
    f();
  } catch (const BackendError& e) {
    return e.code();
  }
  return "";
}

static RuleSpec Rule(uint32_t id, Action action, int32_t priority = 0) {
  RuleSpec r;
  r.id = id;
  r.action = action;
  r.priority = priority;
  r.app_path = "C:\\Program Files\\App\\app.exe";
  r.fingerprint = 0x0123456789abcdefull;
  if (action == Action::Limit) r.rate_down = 1000;
  return r;
}

static void TestWeights() {
  // Priority decides first, whatever the action and id.
  CHECK(FilterWeight(11, Action::Allow, 2000000000) > FilterWeight(10, Action::Block, 1));
  CHECK(FilterWeight(0, Action::Allow, 1) > FilterWeight(-1, Action::Block, 1));
  // On a tie: BLOCK > LIMIT > ALLOW, then the lower id.
  CHECK(FilterWeight(5, Action::Block, 900) > FilterWeight(5, Action::Limit, 1));
  CHECK(FilterWeight(5, Action::Limit, 900) > FilterWeight(5, Action::Allow, 1));
  CHECK(FilterWeight(5, Action::Allow, 1) > FilterWeight(5, Action::Allow, 2));
  CHECK(FilterWeight(5, Action::Block, 0x7FFFFFFE) > FilterWeight(5, Action::Block, 0x7FFFFFFF));
  // Extremes stay ordered and below the service exemption.
  CHECK(FilterWeight((1 << 30) - 1, Action::Block, 1) < kExemptionWeight);
  CHECK(FilterWeight(-(1 << 30), Action::Allow, 0x7FFFFFFF) == 0);  // the lowest weight, still valid
  CHECK(ErrorCodeOf([] { FilterWeight(1 << 30, Action::Allow, 1); }) == "ERANGE");
  CHECK(ErrorCodeOf([] { FilterWeight(0, Action::Allow, 0); }) == "EINVAL");
  // A random sample agrees with the contract's comparison, pairwise, and weights are distinct.
  std::mt19937_64 rng(7);
  int disagreements = 0;
  std::set<uint64_t> seen;
  for (int i = 0; i < 200000; i++) {
    int32_t pa = static_cast<int32_t>(rng() % 20001) - 10000, pb = static_cast<int32_t>(rng() % 20001) - 10000;
    if (rng() % 2) pb = pa;
    Action aa = static_cast<Action>(rng() % 3), ab = static_cast<Action>(rng() % 3);
    uint32_t ia = 1 + rng() % 0x7FFFFFFF, ib = 1 + rng() % 0x7FFFFFFF;
    if (ia == ib) continue;
    auto rank = [](Action a) { return a == Action::Block ? 2 : a == Action::Limit ? 1 : 0; };
    bool a_wins = pa != pb ? pa > pb : rank(aa) != rank(ab) ? rank(aa) > rank(ab) : ia < ib;
    bool weight_says = FilterWeight(pa, aa, ia) > FilterWeight(pb, ab, ib);
    if (a_wins != weight_says) disagreements++;
    if (i < 1000) seen.insert(FilterWeight(pa, aa, ia));
  }
  CHECK(disagreements == 0);
  CHECK(seen.size() > 990);
}

static void TestKeys() {
  std::set<std::string> keys;
  for (uint32_t id : {0u, 1u, 2u, 255u, 256u, 65536u, 0x7FFFFFFFu}) {
    for (int s = 0; s < kLayerSlotCount; s++) {
      nc_guid k = FilterKey(id, static_cast<LayerSlot>(s));
      keys.insert(GuidToString(k));
      uint32_t back_id = 99;
      LayerSlot back_slot = LayerSlot::ConnectV4;
      CHECK(DecodeFilterKey(k, &back_id, &back_slot));
      CHECK(back_id == id && static_cast<int>(back_slot) == s);
    }
  }
  CHECK(keys.size() == 7u * kLayerSlotCount);
  // Someone else's GUIDs are not ours.
  nc_guid provider = NETCLAMP_PROVIDER_GUID_INIT;
  uint32_t id;
  LayerSlot slot;
  CHECK(!DecodeFilterKey(provider, &id, &slot));
  nc_guid bad_slot = FilterKey(5, LayerSlot::ConnectV4);
  bad_slot.data4[2] = kLayerSlotCount;
  CHECK(!DecodeFilterKey(bad_slot, &id, &slot));
  nc_guid k = FilterKey(0x01020304, LayerSlot::RecvAcceptV6);
  CHECK(GuidToString(k) == "4e43f17e-5c1a-4d2b-9a31-030101020304");
}

static void TestProviderData() {
  auto blob = EncodeProviderData(0x7FFFFFFF, 0xfedcba9876543210ull, 6);
  uint32_t id = 0;
  uint64_t fp = 0;
  uint8_t n = 0;
  CHECK(DecodeProviderData(blob.data(), blob.size(), &id, &fp, &n));
  CHECK(id == 0x7FFFFFFF && fp == 0xfedcba9876543210ull && n == 6);
  CHECK(!DecodeProviderData(blob.data(), blob.size() - 1, &id, &fp, &n));
  CHECK(!DecodeProviderData(nullptr, 0, &id, &fp, &n));
  auto bad = blob;
  bad[0] = 'X';
  CHECK(!DecodeProviderData(bad.data(), bad.size(), &id, &fp, &n));
  bad = blob;
  bad[19] = 1;
  CHECK(!DecodeProviderData(bad.data(), bad.size(), &id, &fp, &n));
}

static void TestAddresses() {
  RemoteAddress a = ParseRemoteAddress("");
  CHECK(a.family == AddressFamily::Any);
  a = ParseRemoteAddress("10.1.2.3");
  CHECK(a.family == AddressFamily::V4 && a.v4_addr == 0x0A010203u && a.v4_mask == 0xFFFFFFFFu);
  a = ParseRemoteAddress("10.1.2.3/8");
  CHECK(a.v4_addr == 0x0A000000u && a.v4_mask == 0xFF000000u);
  a = ParseRemoteAddress("192.168.0.0/0");
  CHECK(a.v4_addr == 0 && a.v4_mask == 0);
  a = ParseRemoteAddress("172.16.5.4/12");
  CHECK(a.v4_addr == 0xAC100000u && a.v4_mask == 0xFFF00000u);
  a = ParseRemoteAddress("::1");
  CHECK(a.family == AddressFamily::V6 && a.v6_prefix == 128 && a.v6_addr[15] == 1 && a.v6_addr[0] == 0);
  a = ParseRemoteAddress("2001:db8:ffff::1/33");
  CHECK(a.v6_prefix == 33 && a.v6_addr[0] == 0x20 && a.v6_addr[1] == 0x01 && a.v6_addr[2] == 0x0d &&
        a.v6_addr[3] == 0xb8 && a.v6_addr[4] == 0x80 && a.v6_addr[5] == 0 && a.v6_addr[15] == 0);
  a = ParseRemoteAddress("fe80:0:0:0:0:0:0:abcd");
  CHECK(a.v6_addr[0] == 0xfe && a.v6_addr[1] == 0x80 && a.v6_addr[14] == 0xab && a.v6_addr[15] == 0xcd);
  for (const char* bad : {"10.1.2", "10.1.2.3.4", "256.1.1.1", "10.1.2.3/33", "10.1.2.3/", "01.1.1.1", "1::2::3",
                          "1:2:3:4:5:6:7:8:9", "::1/129", "g::1", "10.0.0.0/-1", "host.example", "1:2:3:4:5:6:7"}) {
    std::string code = ErrorCodeOf([&] { ParseRemoteAddress(bad); });
    if (code != "EINVAL") std::printf("  accepted bad address %s\n", bad);
    CHECK(code == "EINVAL");
  }
}

static int CountSlot(const RulePlan& p, LayerSlot s) {
  int n = 0;
  for (const auto& f : p.filters) n += f.slot == s;
  return n;
}

static void TestPlans() {
  // BLOCK, both directions, any address: hard blocks at the four auth layers, nothing at flow-established.
  RulePlan p = PlanRule(Rule(7, Action::Block, 100));
  CHECK(p.filters.size() == 4);
  for (const auto& f : p.filters) {
    CHECK(f.action == FilterAction::Block && f.clear_action_right && f.app == AppMatch::ExactAppId);
    CHECK(f.weight == FilterWeight(100, Action::Block, 7));
    uint32_t id;
    LayerSlot slot;
    CHECK(DecodeFilterKey(f.key, &id, &slot) && id == 7 && slot == f.slot);
  }
  CHECK(!p.needs_driver_limit);

  // LIMIT outbound to an IPv4 prefix over TCP port 443: permit at CONNECT_V4, callout at FLOW_ESTABLISHED_V4.
  RuleSpec r = Rule(42, Action::Limit, 3);
  r.direction = Direction::Outbound;
  r.protocol = Protocol::Tcp;
  r.remote_address = "203.0.113.0/24";
  r.remote_port = 443;
  p = PlanRule(r);
  CHECK(p.needs_driver_limit);
  CHECK(p.filters.size() == 2);
  CHECK(CountSlot(p, LayerSlot::ConnectV4) == 1 && CountSlot(p, LayerSlot::FlowEstablishedV4) == 1);
  for (const auto& f : p.filters) {
    CHECK(f.ip_protocol == 6 && f.remote_port == 443 && f.remote.v4_addr == 0xCB007100u &&
          f.remote.v4_mask == 0xFFFFFF00u);
    if (f.slot == LayerSlot::FlowEstablishedV4) {
      nc_guid callout = NETCLAMP_CALLOUT_FLOW_ESTABLISHED_V4_GUID_INIT;
      CHECK(f.action == FilterAction::Callout && GuidEqual(f.callout_key, callout));
      CHECK(f.permit_if_callout_unregistered && f.raw_context == 42 && !f.clear_action_right);
      CHECK(f.direction == FlowDirection::Outbound);
    } else {
      CHECK(f.action == FilterAction::Permit && f.direction == FlowDirection::Any);
    }
  }

  // ALLOW inbound ICMP on IPv6 only, every app: ICMPv6 protocol number, a flow-established permit.
  r = Rule(3, Action::Allow);
  r.app_path = "";
  r.direction = Direction::Inbound;
  r.protocol = Protocol::Icmp;
  r.remote_address = "2001:db8::/32";
  p = PlanRule(r);
  CHECK(p.filters.size() == 2);
  CHECK(CountSlot(p, LayerSlot::RecvAcceptV6) == 1 && CountSlot(p, LayerSlot::FlowEstablishedV6) == 1);
  for (const auto& f : p.filters) CHECK(f.ip_protocol == 58 && f.app == AppMatch::Any && f.action == FilterAction::Permit);

  // ICMP over v4 and v6 layers: 1 and 58.
  r = Rule(4, Action::Block);
  r.protocol = Protocol::Icmp;
  p = PlanRule(r);
  for (const auto& f : p.filters) CHECK(f.ip_protocol == (IsV6(f.slot) ? 58 : 1));

  // DIRECTORY matching is an app id prefix; FILENAME is refused with a stable code.
  r = Rule(5, Action::Allow);
  r.match_mode = MatchMode::Directory;
  CHECK(PlanRule(r).app == AppMatch::AppIdPrefix);
  r.match_mode = MatchMode::Filename;
  CHECK(ErrorCodeOf([&] { PlanRule(r); }) == "UNSUPPORTED");
  // A port needs TCP or UDP; a LIMIT needs a usable rate.
  r = Rule(6, Action::Block);
  r.remote_port = 53;
  CHECK(ErrorCodeOf([&] { PlanRule(r); }) == "EINVAL");
  r = Rule(8, Action::Limit);
  r.rate_down = NETCLAMP_RATE_MAX_BYTES_PER_SEC + 1;
  CHECK(ErrorCodeOf([&] { PlanRule(r); }) == "EINVAL");
  r.rate_up = NETCLAMP_RATE_MAX_BYTES_PER_SEC;
  CHECK(PlanRule(r).needs_driver_limit);
  CHECK(ClampRate(NETCLAMP_RATE_MAX_BYTES_PER_SEC + 1) == 0 && ClampRate(5) == 5);

  // Every filter key of every plan is unique across rules and slots.
  std::set<std::string> all;
  size_t total = 0;
  for (uint32_t id = 1; id <= 50; id++) {
    RuleSpec x = Rule(id, static_cast<Action>(id % 3), static_cast<int32_t>(id % 4));
    for (const auto& f : PlanRule(x).filters) {
      all.insert(GuidToString(f.key));
      total++;
    }
  }
  CHECK(all.size() == total);

  // Infrastructure: the exemption above every rule, and transport callouts that fail open.
  auto infra = PlanInfrastructure(true);
  CHECK(infra.size() == 10);
  int callouts = 0;
  for (const auto& f : infra) {
    uint32_t id;
    LayerSlot slot;
    CHECK(DecodeFilterKey(f.key, &id, &slot) && id == 0);
    if (f.action == FilterAction::Callout) {
      callouts++;
      CHECK(f.permit_if_callout_unregistered);
    } else {
      CHECK(f.weight == kExemptionWeight && f.app == AppMatch::ExactAppId);
    }
  }
  CHECK(callouts == 4);
  CHECK(PlanInfrastructure(false).size() == 4);
}

static void TestErrorsAndSmbios() {
  using netclamp::win::ErrorCodeName;
  CHECK(ErrorCodeName(2) == "ENOENT" && ErrorCodeName(5) == "EPERM");
  CHECK(ErrorCodeName(1722) == "ENGINE_DOWN" && ErrorCodeName(0x80320010u) == "ENGINE_DOWN");
  CHECK(ErrorCodeName(0x80320009u) == "FWP_E_ALREADY_EXISTS" && ErrorCodeName(0x8032002Fu) == "FWP_E_CONTEXT_INCOMPATIBLE_WITH_CALLOUT");
  CHECK(ErrorCodeName(0x803200FFu) == "HRESULT_0x803200FF" && ErrorCodeName(1234) == "WIN32_1234");
  CHECK(netclamp::win::IsSessionGone(1726) && netclamp::win::IsSessionGone(1753) && !netclamp::win::IsSessionGone(5));
  BackendError e = netclamp::win::WinError(3, "FwpmGetAppIdFromFileName0", "resolving x");
  CHECK(e.code() == "ENOENT" && e.err() == 3 && e.syscall() == "FwpmGetAppIdFromFileName0");

  // RSMB blob: header (v3.4, length), a type 0 with a string, a type 1 with a UUID, end-of-table.
  std::vector<uint8_t> raw = {0, 3, 4, 0, 0, 0, 0, 0};
  std::vector<uint8_t> table = {0, 4, 0, 0, 'B', 'I', 'O', 'S', 0, 0};
  std::vector<uint8_t> t1 = {1, 0x1b, 1, 0, 1, 2, 3, 4};
  const uint8_t uuid[16] = {0x33, 0x22, 0x11, 0x00, 0x55, 0x44, 0x77, 0x66, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff};
  t1.insert(t1.end(), uuid, uuid + 16);
  t1.push_back(6);
  t1.push_back(0);
  t1.push_back(0);
  t1.push_back(0);
  table.insert(table.end(), t1.begin(), t1.end());
  std::vector<uint8_t> end = {127, 4, 2, 0, 0, 0};
  table.insert(table.end(), end.begin(), end.end());
  raw[4] = static_cast<uint8_t>(table.size());
  raw.insert(raw.end(), table.begin(), table.end());
  CHECK(netclamp::win::SmbiosSystemUuid(raw.data(), raw.size()) == "00112233-4455-6677-8899-aabbccddeeff");
  raw[1] = 2;  // SMBIOS 2.4: big-endian fields
  raw[2] = 4;
  CHECK(netclamp::win::SmbiosSystemUuid(raw.data(), raw.size()) == "33221100-5544-7766-8899-aabbccddeeff");
  // Every truncation is refused without reading past the end (ASan watches).
  for (size_t n = 0; n < raw.size() - 8; n++) {
    std::vector<uint8_t> cut(raw.begin(), raw.begin() + static_cast<long>(n));
    (void)netclamp::win::SmbiosSystemUuid(cut.data(), cut.size());
  }
  std::vector<uint8_t> zeros = raw;
  for (int i = 0; i < 16; i++) zeros[8 + 10 + 8 + i] = 0;
  CHECK(netclamp::win::SmbiosSystemUuid(zeros.data(), zeros.size()) == "");
}

int main() {
  TestErrorsAndSmbios();
  TestWeights();
  TestKeys();
  TestProviderData();
  TestAddresses();
  TestPlans();
  std::printf("%d passed, %d failed\n", g_passed, g_failed);
  return g_failed == 0 ? 0 : 1;
}
