#include "spool/write_queue.h"

#include <utility>

namespace zb {

void WriteQueue::Push(WriteRequest request) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(std::move(request));
  }
  cv_.notify_one();
}

void WriteQueue::Close() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
  }
  cv_.notify_all();
}

WriteQueue::Next WriteQueue::Take(std::optional<std::chrono::milliseconds> poll) {
  Next next;
  std::unique_lock<std::mutex> lock(mu_);
  const auto ready = [this] { return closed_ || !queue_.empty(); };
  if (poll) {
    cv_.wait_for(lock, *poll, ready);
  } else {
    cv_.wait(lock, ready);
  }
  if (queue_.empty()) {
    next.closed = closed_;
    return next;
  }
  uint64_t bytes = 0;
  while (!queue_.empty() && (next.group.empty() || bytes < max_group_bytes_)) {
    WriteRequest& front = queue_.front();
    if (auto* append = std::get_if<AppendRequest>(&front)) {
      if (append->records) {
        for (const auto& record : *append->records) bytes += record.size();
      }
      next.group.emplace_back(std::move(*append));
    } else if (auto* del = std::get_if<DeleteRequest>(&front)) {
      next.group.emplace_back(std::move(*del));
    } else if (next.group.empty()) {
      next.alone = std::move(front);
      queue_.pop_front();
      break;
    } else {
      break;  // it commits alone, after this group
    }
    queue_.pop_front();
  }
  return next;
}

}  // namespace zb
