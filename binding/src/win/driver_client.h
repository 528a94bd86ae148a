// User-mode client of NetClamp's kernel driver (driver/): the control device \\.\NetClamp, the versioned
// handshake first, then the limit, counter and status IOCTLs, and a thread that keeps one READ_EVENTS
// request pended and hands each event to a sink. Structs and codes: driver/include/netclamp_ioctl.h.
#pragma once

#include <windows.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "../../../driver/include/netclamp_ioctl.h"

namespace netclamp {
namespace win {

class DriverClient {
 public:
  using EventCallback = std::function<void(const nc_event& event, uint32_t lost)>;
  // Called when the event thread stops because the device went away (driver unloaded).
  using GoneCallback = std::function<void(const std::string& why)>;

  DriverClient() = default;
  ~DriverClient();
  DriverClient(const DriverClient&) = delete;
  DriverClient& operator=(const DriverClient&) = delete;

  // Opens the device and handshakes. Returns false with `why` when the driver is not installed or not
  // running (ERROR_FILE_NOT_FOUND); throws BackendError for anything else (access denied, busy,
  // protocol version mismatch).
  bool Connect(std::string* why);
  void Disconnect();
  bool connected() const { return handle_ != INVALID_HANDLE_VALUE; }
  const nc_handshake_reply& info() const { return info_; }

  // Each throws BackendError (DRIVER_MISSING when not connected, the mapped Windows error otherwise).
  void SetAppLimit(uint32_t rule_id, uint32_t scope, uint64_t app_key, uint64_t up, uint64_t down);
  void SetFlowLimit(uint64_t flow_id, uint64_t up, uint64_t down);
  void RemoveAppLimit(uint32_t rule_id);
  void RemoveFlowLimit(uint64_t flow_id);
  std::vector<nc_rule_counters> ReadCounters();
  nc_status_reply GetStatus();

  void StartEvents(EventCallback on_event, GoneCallback on_gone);
  void StopEvents();

 private:
  // One METHOD_BUFFERED call on the overlapped handle, waited for; returns the bytes written.
  DWORD Call(DWORD code, const char* name, const void* in, DWORD in_size, void* out, DWORD out_size);
  void RequireConnected() const;
  void EventLoop(EventCallback on_event, GoneCallback on_gone);

  HANDLE handle_ = INVALID_HANDLE_VALUE;
  nc_handshake_reply info_{};
  std::thread events_thread_;
  HANDLE stop_events_ = nullptr;
};

}  // namespace win
}  // namespace netclamp
