// What one NetClamp rule becomes in WFP, computed without any Windows header so that it compiles and is
// unit-tested on Linux too (test/win/wfp_plan_test.cc). win_backend.cc turns each FilterPlan into an
// FWPM_FILTER0 one to one; nothing about ordering, keys or conditions is decided there.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "../common/backend.h"
#include "../../../driver/include/netclamp_ioctl.h"

namespace netclamp {
namespace wfp {

// Where a filter lives. The value is part of the filter key (see FilterKey), so it must never change.
enum class LayerSlot : uint8_t {
  ConnectV4 = 0,           // FWPM_LAYER_ALE_AUTH_CONNECT_V4: connections the app makes, first UDP send
  ConnectV6 = 1,
  RecvAcceptV4 = 2,        // FWPM_LAYER_ALE_AUTH_RECV_ACCEPT_V4: connections the app accepts
  RecvAcceptV6 = 3,
  FlowEstablishedV4 = 4,   // FWPM_LAYER_ALE_FLOW_ESTABLISHED_V4: where the driver learns a flow's rule
  FlowEstablishedV6 = 5,
  OutboundTransportV4 = 6, // the driver's shaping callouts (one filter each, not per rule)
  OutboundTransportV6 = 7,
  InboundTransportV4 = 8,
  InboundTransportV6 = 9,
};
constexpr int kLayerSlotCount = 10;
bool IsV6(LayerSlot slot);
const char* LayerSlotName(LayerSlot slot);

enum class FilterAction { Permit, Block, Callout };

// FWP_DIRECTION_OUTBOUND / FWP_DIRECTION_INBOUND as FWPM_CONDITION_DIRECTION carries them.
enum class FlowDirection : int8_t { Any = -1, Outbound = 0, Inbound = 1 };

enum class AddressFamily { Any, V4, V6 };
struct RemoteAddress {
  AddressFamily family = AddressFamily::Any;
  uint32_t v4_addr = 0;  // host byte order, as FWP_V4_ADDR_MASK wants it
  uint32_t v4_mask = 0;  // host byte order; 0xffffffff for a single address
  std::array<uint8_t, 16> v6_addr{};  // network order, host bits cleared
  uint8_t v6_prefix = 0;              // 0..128
};
// "", "10.1.2.3", "10.0.0.0/8", "::1", "2001:db8::/32". Throws BackendError EINVAL.
RemoteAddress ParseRemoteAddress(const std::string& text);

// How the filter's app condition is built from the rule's path.
enum class AppMatch {
  Any,          // no app condition
  ExactAppId,   // FWPM_CONDITION_ALE_APP_ID == FwpmGetAppIdFromFileName0(path)
  AppIdPrefix,  // FWPM_CONDITION_ALE_APP_ID starts with the app id of the folder (DIRECTORY mode)
};

struct FilterPlan {
  LayerSlot slot = LayerSlot::ConnectV4;
  FilterAction action = FilterAction::Permit;
  nc_guid key{};
  uint64_t weight = 0;
  bool clear_action_right = false;              // FWPM_FILTER_FLAG_CLEAR_ACTION_RIGHT (hard block)
  bool permit_if_callout_unregistered = false;  // FWPM_FILTER_FLAG_PERMIT_IF_CALLOUT_UNREGISTERED
  nc_guid callout_key{};                        // FilterAction::Callout only
  uint64_t raw_context = 0;                     // the rule id for callout filters; never a pointer
  AppMatch app = AppMatch::Any;
  uint8_t ip_protocol = 0;    // 0 = any; 6 TCP, 17 UDP, 1 ICMP (v4), 58 ICMPv6
  uint16_t remote_port = 0;   // 0 = any
  RemoteAddress remote;       // family matches the slot's family, or Any
  FlowDirection direction = FlowDirection::Any;  // flow-established filters only
};

struct RulePlan {
  uint32_t rule_id = 0;
  std::vector<FilterPlan> filters;
  AppMatch app = AppMatch::Any;
  bool needs_driver_limit = false;  // LIMIT: the driver gets SET_APP_LIMIT, otherwise REMOVE_LIMIT
};

// Throws BackendError: EINVAL for a malformed address or a port without TCP/UDP, UNSUPPORTED for a
// FILENAME match (WFP cannot match an app id by suffix), ERANGE for a priority outside +-2^30.
RulePlan PlanRule(const RuleSpec& rule);

// The filters NetClamp installs once, whatever the rules: the service's own exemption (auth layers, top
// weight) and the transport-layer filters that point at the driver's shaping callouts (the driver
// registers those callouts conditional on flow, so they only run for flows a LIMIT rule tagged).
std::vector<FilterPlan> PlanInfrastructure(bool exempt_service);

// Weight within NetClamp's sublayer; WFP evaluates higher weights first and the first permit/block wins.
// Bits 63..33: priority + 2^30 (priority must be in [-2^30, 2^30)); bits 32..31: action rank
// (BLOCK 2 > LIMIT 1 > ALLOW 0); bits 30..0: 2^31-1 - id (the lower id wins).
uint64_t FilterWeight(int32_t priority, Action action, uint32_t rule_id);
constexpr uint64_t kExemptionWeight = ~0ull;  // above every rule: the service must always reach itself

// Filter keys: a fixed namespace with the slot and the rule id in data4, so reconcile can tell which rule
// and layer a filter belongs to from its key alone. Rule id 0 is NetClamp's infrastructure.
nc_guid FilterKey(uint32_t rule_id, LayerSlot slot);
bool DecodeFilterKey(const nc_guid& key, uint32_t* rule_id, LayerSlot* slot);

// The filter's providerData: "NCF1", rule id, fingerprint, how many filters the rule's set has. Read back
// by InstalledRules; a set missing filters is reported with fingerprint 0 so reconcile re-applies it.
constexpr size_t kProviderDataSize = 20;
std::array<uint8_t, kProviderDataSize> EncodeProviderData(uint32_t rule_id, uint64_t fingerprint, uint8_t filter_count);
bool DecodeProviderData(const uint8_t* data, size_t size, uint32_t* rule_id, uint64_t* fingerprint,
                        uint8_t* filter_count);

// Rates above what the driver accepts are treated as "no limit in that direction" (driver README).
uint64_t ClampRate(uint64_t bytes_per_sec);
uint32_t DriverScope(LimitScope scope);

std::string GuidToString(const nc_guid& g);
bool GuidEqual(const nc_guid& a, const nc_guid& b);

}  // namespace wfp
}  // namespace netclamp
