#pragma once
// CRC-32C (Castagnoli), the checksum of the spool's record envelopes.
// Uses the CPU's CRC32 instruction where there is one (SSE4.2), else a
// table (Boost.CRC); both give the same value. Thread-safe.

#include <cstddef>
#include <cstdint>

namespace zb {

uint32_t Crc32c(const char* data, size_t size);
// The CRC of A followed by `data`, given crc = Crc32c(A): data in pieces
// gets the checksum of the whole. Crc32cExtend(0, d, n) == Crc32c(d, n).
uint32_t Crc32cExtend(uint32_t crc, const char* data, size_t size);

namespace internal {
// The table path, whatever the CPU (tests).
uint32_t Crc32cExtendPortable(uint32_t crc, const char* data, size_t size);
}  // namespace internal

}  // namespace zb
