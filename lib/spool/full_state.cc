#include "spool/full_state.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/match.h"
#include "spdlog/spdlog.h"

namespace zb {

FullState::FullState(std::string path, Room room) : path_(std::move(path)), room_(std::move(room)) {}

bool FullState::NoteRefusal(const absl::Status& why, bool disk, uint64_t need) {
  const bool entered = !full_.load();
  if (entered) {
    by_cap_ = false;
    cap_need_ = 0;
    by_disk_ = false;
    disk_need_ = 0;
    since_ = std::chrono::steady_clock::now();
    full_ = true;
    std::string reason(why.message());
    for (const char* prefix : {"spool full (disk full): ", "spool full: "}) {
      if (absl::StartsWith(reason, prefix)) reason.erase(0, std::strlen(prefix));
    }
    spdlog::warn("spool {} is full: {}. Records that do not fit wait (when_full: block) or are refused until there "
                 "is room",
                 path_, reason);
  }
  left_ = false;
  fit_ = false;
  if (disk) {
    by_disk_ = true;
    disk_need_ = std::max(disk_need_, need);
  } else {
    by_cap_ = true;
    cap_need_ = std::max(cap_need_, need);
  }
  return entered;
}

bool FullState::Fits(uint64_t payload_bytes, uint64_t free_bytes_needed) const {
  return full_.load() && payload_bytes >= cap_need_ && free_bytes_needed >= disk_need_;
}

bool FullState::MaybeLeave(bool parked_went_in) {
  if (!full_.load()) return false;
  if (!parked_went_in && !fit_) {
    if (!left_) return false;
    if (by_cap_ && room_.max_bytes > 0 && !room_.drop_oldest &&
        room_.total_bytes() + cap_need_ > room_.max_bytes) {
      return false;
    }
    if (by_disk_ && room_.free_bytes() < disk_need_) return false;
  }
  full_ = false;
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - since_).count();
  spdlog::info("spool {} has room again after {:.1f} s: records are taken again", path_, seconds);
  return true;
}

}  // namespace zb
