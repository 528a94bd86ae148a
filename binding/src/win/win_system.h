// Processes, connections and machine identity on Windows: IP Helper owner-pid tables, process image
// paths, file identities (the Windows analogue of dev/ino), MachineGuid and the SMBIOS UUID.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "../common/backend.h"

namespace netclamp {
namespace win {

std::vector<ConnectionInfo> ListConnections();
// Full Win32 path of a process's image, "" when it cannot be opened (exited, protected).
std::string ProcessImagePath(uint32_t pid);
// Volume serial number and 64-bit file index of a file: stable identity across renames, like dev/ino.
bool FileIdentity(const std::string& utf8_path, uint64_t* volume, uint64_t* file_index);
HwidInputs ReadHwidInputs();

std::wstring Utf8ToWide(const std::string& s);
std::string WideToUtf8(const std::wstring& s);

}  // namespace win
}  // namespace netclamp
