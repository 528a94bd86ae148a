// SMBIOS parsing for the HWID input: the System Information (type 1) UUID from the raw table that
// GetSystemFirmwareTable('RSMB') returns. Portable: unit-tested on Linux.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace netclamp {
namespace win {

// `raw` is the RSMB blob: a RawSMBIOSData header (4 bytes of version, a 4-byte little-endian table length)
// then the structure table. Returns the canonical lower-case UUID, or "" when type 1 is missing or its
// UUID is all zeros / all ones (SMBIOS: "not present" / "not set"). Never reads past `size`.
std::string SmbiosSystemUuid(const uint8_t* raw, size_t size);

}  // namespace win
}  // namespace netclamp
