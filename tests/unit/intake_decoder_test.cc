// The pure intake decoders: every split of the input gives the same lines
// and frames, and memory stays within the limit whatever the input.

#include <endian.h>

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "intake/frame_decoder.h"
#include "intake/line_decoder.h"

namespace zb {
namespace {

struct Lines : LineSink {
  std::vector<std::string> got;  // lines, or "<oversize N>"
  void OnLine(absl::string_view line) override { got.emplace_back(line); }
  void OnOversizeLine(uint64_t bytes) override { got.push_back(absl::StrCat("<oversize ", bytes, ">")); }
};

std::vector<std::string> DecodeLines(const std::string& input, size_t max, size_t chunk, size_t* peak = nullptr) {
  LineDecoder decoder(max);
  Lines sink;
  for (size_t i = 0; i < input.size(); i += chunk) {
    decoder.Feed(absl::string_view(input).substr(i, chunk), sink);
    if (peak) *peak = std::max(*peak, decoder.buffered_bytes());
  }
  decoder.Finish(sink);
  EXPECT_FALSE(decoder.in_line());
  return sink.got;
}

TEST(LineDecoderTest, EverySplitGivesTheSameLines) {
  const std::string input = "a\nbb\r\n\n" + std::string(20, 'x') + "\nccc\r\nlast";
  const std::vector<std::string> want = {"a", "bb", "", "<oversize 20>", "ccc", "last"};
  for (size_t chunk = 1; chunk <= input.size(); ++chunk) {
    EXPECT_EQ(DecodeLines(input, 10, chunk), want) << "chunk " << chunk;
  }
}

TEST(LineDecoderTest, ALineAtTheLimitIsKeptOneMoreIsNot) {
  EXPECT_EQ(DecodeLines(std::string(10, 'x') + "\n", 10, 3), std::vector<std::string>{std::string(10, 'x')});
  EXPECT_EQ(DecodeLines(std::string(10, 'x') + "\r\n", 10, 3), std::vector<std::string>{std::string(10, 'x')});
  EXPECT_EQ(DecodeLines(std::string(11, 'x') + "\n", 10, 3), std::vector<std::string>{"<oversize 11>"});
  EXPECT_EQ(DecodeLines(std::string(11, 'x') + "\r\n", 10, 4), std::vector<std::string>{"<oversize 11>"});
  EXPECT_EQ(DecodeLines(std::string(11, 'x'), 10, 4), std::vector<std::string>{"<oversize 11>"});
}

TEST(LineDecoderTest, AHugeLineIsNeverBuffered) {
  size_t peak = 0;
  const auto got = DecodeLines(std::string(10 << 20, 'y') + "\n{}\n", 1024, 65536, &peak);
  EXPECT_EQ(got, (std::vector<std::string>{absl::StrCat("<oversize ", 10 << 20, ">"), "{}"}));
  EXPECT_LE(peak, 1025u);
}

struct Frames : FrameSink {
  std::vector<std::string> got;
  uint64_t too_large = 0;
  void OnFrame(absl::string_view body) override { got.emplace_back(body); }
  void OnFrameTooLarge(uint64_t bytes) override { too_large = bytes; }
};

std::string Framed(const std::string& body) {
  const uint32_t len = htobe32(static_cast<uint32_t>(body.size()));
  return std::string(reinterpret_cast<const char*>(&len), 4) + body;
}

TEST(FrameDecoderTest, EverySplitGivesTheSameFrames) {
  const std::vector<std::string> bodies = {"", "a", std::string(300, 'b'), "cc"};
  std::string input;
  for (const auto& b : bodies) input += Framed(b);
  for (size_t chunk = 1; chunk <= input.size(); ++chunk) {
    FrameDecoder decoder(1000);
    Frames sink;
    for (size_t i = 0; i < input.size(); i += chunk) {
      decoder.Feed(absl::string_view(input).substr(i, chunk), sink);
      EXPECT_LE(decoder.buffered_bytes(), 300u);
    }
    EXPECT_EQ(sink.got, bodies) << "chunk " << chunk;
    EXPECT_FALSE(decoder.in_frame());
  }
}

TEST(FrameDecoderTest, TheLengthIsKnownAtTheHeaderBeforeTheBody) {
  FrameDecoder decoder(1000);
  Frames sink;
  const std::string frame = Framed(std::string(500, 'z'));
  decoder.Feed(absl::string_view(frame).substr(0, 4), sink);
  EXPECT_TRUE(decoder.in_body());
  EXPECT_EQ(decoder.body_remaining(), 500u);
  EXPECT_EQ(decoder.buffered_bytes(), 0u);
  decoder.Feed(absl::string_view(frame).substr(4, 100), sink);
  EXPECT_EQ(decoder.body_remaining(), 400u);
  decoder.Reset();
  EXPECT_FALSE(decoder.in_frame());
  EXPECT_EQ(decoder.buffered_bytes(), 0u);
}

TEST(FrameDecoderTest, AFrameOverTheLimitStopsTheDecoder) {
  FrameDecoder decoder(1000);
  Frames sink;
  decoder.Feed(Framed(std::string(1000, 'a')) + Framed(std::string(1001, 'b')) + Framed("c"), sink);
  EXPECT_EQ(sink.got.size(), 1u);
  EXPECT_EQ(sink.too_large, 1001u);
  EXPECT_TRUE(decoder.failed());
  decoder.Feed(Framed("d"), sink);
  EXPECT_EQ(sink.got.size(), 1u);
}

}  // namespace
}  // namespace zb
