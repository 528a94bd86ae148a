#include "smbios.h"

#include <cstdio>

namespace netclamp {
namespace win {

std::string SmbiosSystemUuid(const uint8_t* raw, size_t size) {
  if (raw == nullptr || size < 8) return "";
  uint32_t table_length = uint32_t{raw[4]} | (uint32_t{raw[5]} << 8) | (uint32_t{raw[6]} << 16) | (uint32_t{raw[7]} << 24);
  uint8_t major = raw[1], minor = raw[2];
  const uint8_t* p = raw + 8;
  const uint8_t* end = raw + 8 + (table_length < size - 8 ? table_length : size - 8);
  while (p + 4 <= end) {
    uint8_t type = p[0], length = p[1];
    if (length < 4 || p + length > end) return "";
    if (type == 127) return "";  // end-of-table
    if (type == 1 && length >= 0x19) {
      const uint8_t* u = p + 8;
      bool zeros = true, ones = true;
      for (int i = 0; i < 16; i++) {
        zeros = zeros && u[i] == 0x00;
        ones = ones && u[i] == 0xFF;
      }
      if (zeros || ones) return "";
      // From SMBIOS 2.6 the first three fields are little-endian (as Windows' GUIDs); before, big-endian.
      bool le = major > 2 || (major == 2 && minor >= 6);
      uint8_t b[16];
      for (int i = 0; i < 16; i++) b[i] = u[i];
      if (le) {
        uint8_t t;
        t = b[0]; b[0] = b[3]; b[3] = t;
        t = b[1]; b[1] = b[2]; b[2] = t;
        t = b[4]; b[4] = b[5]; b[5] = t;
        t = b[6]; b[6] = b[7]; b[7] = t;
      }
      char text[37];
      std::snprintf(text, sizeof text, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
                    b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
      return text;
    }
    // Skip the formatted area, then the string set, which ends with two NULs.
    const uint8_t* s = p + length;
    while (s + 1 < end && !(s[0] == 0 && s[1] == 0)) s++;
    if (s + 1 >= end) return "";
    p = s + 2;
  }
  return "";
}

}  // namespace win
}  // namespace netclamp
