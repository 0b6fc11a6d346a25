#include "common/crc32c.h"

#include <cstring>

#include <boost/crc.hpp>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace zb {
namespace {

uint32_t Reverse(uint32_t x) {
  uint32_t r = 0;
  for (int i = 0; i < 32; ++i, x >>= 1) r = (r << 1) | (x & 1);
  return r;
}

uint32_t Crc32cPortable(uint32_t crc, const char* data, size_t size) {
  // Boost takes the starting remainder unreflected; this CRC is reflected.
  boost::crc_optimal<32, 0x1EDC6F41, 0xFFFFFFFF, 0xFFFFFFFF, true, true> c(Reverse(~crc));
  c.process_bytes(data, size);
  return c.checksum();
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) uint32_t Crc32cSse42(uint32_t start, const char* data, size_t size) {
  uint64_t crc = ~start;
  for (; size >= 8; data += 8, size -= 8) {
    uint64_t word;
    std::memcpy(&word, data, 8);
    crc = _mm_crc32_u64(crc, word);
  }
  auto crc32 = static_cast<uint32_t>(crc);
  for (; size > 0; ++data, --size) crc32 = _mm_crc32_u8(crc32, static_cast<uint8_t>(*data));
  return crc32 ^ 0xFFFFFFFFu;
}

using CrcFn = uint32_t (*)(uint32_t, const char*, size_t);
const CrcFn kBestCrc = __builtin_cpu_supports("sse4.2") ? Crc32cSse42 : Crc32cPortable;
#endif

}  // namespace

uint32_t Crc32cExtend(uint32_t crc, const char* data, size_t size) {
#if defined(__x86_64__)
  return kBestCrc(crc, data, size);
#else
  return Crc32cPortable(crc, data, size);
#endif
}

uint32_t Crc32c(const char* data, size_t size) { return Crc32cExtend(0, data, size); }

namespace internal {
uint32_t Crc32cExtendPortable(uint32_t crc, const char* data, size_t size) { return Crc32cPortable(crc, data, size); }
}  // namespace internal

}  // namespace zb
