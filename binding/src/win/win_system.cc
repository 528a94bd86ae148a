#include "win_system.h"

// winsock2 before windows.h, iphlpapi after both.
#include <winsock2.h>
#include <ws2tcpip.h>
#include <windows.h>
#include <iphlpapi.h>

#include <cstring>
#include <vector>

#include "smbios.h"
#include "win_errors.h"

namespace netclamp {
namespace win {
namespace {

const char* TcpStateName(DWORD state) {
  switch (state) {
    case MIB_TCP_STATE_CLOSED: return "CLOSED";
    case MIB_TCP_STATE_LISTEN: return "LISTEN";
    case MIB_TCP_STATE_SYN_SENT: return "SYN_SENT";
    case MIB_TCP_STATE_SYN_RCVD: return "SYN_RECEIVED";
    case MIB_TCP_STATE_ESTAB: return "ESTABLISHED";
    case MIB_TCP_STATE_FIN_WAIT1: return "FIN_WAIT1";
    case MIB_TCP_STATE_FIN_WAIT2: return "FIN_WAIT2";
    case MIB_TCP_STATE_CLOSE_WAIT: return "CLOSE_WAIT";
    case MIB_TCP_STATE_CLOSING: return "CLOSING";
    case MIB_TCP_STATE_LAST_ACK: return "LAST_ACK";
    case MIB_TCP_STATE_TIME_WAIT: return "TIME_WAIT";
    case MIB_TCP_STATE_DELETE_TCB: return "DELETE_TCB";
    default: return "UNKNOWN";
  }
}

std::string V4Text(DWORD network_order) {
  char buf[INET_ADDRSTRLEN] = {};
  IN_ADDR a;
  a.S_un.S_addr = network_order;
  inet_ntop(AF_INET, &a, buf, sizeof buf);
  return buf;
}

std::string V6Text(const UCHAR bytes[16]) {
  char buf[INET6_ADDRSTRLEN] = {};
  IN6_ADDR a;
  std::memcpy(a.u.Byte, bytes, 16);
  inet_ntop(AF_INET6, &a, buf, sizeof buf);
  return buf;
}

uint16_t Port(DWORD network_order_in_dword) { return ntohs(static_cast<u_short>(network_order_in_dword & 0xFFFF)); }

// The IP Helper "size query, allocate, retry" dance: tables grow between the two calls.
template <typename Fetch>
std::vector<uint8_t> FetchTable(Fetch fetch, const char* call) {
  std::vector<uint8_t> buffer(16 * 1024);
  for (int attempt = 0; attempt < 5; attempt++) {
    DWORD size = static_cast<DWORD>(buffer.size());
    DWORD rc = fetch(buffer.data(), &size);
    if (rc == NO_ERROR) return buffer;
    if (rc != ERROR_INSUFFICIENT_BUFFER) throw WinError(rc, call, "reading the connection table");
    buffer.resize(size + 4096);
  }
  throw BackendError("EAGAIN", std::string(call) + ": the connection table kept growing", 11, call);
}

}  // namespace

std::wstring Utf8ToWide(const std::string& s) {
  if (s.empty()) return std::wstring();
  int n = MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, s.data(), static_cast<int>(s.size()), nullptr, 0);
  if (n <= 0) throw BackendError("EINVAL", "path is not valid UTF-8", 22);
  std::wstring out(static_cast<size_t>(n), L'\0');
  MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, s.data(), static_cast<int>(s.size()), &out[0], n);
  return out;
}

std::string WideToUtf8(const std::wstring& s) {
  if (s.empty()) return std::string();
  int n = WideCharToMultiByte(CP_UTF8, 0, s.data(), static_cast<int>(s.size()), nullptr, 0, nullptr, nullptr);
  if (n <= 0) return std::string();
  std::string out(static_cast<size_t>(n), '\0');
  WideCharToMultiByte(CP_UTF8, 0, s.data(), static_cast<int>(s.size()), &out[0], n, nullptr, nullptr);
  return out;
}

std::string ProcessImagePath(uint32_t pid) {
  if (pid == 0 || pid == 4) return "";  // System Idle Process, System: no image file
  HANDLE process = OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, FALSE, pid);
  if (process == nullptr) return "";
  std::wstring path(32768, L'\0');
  DWORD size = static_cast<DWORD>(path.size());
  BOOL ok = QueryFullProcessImageNameW(process, 0, &path[0], &size);
  CloseHandle(process);
  if (!ok) return "";
  path.resize(size);
  return WideToUtf8(path);
}

bool FileIdentity(const std::string& utf8_path, uint64_t* volume, uint64_t* file_index) {
  if (utf8_path.empty()) return false;
  std::wstring wide = Utf8ToWide(utf8_path);
  HANDLE file = CreateFileW(wide.c_str(), 0, FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE, nullptr,
                            OPEN_EXISTING, FILE_FLAG_BACKUP_SEMANTICS, nullptr);
  if (file == INVALID_HANDLE_VALUE) return false;
  BY_HANDLE_FILE_INFORMATION info;
  BOOL ok = GetFileInformationByHandle(file, &info);
  CloseHandle(file);
  if (!ok) return false;
  *volume = info.dwVolumeSerialNumber;
  *file_index = (uint64_t{info.nFileIndexHigh} << 32) | info.nFileIndexLow;
  return true;
}

