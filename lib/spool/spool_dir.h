#pragma once
// The spool folder itself: who has it open, and who may read it.

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace zb {

// While alive, marks the spool at a path open in this process.
class SpoolClaim {
 public:
  ~SpoolClaim();
  SpoolClaim(const SpoolClaim&) = delete;
  SpoolClaim& operator=(const SpoolClaim&) = delete;

 private:
  friend absl::StatusOr<std::unique_ptr<SpoolClaim>> ClaimSpool(const std::string& path);
  explicit SpoolClaim(std::string key) : key_(std::move(key)) {}
  std::string key_;
};

// Claims the spool at `path` for this process, or fails with
// FailedPreconditionError("spool <path> is in use by pid N ...") when this
// process or another one has it open. Another process is found by the lock
// RocksDB holds on <path>/LOCK (an fcntl lock: F_OFD_GETLK names its pid).
// Touches nothing in the folder. Opening the spool must follow while the
// claim is held; RocksDB's own lock then keeps other processes out.
absl::StatusOr<std::unique_ptr<SpoolClaim>> ClaimSpool(const std::string& path);

// The FailedPreconditionError of ClaimSpool when another process holds
// <path>/LOCK now, else ok (for a RocksDB open that failed on the lock).
absl::Status CheckNotLockedByAnother(const std::string& path);

// Creates `path` (its parents with the usual mode) as a folder with mode
// 0700 whatever the umask, or tightens an existing one that group or others
// could reach to 0700, logging it. Fails when the result is not private.
absl::Status MakePrivateDir(const std::string& path);

// Whether the folder at `path` may hold a spool: missing or empty (*empty
// true), or holding RocksDB's CURRENT file. A folder that holds anything
// else is DataLossError ("damaged or not a spool": it is never initialized
// over), a file where the folder should be FailedPreconditionError.
absl::Status CheckNotDamagedOrForeign(const std::string& path, bool* empty);

// Mode of the spool's own files (watermark).
inline constexpr unsigned kSpoolFileMode = 0600;

}  // namespace zb
