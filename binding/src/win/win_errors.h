// Windows error numbers -> the stable BackendError codes the service turns into problem documents.
// Portable (numbers only, no Windows header) so the mapping is unit-tested on Linux.
#pragma once

#include <cstdint>
#include <string>

#include "../common/backend.h"

namespace netclamp {
namespace win {

// "ENOENT", "EPERM", ... for the Win32 errors the service already understands; "ENGINE_DOWN" for the RPC
// errors and FWP_E_SESSION_ABORTED that mean the BFE session is gone; the FWP_E_* name for the other WFP
// HRESULTs; otherwise "WIN32_<n>" (or "HRESULT_0x<hex>" for other failure HRESULTs).
std::string ErrorCodeName(uint32_t error);

// True for the errors after which the WFP session handle is dead: RPC_S_SERVER_UNAVAILABLE (1722),
// RPC_S_CALL_FAILED (1726), EPT_S_NOT_REGISTERED (1753), FWP_E_SESSION_ABORTED.
bool IsSessionGone(uint32_t error);

// A BackendError for a failed Windows call: code from ErrorCodeName, err = the Windows error number,
// syscall = the API name. The message adds the system's text for the error on Windows.
BackendError WinError(uint32_t error, const std::string& call, const std::string& what);

}  // namespace win
}  // namespace netclamp
