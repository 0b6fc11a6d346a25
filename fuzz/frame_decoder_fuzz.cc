// Fuzzes zb::FrameDecoder (framed-mode intake): the input is cut into chunks
// of fuzzer-chosen sizes and fed one by one; every report is compared with a
// reference model that walks the same bytes one at a time. Checked: frames
// and the too-large verdict come out exactly as the model says whatever the
// chunking, the decoder holds at most one partial header and one partial
// body (never more than max_frame_bytes + 3 bytes), its accessors agree with
// the model, and nothing is consumed once it failed. Each frame body is then
// parsed as zerobusd.intake.ClientFrame and walked the way the intake server
// does (lib/intake/intake_server.cc, Session::OnFrame / HandleFrame).
//
// Input layout (FuzzedDataProvider): the stream from the front; from the
// back, the limit and then one byte per chunk (its length; 0 = Reset()).

#include <fuzzer/FuzzedDataProvider.h>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>

#include "fuzz/fuzz_check.h"
#include "intake.pb.h"
#include "intake/frame_decoder.h"

namespace {

struct Expected {
  bool too_large = false;
  std::string body;
  uint64_t bytes = 0;  // the announced length
};

struct Model {
  uint32_t max = 0;
  std::string header;  // 0..3 bytes of an unfinished header
  bool have_header = false;
  uint32_t frame_bytes = 0;
  std::string body;
  bool failed = false;
  std::deque<Expected> owed;

  void Walk(const std::string& chunk) {
    for (char c : chunk) {
      if (failed) return;
      if (!have_header) {
        header.push_back(c);
        if (header.size() < 4) continue;
        const auto* h = reinterpret_cast<const unsigned char*>(header.data());
        frame_bytes = uint32_t{h[0]} << 24 | uint32_t{h[1]} << 16 | uint32_t{h[2]} << 8 | uint32_t{h[3]};
        header.clear();
        if (frame_bytes > max) {
          failed = true;
          owed.push_back({true, {}, frame_bytes});
          return;
        }
        if (frame_bytes == 0) {
          owed.push_back({false, {}, 0});
        } else {
          have_header = true;
        }
        continue;
      }
      body.push_back(c);
      if (body.size() == frame_bytes) {
        owed.push_back({false, body, frame_bytes});
        body.clear();
        have_header = false;
      }
    }
  }
  void Reset() {
    header.clear();
    have_header = false;
    body.clear();
  }
};

// What the intake server does with a frame body.
void ServeFrame(absl::string_view body) {
  zerobusd::intake::ClientFrame frame;
  if (!frame.ParseFromArray(body.data(), static_cast<int>(body.size()))) return;  // NACK BAD_FRAME
  size_t bytes = 0;
  if (frame.has_hello()) {
    bytes += frame.hello().client().size() + frame.hello().no_wait();
  } else if (frame.has_batch()) {
    const auto& batch = frame.batch();
    bytes += batch.route().size() + batch.seq() % 2;
    for (const std::string& record : batch.records()) bytes += record.size();
  }
  // A frame that parsed re-serializes and parses back to the same size.
  const std::string again = frame.SerializeAsString();
  zerobusd::intake::ClientFrame back;
  ZB_FUZZ_CHECK(back.ParseFromString(again), "a re-serialized ClientFrame does not parse");
  ZB_FUZZ_CHECK(back.ByteSizeLong() == frame.ByteSizeLong(), "ClientFrame size changed on a round trip");
  ZB_FUZZ_CHECK(bytes <= body.size(), "the frame's fields hold more bytes than its body");
}

class CheckingSink final : public zb::FrameSink {
 public:
  explicit CheckingSink(Model& model) : model_(model) {}

  void OnFrame(absl::string_view body) override {
    const Expected e = Next();
    ZB_FUZZ_CHECK(!e.too_large, "OnFrame(%zu bytes) where the header announced %llu bytes over the %u-byte limit",
                  body.size(), static_cast<unsigned long long>(e.bytes), model_.max);
    ZB_FUZZ_CHECK(body.size() <= model_.max, "OnFrame of %zu bytes, over the %u-byte limit", body.size(),
                  model_.max);
    ZB_FUZZ_CHECK(body == e.body, "frame body differs from the model (%zu vs %zu bytes)", body.size(),
                  e.body.size());
    ServeFrame(body);
  }
  void OnFrameTooLarge(uint64_t bytes) override {
    const Expected e = Next();
    ZB_FUZZ_CHECK(e.too_large && bytes == e.bytes, "OnFrameTooLarge(%llu), the model expected %s of %llu bytes",
                  static_cast<unsigned long long>(bytes), e.too_large ? "too large" : "a frame",
                  static_cast<unsigned long long>(e.bytes));
  }

 private:
  Expected Next() {
    ZB_FUZZ_CHECK(!model_.owed.empty(), "a frame reported where none ended");
    Expected e = std::move(model_.owed.front());
    model_.owed.pop_front();
    return e;
  }
  Model& model_;
};

void CheckState(const zb::FrameDecoder& d, const Model& m) {
  ZB_FUZZ_CHECK(m.owed.empty(), "%zu frame(s) not reported", m.owed.size());
  ZB_FUZZ_CHECK(d.failed() == m.failed, "failed() is %d, the model %d", d.failed(), m.failed);
  ZB_FUZZ_CHECK(d.buffered_bytes() <= size_t{m.max} + 3, "holds %zu bytes, limit %u", d.buffered_bytes(), m.max);
  const size_t held = m.failed ? 0 : m.header.size() + m.body.size();
  ZB_FUZZ_CHECK(d.buffered_bytes() == held, "holds %zu bytes, the model %zu", d.buffered_bytes(), held);
  ZB_FUZZ_CHECK(d.in_body() == (!m.failed && m.have_header), "in_body() is %d", d.in_body());
  const size_t remaining = !m.failed && m.have_header ? m.frame_bytes - m.body.size() : 0;
  ZB_FUZZ_CHECK(d.body_remaining() == remaining, "body_remaining() is %zu, the model %zu", d.body_remaining(),
                remaining);
  ZB_FUZZ_CHECK(d.in_frame() == (!m.failed && (!m.header.empty() || m.have_header)), "in_frame() is %d",
                d.in_frame());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider fdp(data, size);
  Model model;
  // The server's limit (16 MiB) or a small one, so that the too-large path
  // and frames at the limit are both in reach.
  model.max = fdp.ConsumeBool() ? 16u << 20 : fdp.ConsumeIntegralInRange<uint32_t>(0, 1024);
  zb::FrameDecoder decoder(model.max);
  CheckingSink sink(model);
  while (fdp.remaining_bytes() > 0) {
    const size_t n = fdp.ConsumeIntegral<uint8_t>();
    if (n == 0) {
      decoder.Reset();
      model.Reset();
    } else {
      const std::string chunk = fdp.ConsumeBytesAsString(n);
      model.Walk(chunk);
      decoder.Feed(chunk, sink);
    }
    CheckState(decoder, model);
  }
  return 0;
}
