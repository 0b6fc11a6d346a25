// CRC-32C: the spool's envelope checksum must match the standard value on
// every length and alignment (the hardware path works in 8-byte words).

#include "common/crc32c.h"

#include <boost/crc.hpp>
#include <string>

#include "gtest/gtest.h"

namespace zb {
namespace {

uint32_t Reference(const std::string& s) {
  boost::crc_optimal<32, 0x1EDC6F41, 0xFFFFFFFF, 0xFFFFFFFF, true, true> crc;
  crc.process_bytes(s.data(), s.size());
  return crc.checksum();
}

TEST(Crc32cTest, StandardCheckValue) {
  const std::string check = "123456789";
  EXPECT_EQ(Crc32c(check.data(), check.size()), 0xE3069283u);
  EXPECT_EQ(Crc32c("", 0), 0u);
}

TEST(Crc32cTest, MatchesTheTableImplementationOnEveryLengthAndAlignment) {
  std::string data(300, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 131 + 7);
  for (size_t offset = 0; offset < 9; ++offset) {
    for (size_t len = 0; len + offset <= data.size(); len += 13) {
      const std::string piece = data.substr(offset, len);
      ASSERT_EQ(Crc32c(data.data() + offset, len), Reference(piece)) << "offset " << offset << " len " << len;
    }
  }
}

TEST(Crc32cTest, ExtendingOverPiecesGivesTheWholesChecksumOnBothPaths) {
  std::string data(200, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 31 + 3);
  for (size_t split = 0; split <= data.size(); split += 7) {
    const uint32_t whole = Reference(data);
    const uint32_t head = Crc32c(data.data(), split);
    EXPECT_EQ(Crc32cExtend(head, data.data() + split, data.size() - split), whole) << split;
    const uint32_t portable_head = internal::Crc32cExtendPortable(0, data.data(), split);
    EXPECT_EQ(portable_head, head) << split;
    EXPECT_EQ(internal::Crc32cExtendPortable(portable_head, data.data() + split, data.size() - split), whole)
        << split;
  }
  EXPECT_EQ(Crc32cExtend(0, "", 0), 0u);
}

}  // namespace
}  // namespace zb
