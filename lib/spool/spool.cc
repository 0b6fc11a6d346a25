#include "spool/spool.h"

#include <future>

namespace zb {

absl::StatusOr<AppendResult> Spool::Append(const std::string& lane, std::vector<std::string> records) {
  std::promise<absl::StatusOr<AppendResult>> done;
  auto result = done.get_future();
  AppendAsync(lane, std::move(records), [&done](absl::StatusOr<AppendResult> r) { done.set_value(std::move(r)); });
  return result.get();
}

absl::Status Spool::SetLaneDestination(const std::string& lane, std::string destination) {
  std::promise<absl::Status> done;
  auto result = done.get_future();
  SetLaneDestinationAsync(lane, std::move(destination), [&done](absl::Status s) { done.set_value(std::move(s)); });
  return result.get();
}

absl::Status Spool::DeleteUpTo(const std::string& lane, SeqNo up_to) {
  std::promise<absl::Status> done;
  auto result = done.get_future();
  DeleteUpToAsync(lane, up_to, [&done](absl::Status s) { done.set_value(std::move(s)); });
  return result.get();
}

absl::Status Spool::DeleteRange(const std::string& lane, SeqNo first, SeqNo last) {
  std::promise<absl::Status> done;
  auto result = done.get_future();
  DeleteRangeAsync(lane, first, last, [&done](absl::Status s) { done.set_value(std::move(s)); });
  return result.get();
}

absl::Status Spool::MoveToDeadLetters(const std::string& lane, SeqNo seq, DeadLetterInfo info) {
  std::promise<absl::Status> done;
  auto result = done.get_future();
  MoveToDeadLettersAsync(lane, seq, std::move(info), [&done](absl::Status s) { done.set_value(std::move(s)); });
  return result.get();
}

absl::StatusOr<std::vector<DeadLetter>> Spool::ListDeadLetters(const DeadLetterFilter& filter, uint64_t from_id,
                                                                   size_t limit) {
  std::promise<absl::StatusOr<std::vector<DeadLetter>>> done;
  auto result = done.get_future();
  ListDeadLettersAsync(filter, from_id, limit,
                       [&done](absl::StatusOr<std::vector<DeadLetter>> r) { done.set_value(std::move(r)); });
  return result.get();
}

absl::StatusOr<std::map<std::string, AppendResult>> Spool::ReplayDeadLetters(const DeadLetterFilter& filter) {
  std::promise<absl::StatusOr<std::map<std::string, AppendResult>>> done;
  auto result = done.get_future();
  ReplayDeadLettersAsync(filter, [&done](absl::StatusOr<std::map<std::string, AppendResult>> r) {
    done.set_value(std::move(r));
  });
  return result.get();
}

absl::StatusOr<uint64_t> Spool::PurgeDeadLetters(const DeadLetterFilter& filter) {
  std::promise<absl::StatusOr<uint64_t>> done;
  auto result = done.get_future();
  PurgeDeadLettersAsync(filter, [&done](absl::StatusOr<uint64_t> r) { done.set_value(std::move(r)); });
  return result.get();
}

}  // namespace zb
