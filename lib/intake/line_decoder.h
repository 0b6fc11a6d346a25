#pragma once
// Splits line-mode input (NDJSON) into lines. Pure: no I/O, no clock, no
// allocation beyond one partial line, so memory is bounded by the limit
// whatever a producer sends, and a fuzzer can drive it directly.

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"

namespace zb {

// What a LineDecoder finds. Called synchronously from Feed() / Finish().
class LineSink {
 public:
  virtual ~LineSink() = default;
  // One complete line without its '\n' (a trailing '\r' is removed too).
  // `line` is valid only during the call.
  virtual void OnLine(absl::string_view line) = 0;
  // A line longer than the limit, of `bytes` bytes in all; its content was
  // discarded as it arrived and is never buffered.
  virtual void OnOversizeLine(uint64_t bytes) = 0;
};

// Not thread-safe; one per connection.
class LineDecoder {
 public:
  // Lines longer than `max_line_bytes` (not counting "\r\n") are reported
  // by OnOversizeLine instead of OnLine.
  explicit LineDecoder(size_t max_line_bytes) : max_line_bytes_(max_line_bytes) {}

  // Consumes all of `data`. Lines that end inside it are reported; the
  // unfinished tail is kept (at most max_line_bytes + 1 bytes).
  void Feed(absl::string_view data, LineSink& sink);
  // End of input: reports the unfinished tail as a last line, if any.
  void Finish(LineSink& sink);

  // Bytes of an unfinished line held in memory.
  size_t buffered_bytes() const { return partial_.size(); }
  // A line has started and not ended (held or being discarded).
  bool in_line() const { return !partial_.empty() || discarding_; }
  // The unfinished line is over the limit and being skipped (not held).
  bool discarding() const { return discarding_; }

  // Drops an unfinished line (the connection gave up on it).
  void Reset() {
    std::string().swap(partial_);
    discarding_ = false;
    discarded_ = 0;
    discarded_cr_ = false;
  }

 private:
  void EndLine(absl::string_view line, LineSink& sink);

  const size_t max_line_bytes_;
  std::string partial_;      // the unfinished line, while it is within the limit
  bool discarding_ = false;  // the unfinished line is over the limit
  uint64_t discarded_ = 0;   // its length so far
  bool discarded_cr_ = false;  // its last byte so far was '\r'
};

}  // namespace zb
