#pragma once
// CRC-32C (Castagnoli), the checksum of the spool's record envelopes.
// Uses the CPU's CRC32 instruction where there is one (SSE4.2), else a
// table (Boost.CRC); both give the same value. Thread-safe.

#include <cstddef>
#include <cstdint>

namespace zb {

uint32_t Crc32c(const char* data, size_t size);

}  // namespace zb
