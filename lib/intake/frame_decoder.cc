#include "intake/frame_decoder.h"

#include <endian.h>

#include <algorithm>
#include <cstring>

namespace zb {

void FrameDecoder::Feed(absl::string_view data, FrameSink& sink) {
  while (!data.empty() && !failed_) {
    if (!have_header_) {
      const size_t take = std::min(data.size(), sizeof(header_) - header_fill_);
      std::memcpy(header_ + header_fill_, data.data(), take);
      header_fill_ += take;
      data.remove_prefix(take);
      if (header_fill_ < sizeof(header_)) return;
      uint32_t len_be = 0;
      std::memcpy(&len_be, header_, sizeof(len_be));
      header_fill_ = 0;
      frame_bytes_ = be32toh(len_be);
      if (frame_bytes_ > max_frame_bytes_) {
        failed_ = true;
        sink.OnFrameTooLarge(frame_bytes_);
        return;
      }
      have_header_ = true;
    }
    const size_t missing = frame_bytes_ - body_.size();
    if (body_.empty() && data.size() >= missing) {  // whole body here: no copy
      absl::string_view body = data.substr(0, missing);
      data.remove_prefix(missing);
      have_header_ = false;
      sink.OnFrame(body);
      continue;
    }
    const size_t take = std::min(data.size(), missing);
    body_.append(data.data(), take);
    data.remove_prefix(take);
    if (body_.size() < frame_bytes_) return;
    std::string body = std::move(body_);
    body_.clear();
    have_header_ = false;
    sink.OnFrame(body);
  }
}

}  // namespace zb
