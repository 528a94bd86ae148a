#include "driver_client.h"

#include <cstring>

#include "win_errors.h"

namespace netclamp {
namespace win {
namespace {

constexpr DWORD kEventsPerRead = 64;

void CheckReplyHeader(const nc_msg_header& h, size_t expected_length, const char* what) {
  if (h.magic != NETCLAMP_MAGIC || h.version != NETCLAMP_PROTOCOL_VERSION || h.length != expected_length)
    throw BackendError("DRIVER_PROTOCOL", std::string("the driver's ") + what + " reply has a bad header");
}

}  // namespace

DriverClient::~DriverClient() { Disconnect(); }

bool DriverClient::Connect(std::string* why) {
  if (connected()) return true;
  // Overlapped, so the pended READ_EVENTS never blocks the other IOCTLs on the same handle.
  HANDLE h = CreateFileW(NETCLAMP_USER_DEVICE_PATH_W, GENERIC_READ | GENERIC_WRITE, 0, nullptr, OPEN_EXISTING,
                         FILE_FLAG_OVERLAPPED, nullptr);
  if (h == INVALID_HANDLE_VALUE) {
    DWORD err = GetLastError();
    if (err == ERROR_FILE_NOT_FOUND || err == ERROR_PATH_NOT_FOUND) {
      *why = "the NetClamp driver is not running (\\\\.\\NetClamp does not exist): shaping is off";
      return false;
    }
    throw WinError(err, "CreateFileW", "opening the NetClamp driver");
  }
  handle_ = h;
  try {
    nc_handshake_request request{};
    nc_msg_header_init(&request.header, sizeof request);
    LARGE_INTEGER now;
    QueryPerformanceCounter(&now);
    request.client_nonce = static_cast<uint64_t>(now.QuadPart) ^ (uint64_t{GetCurrentProcessId()} << 32);
    nc_handshake_reply reply{};
    DWORD got = Call(IOCTL_NETCLAMP_HANDSHAKE, "HANDSHAKE", &request, sizeof request, &reply, sizeof reply);
    if (got != sizeof reply) throw BackendError("DRIVER_PROTOCOL", "the driver's handshake reply is truncated");
    CheckReplyHeader(reply.header, sizeof reply, "handshake");
    if (reply.client_nonce != request.client_nonce)
      throw BackendError("DRIVER_PROTOCOL", "the driver's handshake reply is for another client");
    info_ = reply;
  } catch (...) {
    CloseHandle(handle_);
    handle_ = INVALID_HANDLE_VALUE;
    throw;
  }
  return true;
}

void DriverClient::Disconnect() {
  StopEvents();
  if (handle_ != INVALID_HANDLE_VALUE) {
    CloseHandle(handle_);
    handle_ = INVALID_HANDLE_VALUE;
  }
}

void DriverClient::RequireConnected() const {
  if (!connected())
    throw BackendError("DRIVER_MISSING", "the NetClamp driver is not running: LIMIT rules cannot be enforced");
}

DWORD DriverClient::Call(DWORD code, const char* name, const void* in, DWORD in_size, void* out, DWORD out_size) {
  OVERLAPPED ov{};
  ov.hEvent = CreateEventW(nullptr, TRUE, FALSE, nullptr);
  if (ov.hEvent == nullptr) throw WinError(GetLastError(), "CreateEventW", "calling the driver");
  DWORD got = 0;
  BOOL ok = DeviceIoControl(handle_, code, const_cast<void*>(in), in_size, out, out_size, &got, &ov);
  DWORD err = ok ? ERROR_SUCCESS : GetLastError();
  if (!ok && err == ERROR_IO_PENDING) {
    ok = GetOverlappedResult(handle_, &ov, &got, TRUE);
    err = ok ? ERROR_SUCCESS : GetLastError();
  }
  CloseHandle(ov.hEvent);
  if (!ok) {
    // The device is gone (driver stopped under us): report it as missing, not as an obscure Win32 error.
    if (err == ERROR_DEVICE_NOT_CONNECTED || err == ERROR_BAD_COMMAND || err == ERROR_INVALID_HANDLE)
      throw BackendError("DRIVER_MISSING", std::string("the NetClamp driver went away during ") + name,
                         static_cast<int>(err), "DeviceIoControl");
    throw WinError(err, "DeviceIoControl", std::string("driver IOCTL ") + name);
  }
  return got;
}

void DriverClient::SetAppLimit(uint32_t rule_id, uint32_t scope, uint64_t app_key, uint64_t up, uint64_t down) {
  RequireConnected();
  nc_app_limit_request r{};
  nc_msg_header_init(&r.header, sizeof r);
  r.rule_id = rule_id;
  r.scope = scope;
  r.app_key = app_key;
  r.up_bytes_per_sec = up;
  r.down_bytes_per_sec = down;
  r.burst_ms = 0;  // the driver's default (NETCLAMP_BURST_MS_DEFAULT)
  Call(IOCTL_NETCLAMP_SET_APP_LIMIT, "SET_APP_LIMIT", &r, sizeof r, nullptr, 0);
}

void DriverClient::SetFlowLimit(uint64_t flow_id, uint64_t up, uint64_t down) {
  RequireConnected();
  nc_flow_limit_request r{};
  nc_msg_header_init(&r.header, sizeof r);
  r.flow_id = flow_id;
  r.up_bytes_per_sec = up;
  r.down_bytes_per_sec = down;
  Call(IOCTL_NETCLAMP_SET_FLOW_LIMIT, "SET_FLOW_LIMIT", &r, sizeof r, nullptr, 0);
}

void DriverClient::RemoveAppLimit(uint32_t rule_id) {
  RequireConnected();
  nc_remove_limit_request r{};
  nc_msg_header_init(&r.header, sizeof r);
  r.kind = NETCLAMP_REMOVE_APP_LIMIT;
  r.rule_id = rule_id;
  Call(IOCTL_NETCLAMP_REMOVE_LIMIT, "REMOVE_LIMIT", &r, sizeof r, nullptr, 0);
}

void DriverClient::RemoveFlowLimit(uint64_t flow_id) {
  RequireConnected();
  nc_remove_limit_request r{};
  nc_msg_header_init(&r.header, sizeof r);
  r.kind = NETCLAMP_REMOVE_FLOW_LIMIT;
  r.flow_id = flow_id;
  Call(IOCTL_NETCLAMP_REMOVE_LIMIT, "REMOVE_LIMIT", &r, sizeof r, nullptr, 0);
}

std::vector<nc_rule_counters> DriverClient::ReadCounters() {
  RequireConnected();
  constexpr uint32_t kPage = 256;
  std::vector<uint8_t> buffer(sizeof(nc_counters_reply) + kPage * sizeof(nc_rule_counters));
  std::vector<nc_rule_counters> out;
  uint32_t first = 0;
  while (true) {
    nc_counters_request r{};
    nc_msg_header_init(&r.header, sizeof r);
    r.first_index = first;
    r.max_entries = kPage;
    DWORD got = Call(IOCTL_NETCLAMP_READ_COUNTERS, "READ_COUNTERS", &r, sizeof r, buffer.data(),
                     static_cast<DWORD>(buffer.size()));
    nc_counters_reply reply;
    if (got < sizeof reply) throw BackendError("DRIVER_PROTOCOL", "the driver's counters reply is truncated");
    std::memcpy(&reply, buffer.data(), sizeof reply);
    CheckReplyHeader(reply.header, sizeof reply, "counters");
    if (reply.returned > kPage || got != sizeof reply + reply.returned * sizeof(nc_rule_counters))
      throw BackendError("DRIVER_PROTOCOL", "the driver's counters reply has a bad entry count");
    for (uint32_t i = 0; i < reply.returned; i++) {
      nc_rule_counters c;
      std::memcpy(&c, buffer.data() + sizeof reply + i * sizeof c, sizeof c);
      out.push_back(c);
    }
    first += reply.returned;
    if (reply.returned == 0 || first >= reply.total) break;
  }
  return out;
}

nc_status_reply DriverClient::GetStatus() {
  RequireConnected();
  nc_simple_request r{};
  nc_msg_header_init(&r.header, sizeof r);
  nc_status_reply reply{};
  DWORD got = Call(IOCTL_NETCLAMP_GET_STATUS, "GET_STATUS", &r, sizeof r, &reply, sizeof reply);
  if (got != sizeof reply) throw BackendError("DRIVER_PROTOCOL", "the driver's status reply is truncated");
  CheckReplyHeader(reply.header, sizeof reply, "status");
  return reply;
}

void DriverClient::StartEvents(EventCallback on_event, GoneCallback on_gone) {
  RequireConnected();
  if (events_thread_.joinable()) return;
  stop_events_ = CreateEventW(nullptr, TRUE, FALSE, nullptr);
  if (stop_events_ == nullptr) throw WinError(GetLastError(), "CreateEventW", "starting the driver event reader");
  events_thread_ = std::thread(&DriverClient::EventLoop, this, std::move(on_event), std::move(on_gone));
}

void DriverClient::StopEvents() {
  if (events_thread_.joinable()) {
    SetEvent(stop_events_);
    events_thread_.join();
  }
  if (stop_events_ != nullptr) {
    CloseHandle(stop_events_);
    stop_events_ = nullptr;
  }
}

void DriverClient::EventLoop(EventCallback on_event, GoneCallback on_gone) {
  std::vector<uint8_t> buffer(sizeof(nc_events_reply) + kEventsPerRead * sizeof(nc_event));
  HANDLE done = CreateEventW(nullptr, TRUE, FALSE, nullptr);
  if (done == nullptr) {
    on_gone("CreateEventW failed: driver events are off");
    return;
  }
  while (true) {
    nc_simple_request r{};
    nc_msg_header_init(&r.header, sizeof r);
    OVERLAPPED ov{};
    ResetEvent(done);
    ov.hEvent = done;
    DWORD got = 0;
    BOOL ok = DeviceIoControl(handle_, IOCTL_NETCLAMP_READ_EVENTS, &r, sizeof r, buffer.data(),
                              static_cast<DWORD>(buffer.size()), &got, &ov);
    DWORD err = ok ? ERROR_SUCCESS : GetLastError();
    if (!ok && err == ERROR_IO_PENDING) {
      HANDLE waits[2] = {done, stop_events_};
      DWORD which = WaitForMultipleObjects(2, waits, FALSE, INFINITE);
      if (which != WAIT_OBJECT_0) {
        CancelIoEx(handle_, &ov);  // the driver completes the pended read as cancelled
        GetOverlappedResult(handle_, &ov, &got, TRUE);
        break;
      }
      ok = GetOverlappedResult(handle_, &ov, &got, FALSE);
      err = ok ? ERROR_SUCCESS : GetLastError();
    }
    if (!ok) {
      if (err != ERROR_OPERATION_ABORTED) on_gone("reading driver events failed with Windows error " + std::to_string(err));
      break;
    }
    nc_events_reply reply;
    if (got < sizeof reply) continue;
    std::memcpy(&reply, buffer.data(), sizeof reply);
    if (reply.header.magic != NETCLAMP_MAGIC || reply.count > kEventsPerRead ||
        got != sizeof reply + reply.count * sizeof(nc_event))
      continue;  // a malformed reply is dropped, never half-parsed
    uint32_t lost = reply.lost;
    for (uint32_t i = 0; i < reply.count; i++) {
      nc_event e;
      std::memcpy(&e, buffer.data() + sizeof reply + i * sizeof e, sizeof e);
      on_event(e, lost);
      lost = 0;
    }
  }
  CloseHandle(done);
}

}  // namespace win
}  // namespace netclamp
