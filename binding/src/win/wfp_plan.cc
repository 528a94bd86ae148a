// Portable rule -> WFP filter-set planning. See wfp_plan.h; no Windows header may be included here.
#include "wfp_plan.h"

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace netclamp {
namespace wfp {
namespace {

constexpr uint8_t kProtoIcmp = 1, kProtoTcp = 6, kProtoUdp = 17, kProtoIcmpV6 = 58;

// Namespace of NetClamp's filter keys: data1..data3 and data4[0..1] fixed; data4[2] slot, data4[3] key
// format version, data4[4..7] rule id (big-endian, so keys sort by id in tools that show them).
constexpr nc_guid kFilterKeyNamespace = {0x4e43f17e, 0x5c1a, 0x4d2b, {0x9a, 0x31, 0, 1, 0, 0, 0, 0}};

[[noreturn]] void Invalid(const std::string& message) { throw BackendError("EINVAL", message, EINVAL); }

bool ParseDecimal(const std::string& s, unsigned max, unsigned* out) {
  if (s.empty() || s.size() > 3 || s.find_first_not_of("0123456789") != std::string::npos) return false;
  unsigned v = static_cast<unsigned>(std::stoul(s));
  if (v > max || (s.size() > 1 && s[0] == '0')) return false;
  *out = v;
  return true;
}

bool ParseV4(const std::string& s, uint32_t* out) {
  uint32_t value = 0;
  size_t start = 0;
  for (int part = 0; part < 4; part++) {
    size_t dot = s.find('.', start);
    if ((part < 3) != (dot != std::string::npos)) return false;
    unsigned octet;
    if (!ParseDecimal(s.substr(start, part < 3 ? dot - start : std::string::npos), 255, &octet)) return false;
    value = (value << 8) | octet;
    start = dot + 1;
  }
  *out = value;
  return true;
}

bool ParseHextet(const std::string& s, uint16_t* out) {
  if (s.empty() || s.size() > 4 || s.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos) return false;
  *out = static_cast<uint16_t>(std::stoul(s, nullptr, 16));
  return true;
}

bool SplitHextets(const std::string& s, std::vector<uint16_t>* out) {
  out->clear();
  if (s.empty()) return true;
  size_t start = 0;
  while (true) {
    size_t colon = s.find(':', start);
    uint16_t h;
    if (!ParseHextet(s.substr(start, colon == std::string::npos ? std::string::npos : colon - start), &h))
      return false;
    out->push_back(h);
    if (colon == std::string::npos) return true;
    start = colon + 1;
  }
}

bool ParseV6(const std::string& s, std::array<uint8_t, 16>* out) {
  std::vector<uint16_t> head, tail;
  size_t gap = s.find("::");
  if (gap != std::string::npos) {
    if (s.find("::", gap + 1) != std::string::npos) return false;
    if (!SplitHextets(s.substr(0, gap), &head) || !SplitHextets(s.substr(gap + 2), &tail)) return false;
    if (head.size() + tail.size() > 7) return false;
  } else {
    if (!SplitHextets(s, &head) || head.size() != 8) return false;
  }
  std::vector<uint16_t> all = head;
  all.resize(8 - tail.size(), 0);
  all.insert(all.end(), tail.begin(), tail.end());
  for (int i = 0; i < 8; i++) {
    (*out)[2 * i] = static_cast<uint8_t>(all[i] >> 8);
    (*out)[2 * i + 1] = static_cast<uint8_t>(all[i] & 0xff);
  }
  return true;
}

uint8_t ActionRank(Action a) {
  switch (a) {
    case Action::Block: return 2;
    case Action::Limit: return 1;
    default: return 0;
  }
}

uint8_t ProtocolFor(Protocol p, bool v6) {
  switch (p) {
    case Protocol::Tcp: return kProtoTcp;
    case Protocol::Udp: return kProtoUdp;
    case Protocol::Icmp: return v6 ? kProtoIcmpV6 : kProtoIcmp;
    default: return 0;
  }
}

nc_guid CalloutFor(LayerSlot slot) {
  switch (slot) {
    case LayerSlot::FlowEstablishedV4: return NETCLAMP_CALLOUT_FLOW_ESTABLISHED_V4_GUID_INIT;
    case LayerSlot::FlowEstablishedV6: return NETCLAMP_CALLOUT_FLOW_ESTABLISHED_V6_GUID_INIT;
    case LayerSlot::OutboundTransportV4: return NETCLAMP_CALLOUT_OUTBOUND_TRANSPORT_V4_GUID_INIT;
    case LayerSlot::OutboundTransportV6: return NETCLAMP_CALLOUT_OUTBOUND_TRANSPORT_V6_GUID_INIT;
    case LayerSlot::InboundTransportV4: return NETCLAMP_CALLOUT_INBOUND_TRANSPORT_V4_GUID_INIT;
    case LayerSlot::InboundTransportV6: return NETCLAMP_CALLOUT_INBOUND_TRANSPORT_V6_GUID_INIT;
    default: return nc_guid{};
  }
}

}  // namespace

bool IsV6(LayerSlot slot) { return (static_cast<int>(slot) & 1) != 0; }

const char* LayerSlotName(LayerSlot slot) {
  static const char* const kNames[kLayerSlotCount] = {
      "ALE_AUTH_CONNECT_V4",     "ALE_AUTH_CONNECT_V6",     "ALE_AUTH_RECV_ACCEPT_V4", "ALE_AUTH_RECV_ACCEPT_V6",
      "ALE_FLOW_ESTABLISHED_V4", "ALE_FLOW_ESTABLISHED_V6", "OUTBOUND_TRANSPORT_V4",   "OUTBOUND_TRANSPORT_V6",
      "INBOUND_TRANSPORT_V4",    "INBOUND_TRANSPORT_V6"};
  int i = static_cast<int>(slot);
  return i >= 0 && i < kLayerSlotCount ? kNames[i] : "?";
}

RemoteAddress ParseRemoteAddress(const std::string& text) {
  RemoteAddress r;
  if (text.empty()) return r;
  std::string addr = text;
  bool has_prefix = false;
  unsigned prefix = 0;
  size_t slash = text.find('/');
  if (slash != std::string::npos) {
    addr = text.substr(0, slash);
    has_prefix = true;
    bool v6 = addr.find(':') != std::string::npos;
    if (!ParseDecimal(text.substr(slash + 1), v6 ? 128 : 32, &prefix))
      Invalid("remoteAddress '" + text + "' has an invalid prefix length");
  }
  if (addr.find(':') == std::string::npos) {
    if (!ParseV4(addr, &r.v4_addr)) Invalid("remoteAddress '" + text + "' is not an IPv4 address");
    r.family = AddressFamily::V4;
    if (!has_prefix) prefix = 32;
    r.v4_mask = prefix == 0 ? 0 : (0xffffffffu << (32 - prefix));
    r.v4_addr &= r.v4_mask;  // WFP compares addr & mask: clear host bits so "10.1.2.3/8" means 10/8
  } else {
    if (!ParseV6(addr, &r.v6_addr)) Invalid("remoteAddress '" + text + "' is not an IPv6 address");
    r.family = AddressFamily::V6;
    if (!has_prefix) prefix = 128;
    r.v6_prefix = static_cast<uint8_t>(prefix);
    for (unsigned bit = prefix; bit < 128; bit++) r.v6_addr[bit / 8] &= static_cast<uint8_t>(~(0x80u >> (bit % 8)));
  }
  return r;
}

uint64_t FilterWeight(int32_t priority, Action action, uint32_t rule_id) {
  constexpr int64_t kBias = int64_t{1} << 30;
  if (priority < -kBias || priority >= kBias)
    throw BackendError("ERANGE", "priority " + std::to_string(priority) + " is outside the range WFP weights can order",
                       ERANGE);
  if (rule_id == 0 || rule_id > NETCLAMP_RULE_ID_MAX)
    throw BackendError("EINVAL", "rule id " + std::to_string(rule_id) + " is out of range", EINVAL);
  uint64_t biased = static_cast<uint64_t>(static_cast<int64_t>(priority) + kBias);  // 31 bits
  return (biased << 33) | (uint64_t{ActionRank(action)} << 31) | (uint64_t{NETCLAMP_RULE_ID_MAX} - rule_id);
}

nc_guid FilterKey(uint32_t rule_id, LayerSlot slot) {
  nc_guid g = kFilterKeyNamespace;
  g.data4[2] = static_cast<uint8_t>(slot);
  g.data4[4] = static_cast<uint8_t>(rule_id >> 24);
  g.data4[5] = static_cast<uint8_t>(rule_id >> 16);
  g.data4[6] = static_cast<uint8_t>(rule_id >> 8);
  g.data4[7] = static_cast<uint8_t>(rule_id);
  return g;
}

bool DecodeFilterKey(const nc_guid& key, uint32_t* rule_id, LayerSlot* slot) {
  const nc_guid& ns = kFilterKeyNamespace;
  if (key.data1 != ns.data1 || key.data2 != ns.data2 || key.data3 != ns.data3 || key.data4[0] != ns.data4[0] ||
      key.data4[1] != ns.data4[1] || key.data4[3] != ns.data4[3] || key.data4[2] >= kLayerSlotCount)
    return false;
  *slot = static_cast<LayerSlot>(key.data4[2]);
  *rule_id = (uint32_t{key.data4[4]} << 24) | (uint32_t{key.data4[5]} << 16) | (uint32_t{key.data4[6]} << 8) |
             key.data4[7];
  return true;
}

std::array<uint8_t, kProviderDataSize> EncodeProviderData(uint32_t rule_id, uint64_t fingerprint, uint8_t filter_count) {
  std::array<uint8_t, kProviderDataSize> out{};
  std::memcpy(out.data(), "NCF1", 4);
  for (int i = 0; i < 4; i++) out[4 + i] = static_cast<uint8_t>(rule_id >> (8 * i));
  for (int i = 0; i < 8; i++) out[8 + i] = static_cast<uint8_t>(fingerprint >> (8 * i));
  out[16] = filter_count;
  return out;
}

bool DecodeProviderData(const uint8_t* data, size_t size, uint32_t* rule_id, uint64_t* fingerprint,
                        uint8_t* filter_count) {
  if (data == nullptr || size != kProviderDataSize || std::memcmp(data, "NCF1", 4) != 0) return false;
  if (data[17] != 0 || data[18] != 0 || data[19] != 0) return false;
  uint32_t id = 0;
  uint64_t fp = 0;
  for (int i = 0; i < 4; i++) id |= uint32_t{data[4 + i]} << (8 * i);
  for (int i = 0; i < 8; i++) fp |= uint64_t{data[8 + i]} << (8 * i);
  *rule_id = id;
  *fingerprint = fp;
  *filter_count = data[16];
  return true;
}

uint64_t ClampRate(uint64_t bytes_per_sec) {
  return bytes_per_sec > NETCLAMP_RATE_MAX_BYTES_PER_SEC ? 0 : bytes_per_sec;
}

uint32_t DriverScope(LimitScope scope) {
  switch (scope) {
    case LimitScope::PerProcess: return NETCLAMP_SCOPE_PER_PROCESS;
    case LimitScope::PerConnection: return NETCLAMP_SCOPE_PER_CONNECTION;
    default: return NETCLAMP_SCOPE_PER_APP;
  }
}

RulePlan PlanRule(const RuleSpec& rule) {
  RulePlan plan;
  plan.rule_id = rule.id;
  const uint64_t weight = FilterWeight(rule.priority, rule.action, rule.id);
  const RemoteAddress remote = ParseRemoteAddress(rule.remote_address);
  if (rule.remote_port != 0 && rule.protocol != Protocol::Tcp && rule.protocol != Protocol::Udp)
    Invalid("remotePort needs protocol TCP or UDP (WFP reads the ICMP code from the same field)");

  if (!rule.app_path.empty()) {
    switch (rule.match_mode) {
      case MatchMode::ExactPath: plan.app = AppMatch::ExactAppId; break;
      case MatchMode::Directory: plan.app = AppMatch::AppIdPrefix; break;
      case MatchMode::Filename:
        throw BackendError("UNSUPPORTED",
                           "match mode FILENAME is not supported on Windows: WFP matches an app id exactly or by "
                           "prefix, never by file name; use EXACT_PATH or DIRECTORY");
    }
  }
  if (rule.action == Action::Limit) {
    plan.needs_driver_limit = true;
    if (ClampRate(rule.rate_up) == 0 && ClampRate(rule.rate_down) == 0)
      Invalid("a LIMIT rule needs a rate between 1 and " + std::to_string(NETCLAMP_RATE_MAX_BYTES_PER_SEC) +
              " bytes/s in at least one direction");
  }

  auto add = [&](LayerSlot slot, FilterAction action) {
    bool v6 = IsV6(slot);
    if (remote.family == AddressFamily::V4 && v6) return;
    if (remote.family == AddressFamily::V6 && !v6) return;
    FilterPlan f;
    f.slot = slot;
    f.action = action;
    f.key = FilterKey(rule.id, slot);
    f.weight = weight;
    f.app = plan.app;
    f.ip_protocol = ProtocolFor(rule.protocol, v6);
    f.remote_port = rule.remote_port;
    f.remote = remote;
    if (action == FilterAction::Block) f.clear_action_right = true;
    if (action == FilterAction::Callout) {
      f.callout_key = CalloutFor(slot);
      f.permit_if_callout_unregistered = true;  // fail open for shaping: no driver, no delay
      f.raw_context = rule.id;
    }
    bool flow_layer = slot == LayerSlot::FlowEstablishedV4 || slot == LayerSlot::FlowEstablishedV6;
    if (flow_layer && rule.direction != Direction::Both)
      f.direction = rule.direction == Direction::Outbound ? FlowDirection::Outbound : FlowDirection::Inbound;
    plan.filters.push_back(f);
  };

  const bool outbound = rule.direction != Direction::Inbound;
  const bool inbound = rule.direction != Direction::Outbound;
  const FilterAction auth = rule.action == Action::Block ? FilterAction::Block : FilterAction::Permit;
  if (outbound) {
    add(LayerSlot::ConnectV4, auth);
    add(LayerSlot::ConnectV6, auth);
  }
  if (inbound) {
    add(LayerSlot::RecvAcceptV4, auth);
    add(LayerSlot::RecvAcceptV6, auth);
  }
  // A blocked flow never establishes. ALLOW gets a permit here too: it shadows lower-weight LIMIT
  // callouts, so a higher-priority ALLOW really exempts a flow from a LIMIT, as the contract's order says.
  if (rule.action != Action::Block) {
    FilterAction flow = rule.action == Action::Limit ? FilterAction::Callout : FilterAction::Permit;
    add(LayerSlot::FlowEstablishedV4, flow);
    add(LayerSlot::FlowEstablishedV6, flow);
  }
  return plan;
}

std::vector<FilterPlan> PlanInfrastructure(bool exempt_service) {
  std::vector<FilterPlan> out;
  if (exempt_service) {
    for (LayerSlot slot : {LayerSlot::ConnectV4, LayerSlot::ConnectV6, LayerSlot::RecvAcceptV4, LayerSlot::RecvAcceptV6,
                           LayerSlot::FlowEstablishedV4, LayerSlot::FlowEstablishedV6}) {
      FilterPlan f;
      f.slot = slot;
      f.action = FilterAction::Permit;
      f.key = FilterKey(0, slot);
      f.weight = kExemptionWeight;
      f.app = AppMatch::ExactAppId;  // the service's own executable
      out.push_back(f);
    }
  }
  for (LayerSlot slot : {LayerSlot::OutboundTransportV4, LayerSlot::OutboundTransportV6, LayerSlot::InboundTransportV4,
                         LayerSlot::InboundTransportV6}) {
    FilterPlan f;
    f.slot = slot;
    f.action = FilterAction::Callout;
    f.key = FilterKey(0, slot);
    f.weight = kExemptionWeight;
    f.callout_key = CalloutFor(slot);
    f.permit_if_callout_unregistered = true;
    out.push_back(f);
  }
  return out;
}

std::string GuidToString(const nc_guid& g) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%08x-%04x-%04x-%02x%02x-%02x%02x%02x%02x%02x%02x", static_cast<unsigned>(g.data1),
                g.data2, g.data3, g.data4[0], g.data4[1], g.data4[2], g.data4[3], g.data4[4], g.data4[5], g.data4[6],
                g.data4[7]);
  return buf;
}

bool GuidEqual(const nc_guid& a, const nc_guid& b) { return std::memcmp(&a, &b, sizeof a) == 0; }

}  // namespace wfp
}  // namespace netclamp
