#include "intake/line_decoder.h"

#include <cstring>

namespace zb {

void LineDecoder::EndLine(absl::string_view line, LineSink& sink) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  if (line.size() > max_line_bytes_) {
    sink.OnOversizeLine(line.size());
  } else {
    sink.OnLine(line);
  }
}

void LineDecoder::Feed(absl::string_view data, LineSink& sink) {
  while (!data.empty()) {
    const void* nl = std::memchr(data.data(), '\n', data.size());
    if (nl == nullptr) {
      // The line goes on past this chunk. +1: room for a trailing '\r'.
      if (!discarding_ && partial_.size() + data.size() <= max_line_bytes_ + 1) {
        partial_.append(data.data(), data.size());
      } else {
        if (!discarding_) discarded_ = partial_.size();
        discarding_ = true;
        discarded_ += data.size();
        discarded_cr_ = data.back() == '\r';
        std::string().swap(partial_);  // give the memory back
      }
      return;
    }
    const size_t n = static_cast<const char*>(nl) - data.data();
    absl::string_view piece = data.substr(0, n);
    data.remove_prefix(n + 1);
    if (discarding_) {
      uint64_t bytes = discarded_ + piece.size();
      if (piece.empty() ? discarded_cr_ : piece.back() == '\r') --bytes;  // "\r\n" ends it
      discarding_ = false;
      discarded_ = 0;
      sink.OnOversizeLine(bytes);
    } else if (partial_.empty()) {
      EndLine(piece, sink);  // the common case: no copy
    } else {
      partial_.append(piece.data(), piece.size());
      std::string line = std::move(partial_);
      partial_.clear();
      EndLine(line, sink);
    }
  }
}

void LineDecoder::Finish(LineSink& sink) {
  if (discarding_) {
    const uint64_t bytes = discarded_;
    discarding_ = false;
    discarded_ = 0;
    sink.OnOversizeLine(bytes);
  } else if (!partial_.empty()) {
    std::string line = std::move(partial_);
    partial_.clear();
    EndLine(line, sink);
  }
}

}  // namespace zb