std::vector<ConnectionInfo> ListConnections() {
  std::vector<ConnectionInfo> out;
  std::vector<std::string> path_cache_keys;
  auto path_of = [](DWORD pid) { return ProcessImagePath(pid); };

  auto tcp4 = FetchTable(
      [](void* b, DWORD* s) { return GetExtendedTcpTable(b, s, FALSE, AF_INET, TCP_TABLE_OWNER_PID_ALL, 0); },
      "GetExtendedTcpTable");
  const auto* t4 = reinterpret_cast<const MIB_TCPTABLE_OWNER_PID*>(tcp4.data());
  for (DWORD i = 0; i < t4->dwNumEntries; i++) {
    const MIB_TCPROW_OWNER_PID& r = t4->table[i];
    out.push_back({"TCP", V4Text(r.dwLocalAddr), Port(r.dwLocalPort), V4Text(r.dwRemoteAddr), Port(r.dwRemotePort),
                   TcpStateName(r.dwState), r.dwOwningPid, path_of(r.dwOwningPid)});
  }
  auto tcp6 = FetchTable(
      [](void* b, DWORD* s) { return GetExtendedTcpTable(b, s, FALSE, AF_INET6, TCP_TABLE_OWNER_PID_ALL, 0); },
      "GetExtendedTcpTable");
  const auto* t6 = reinterpret_cast<const MIB_TCP6TABLE_OWNER_PID*>(tcp6.data());
  for (DWORD i = 0; i < t6->dwNumEntries; i++) {
    const MIB_TCP6ROW_OWNER_PID& r = t6->table[i];
    out.push_back({"TCP", V6Text(r.ucLocalAddr), Port(r.dwLocalPort), V6Text(r.ucRemoteAddr), Port(r.dwRemotePort),
                   TcpStateName(r.dwState), r.dwOwningPid, path_of(r.dwOwningPid)});
  }
  auto udp4 = FetchTable(
      [](void* b, DWORD* s) { return GetExtendedUdpTable(b, s, FALSE, AF_INET, UDP_TABLE_OWNER_PID, 0); },
      "GetExtendedUdpTable");
  const auto* u4 = reinterpret_cast<const MIB_UDPTABLE_OWNER_PID*>(udp4.data());
  for (DWORD i = 0; i < u4->dwNumEntries; i++) {
    const MIB_UDPROW_OWNER_PID& r = u4->table[i];
    out.push_back({"UDP", V4Text(r.dwLocalAddr), Port(r.dwLocalPort), "", 0, "", r.dwOwningPid, path_of(r.dwOwningPid)});
  }
  auto udp6 = FetchTable(
      [](void* b, DWORD* s) { return GetExtendedUdpTable(b, s, FALSE, AF_INET6, UDP_TABLE_OWNER_PID, 0); },
      "GetExtendedUdpTable");
  const auto* u6 = reinterpret_cast<const MIB_UDP6TABLE_OWNER_PID*>(udp6.data());
  for (DWORD i = 0; i < u6->dwNumEntries; i++) {
    const MIB_UDP6ROW_OWNER_PID& r = u6->table[i];
    out.push_back({"UDP", V6Text(r.ucLocalAddr), Port(r.dwLocalPort), "", 0, "", r.dwOwningPid, path_of(r.dwOwningPid)});
  }
  return out;
}

HwidInputs ReadHwidInputs() {
  HwidInputs h;
  // MachineGuid lives in the 64-bit view; KEY_WOW64_64KEY keeps a 32-bit host from being redirected.
  wchar_t value[128] = {};
  DWORD size = sizeof value;
  LSTATUS rc = RegGetValueW(HKEY_LOCAL_MACHINE, L"SOFTWARE\\Microsoft\\Cryptography", L"MachineGuid",
                            RRF_RT_REG_SZ | RRF_SUBKEY_WOW6464KEY, nullptr, value, &size);
  if (rc != ERROR_SUCCESS) throw WinError(static_cast<uint32_t>(rc), "RegGetValueW", "reading MachineGuid");
  h.machine_guid = WideToUtf8(value);

  constexpr DWORD kRsmb = ('R' << 24) | ('S' << 16) | ('M' << 8) | 'B';
  UINT need = GetSystemFirmwareTable(kRsmb, 0, nullptr, 0);
  if (need > 0) {
    std::vector<uint8_t> raw(need);
    UINT got = GetSystemFirmwareTable(kRsmb, 0, raw.data(), need);
    if (got > 0 && got <= need) h.smbios_uuid = SmbiosSystemUuid(raw.data(), got);
  }
  return h;
}

}  // namespace win
}  // namespace netclamp
