#pragma once
// Splits framed-mode input into frames: a 4-byte big-endian length, then
// that many bytes (an intake.proto ClientFrame). Pure: no I/O, no clock; a
// fuzzer drives it directly. It holds at most one frame, and says how long
// a frame is as soon as its header arrives, so the caller can admit the
// frame against its memory budget before the body is read.

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"

namespace zb {

// What a FrameDecoder finds. Called synchronously from Feed().
class FrameSink {
 public:
  virtual ~FrameSink() = default;
  // A whole frame body; valid only during the call.
  virtual void OnFrame(absl::string_view body) = 0;
  // A header announced `bytes`, over the limit. The decoder has stopped:
  // the stream cannot be resynchronised.
  virtual void OnFrameTooLarge(uint64_t bytes) = 0;
};

// Not thread-safe; one per connection.
class FrameDecoder {
 public:
  explicit FrameDecoder(uint32_t max_frame_bytes) : max_frame_bytes_(max_frame_bytes) {}

  // Consumes all of `data` (nothing once failed()).
  void Feed(absl::string_view data, FrameSink& sink);

  // A header was read and its body is not complete yet.
  bool in_body() const { return have_header_; }
  // Body bytes still to come for the current frame (0 outside a body).
  size_t body_remaining() const { return have_header_ ? frame_bytes_ - body_.size() : 0; }
  // Bytes held in memory (a partial header or body).
  size_t buffered_bytes() const { return header_fill_ + body_.size(); }
  // A frame (header or body) has started and not ended.
  bool in_frame() const { return header_fill_ > 0 || have_header_; }
  bool failed() const { return failed_; }

  // Drops an unfinished frame (the connection gave up on it).
  void Reset() {
    header_fill_ = 0;
    have_header_ = false;
    std::string().swap(body_);
  }

 private:
  const uint32_t max_frame_bytes_;
  char header_[4] = {};
  size_t header_fill_ = 0;    // bytes of header_ received (0 once complete)
  bool have_header_ = false;  // frame_bytes_ is known; body_ is filling
  uint32_t frame_bytes_ = 0;
  std::string body_;
  bool failed_ = false;
};

}  // namespace zb
