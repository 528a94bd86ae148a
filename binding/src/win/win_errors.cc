#include "win_errors.h"

#include <cstdio>

#ifdef _WIN32
#include <windows.h>
#endif

namespace netclamp {
namespace win {
namespace {

struct Named {
  uint32_t value;
  const char* code;
};

// Win32 errors with an errno-style meaning the service maps already (lib/services: ENOENT -> the rule's
// sync_error, EPERM -> 403-ish problem, ...).
constexpr Named kWin32[] = {
    {2, "ENOENT"},     // ERROR_FILE_NOT_FOUND
    {3, "ENOENT"},     // ERROR_PATH_NOT_FOUND
    {5, "EPERM"},      // ERROR_ACCESS_DENIED (not an administrator)
    {8, "ENOMEM"},     // ERROR_NOT_ENOUGH_MEMORY
    {14, "ENOMEM"},    // ERROR_OUTOFMEMORY
    {32, "EBUSY"},     // ERROR_SHARING_VIOLATION (the driver's single client is taken)
    {87, "EINVAL"},    // ERROR_INVALID_PARAMETER
    {123, "EINVAL"},   // ERROR_INVALID_NAME
    {161, "ENOENT"},   // ERROR_BAD_PATHNAME
    {170, "EBUSY"},    // ERROR_BUSY
    {206, "ENAMETOOLONG"},  // ERROR_FILENAME_EXCED_RANGE
    {1058, "BFE_DISABLED"},  // ERROR_SERVICE_DISABLED
    {1062, "BFE_DOWN"},      // ERROR_SERVICE_NOT_ACTIVE
    {1722, "ENGINE_DOWN"},   // RPC_S_SERVER_UNAVAILABLE: BFE is gone
    {1726, "ENGINE_DOWN"},   // RPC_S_CALL_FAILED
    {1753, "ENGINE_DOWN"},   // EPT_S_NOT_REGISTERED: BFE not (yet) listening
};

constexpr const char* kFwpNames[] = {
    nullptr,
    "FWP_E_CALLOUT_NOT_FOUND", "FWP_E_CONDITION_NOT_FOUND", "FWP_E_FILTER_NOT_FOUND", "FWP_E_LAYER_NOT_FOUND",
    "FWP_E_PROVIDER_NOT_FOUND", "FWP_E_PROVIDER_CONTEXT_NOT_FOUND", "FWP_E_SUBLAYER_NOT_FOUND", "FWP_E_NOT_FOUND",
    "FWP_E_ALREADY_EXISTS", "FWP_E_IN_USE", "FWP_E_DYNAMIC_SESSION_IN_PROGRESS", "FWP_E_WRONG_SESSION",
    "FWP_E_NO_TXN_IN_PROGRESS", "FWP_E_TXN_IN_PROGRESS", "FWP_E_TXN_ABORTED", "FWP_E_SESSION_ABORTED",
    "FWP_E_INCOMPATIBLE_TXN", "FWP_E_TIMEOUT", "FWP_E_NET_EVENTS_DISABLED", "FWP_E_INCOMPATIBLE_LAYER",
    "FWP_E_KM_CLIENTS_ONLY", "FWP_E_LIFETIME_MISMATCH", "FWP_E_BUILTIN_OBJECT", "FWP_E_TOO_MANY_CALLOUTS",
    "FWP_E_NOTIFICATION_DROPPED", "FWP_E_TRAFFIC_MISMATCH", "FWP_E_INCOMPATIBLE_SA_STATE", "FWP_E_NULL_POINTER",
    "FWP_E_INVALID_ENUMERATOR", "FWP_E_INVALID_FLAGS", "FWP_E_INVALID_NET_MASK", "FWP_E_INVALID_RANGE",
    "FWP_E_INVALID_INTERVAL", "FWP_E_ZERO_LENGTH_ARRAY", "FWP_E_NULL_DISPLAY_NAME", "FWP_E_INVALID_ACTION_TYPE",
    "FWP_E_INVALID_WEIGHT", "FWP_E_MATCH_TYPE_MISMATCH", "FWP_E_TYPE_MISMATCH", "FWP_E_OUT_OF_BOUNDS",
    "FWP_E_RESERVED", "FWP_E_DUPLICATE_CONDITION", "FWP_E_DUPLICATE_KEYMOD", "FWP_E_ACTION_INCOMPATIBLE_WITH_LAYER",
    "FWP_E_ACTION_INCOMPATIBLE_WITH_SUBLAYER", "FWP_E_CONTEXT_INCOMPATIBLE_WITH_LAYER",
    "FWP_E_CONTEXT_INCOMPATIBLE_WITH_CALLOUT",
};
constexpr uint32_t kFwpFacilityBase = 0x80320000u;  // FWP_E_* = 0x8032xxxx
constexpr uint32_t kFwpSessionAborted = 0x80320010u;

}  // namespace

std::string ErrorCodeName(uint32_t error) {
  if (error == kFwpSessionAborted) return "ENGINE_DOWN";
  if ((error & 0xFFFF0000u) == kFwpFacilityBase) {
    uint32_t index = error & 0xFFFFu;
    if (index < sizeof kFwpNames / sizeof kFwpNames[0] && kFwpNames[index] != nullptr) return kFwpNames[index];
  }
  for (const Named& n : kWin32)
    if (n.value == error) return n.code;
  char buf[32];
  if (error & 0x80000000u)
    std::snprintf(buf, sizeof buf, "HRESULT_0x%08X", static_cast<unsigned>(error));
  else
    std::snprintf(buf, sizeof buf, "WIN32_%u", static_cast<unsigned>(error));
  return buf;
}

bool IsSessionGone(uint32_t error) {
  return error == 1722 || error == 1726 || error == 1753 || error == kFwpSessionAborted;
}

BackendError WinError(uint32_t error, const std::string& call, const std::string& what) {
  std::string text;
#ifdef _WIN32
  char* buffer = nullptr;
  DWORD n = FormatMessageA(FORMAT_MESSAGE_ALLOCATE_BUFFER | FORMAT_MESSAGE_FROM_SYSTEM | FORMAT_MESSAGE_IGNORE_INSERTS,
                           nullptr, error, 0, reinterpret_cast<LPSTR>(&buffer), 0, nullptr);
  if (n > 0 && buffer != nullptr) {
    text.assign(buffer, n);
    while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' ')) text.pop_back();
  }
  if (buffer != nullptr) LocalFree(buffer);
#endif
  char number[16];
  std::snprintf(number, sizeof number, "0x%08X", static_cast<unsigned>(error));
  std::string message = what + ": " + call + " failed with " + number;
  if (!text.empty()) message += " (" + text + ")";
  return BackendError(ErrorCodeName(error), message, static_cast<int>(error), call);
}

}  // namespace win
}  // namespace netclamp
