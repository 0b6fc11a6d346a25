#include "spool/space_guard.h"

#include <sys/statvfs.h>

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace zb {
namespace {

// WAL framing (a 7-byte header per 32 KiB block, the block padding, the
// batch header) and the metadata RocksDB writes beside a commit, with room
// to spare.
constexpr uint64_t kWriteSlack = 64u << 10;

}  // namespace

SpaceGuard::SpaceGuard(std::string path, uint64_t min_free_bytes, uint64_t reserve_bytes,
                       std::function<uint64_t()> probe)
    : path_(std::move(path)),
      min_free_bytes_(min_free_bytes),
      reserve_bytes_(std::min(reserve_bytes, min_free_bytes)),
      probe_(std::move(probe)) {}

uint64_t SpaceGuard::FreeBytes() const {
  if (probe_) return probe_();
  struct statvfs st {};
  if (statvfs(path_.c_str(), &st) != 0) return 0;
  return static_cast<uint64_t>(st.f_bavail) * st.f_frsize;
}

uint64_t SpaceGuard::Cost(uint64_t batch_bytes) { return 2 * batch_bytes + kWriteSlack; }

uint64_t SpaceGuard::Need(Write kind, uint64_t batch_bytes) const {
  return (kind == Write::kGrow ? min_free_bytes_ : reserve_bytes_) + Cost(batch_bytes);
}

absl::Status SpaceGuard::Check(Write kind, uint64_t free, uint64_t batch_bytes) const {
  if (!enabled() || free >= Need(kind, batch_bytes)) return absl::OkStatus();
  const uint64_t cost = Cost(batch_bytes);
  if (kind == Write::kGrow) {
    return absl::ResourceExhaustedError(absl::StrCat("spool full: the filesystem of ", path_, " has ", free,
                                                     " bytes free; taking ", cost,
                                                     " more would leave less than spool.min_free_bytes (",
                                                     min_free_bytes_, ")"));
  }
  return absl::ResourceExhaustedError(absl::StrCat(
      "spool full: the filesystem of ", path_, " has ", free, " bytes free; even a write that frees or keeps space (", cost,
      " bytes) would leave less than the ", reserve_bytes_,
      " bytes RocksDB needs for its memtable flushes and WAL (spool.min_free_bytes is ", min_free_bytes_, ")"));
}

}  // namespace zb
