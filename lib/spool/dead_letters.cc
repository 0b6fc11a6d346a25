#include "spool/dead_letters.h"

#include <future>

namespace zb {

absl::Status DeadLetters::Move(const std::string& lane, SeqNo seq, DeadLetterInfo info) {
  std::promise<absl::Status> done;
  auto result = done.get_future();
  MoveAsync(lane, seq, std::move(info), [&done](absl::Status s) { done.set_value(std::move(s)); });
  return result.get();
}

absl::StatusOr<std::vector<DeadLetter>> DeadLetters::List(const DeadLetterFilter& filter, uint64_t from_id,
                                                          size_t limit) {
  std::promise<absl::StatusOr<std::vector<DeadLetter>>> done;
  auto result = done.get_future();
  ListAsync(filter, from_id, limit,
            [&done](absl::StatusOr<std::vector<DeadLetter>> r) { done.set_value(std::move(r)); });
  return result.get();
}

absl::StatusOr<std::map<std::string, AppendResult>> DeadLetters::Replay(const DeadLetterFilter& filter) {
  std::promise<absl::StatusOr<std::map<std::string, AppendResult>>> done;
  auto result = done.get_future();
  ReplayAsync(filter,
              [&done](absl::StatusOr<std::map<std::string, AppendResult>> r) { done.set_value(std::move(r)); });
  return result.get();
}

absl::StatusOr<uint64_t> DeadLetters::Purge(const DeadLetterFilter& filter) {
  std::promise<absl::StatusOr<uint64_t>> done;
  auto result = done.get_future();
  PurgeAsync(filter, [&done](absl::StatusOr<uint64_t> r) { done.set_value(std::move(r)); });
  return result.get();
}

}  // namespace zb
