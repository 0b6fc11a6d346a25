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

}  // namespace zb
