#include "spool/spool_dir.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <optional>
#include <set>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace zb {
namespace {

std::mutex& ClaimsMutex() {
  static std::mutex mu;
  return mu;
}
std::set<std::string>& Claims() {
  static std::set<std::string> claims;
  return claims;
}

std::string ClaimKey(const std::string& path) {
  std::error_code ec;
  std::filesystem::path p = std::filesystem::weakly_canonical(path, ec);
  if (ec) p = std::filesystem::absolute(path, ec).lexically_normal();
  std::string key = p.string();
  while (key.size() > 1 && key.back() == '/') key.pop_back();
  return key;
}

absl::Status InUse(const std::string& path, pid_t pid, bool this_process) {
  if (this_process) {
    return absl::FailedPreconditionError(
        absl::StrCat("spool ", path, " is in use by pid ", pid, " (this process): it is open already"));
  }
  const std::string who = pid > 0 ? absl::StrCat("pid ", pid) : "another process (its pid is not visible from here)";
  return absl::FailedPreconditionError(absl::StrCat(
      "spool ", path, " is in use by ", who,
      ": another zerobusd has it open. Stop that one first, or give this one its own spool.path"));
}

// The pid holding a lock on <path>/LOCK (0 when not visible, e.g. another
// pid namespace), or nullopt when nobody does or it cannot be told.
// REQUIRES: this process holds no lock on that file (closing our descriptor
// would drop it: fcntl locks belong to the process).
std::optional<pid_t> LockHolder(const std::string& path) {
  const std::string lock_path = path + "/LOCK";
  const int fd = ::open(lock_path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) return std::nullopt;
  struct flock fl {};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  int r = ::fcntl(fd, F_OFD_GETLK, &fl);
  if (r != 0 && errno == EINVAL) {  // a kernel without OFD locks
    fl = {};
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    r = ::fcntl(fd, F_GETLK, &fl);
  }
  ::close(fd);
  if (r != 0 || fl.l_type == F_UNLCK) return std::nullopt;
  return fl.l_pid > 0 ? fl.l_pid : 0;  // an OFD lock reports -1
}

std::string Octal(mode_t mode) {
  char buf[8];
  std::snprintf(buf, sizeof(buf), "%04o", static_cast<unsigned>(mode & 07777));
  return buf;
}

}  // namespace

SpoolClaim::~SpoolClaim() {
  std::lock_guard<std::mutex> lock(ClaimsMutex());
  Claims().erase(key_);
}

absl::StatusOr<std::unique_ptr<SpoolClaim>> ClaimSpool(const std::string& path) {
  std::string key = ClaimKey(path);
  std::lock_guard<std::mutex> lock(ClaimsMutex());
  // Only this process may look at the LOCK file of a spool it does not hold:
  // the check below closes a descriptor of it.
  if (Claims().count(key) > 0) return InUse(path, ::getpid(), /*this_process=*/true);
  if (std::optional<pid_t> holder = LockHolder(path)) return InUse(path, *holder, /*this_process=*/false);
  Claims().insert(key);
  return std::unique_ptr<SpoolClaim>(new SpoolClaim(std::move(key)));
}

absl::Status CheckNotLockedByAnother(const std::string& path) {
  if (std::optional<pid_t> holder = LockHolder(path)) return InUse(path, *holder, /*this_process=*/false);
  return absl::OkStatus();
}

absl::Status MakePrivateDir(const std::string& path) {
  namespace fs = std::filesystem;
  const fs::path dir(path);
  std::error_code ec;
  if (dir.has_parent_path()) fs::create_directories(dir.parent_path(), ec);
  if (ec) return absl::UnavailableError(absl::StrCat("cannot create spool folder ", path, ": ", ec.message()));
  bool created = false;
  if (::mkdir(path.c_str(), 0700) == 0) {
    created = true;
  } else if (errno != EEXIST) {
    return absl::UnavailableError(absl::StrCat("cannot create spool folder ", path, ": ", std::strerror(errno)));
  }
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    return absl::UnavailableError(absl::StrCat("cannot stat spool folder ", path, ": ", std::strerror(errno)));
  }
  if (!S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat("spool.path ", path, " exists and is not a folder"));
  }
  const mode_t before = st.st_mode & 07777;
  // A new folder: the umask may have taken bits of 0700 too.
  if (created || (before & 077) != 0) {
    if (::chmod(path.c_str(), 0700) != 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "spool folder ", path, " has mode ", Octal(before), " (group or others can reach the records in it) and ",
          "cannot be made 0700: ", std::strerror(errno), ". Fix it with `chmod 0700 ", path, "` as its owner"));
    }
    if (!created) {
      spdlog::warn("spool folder {} had mode {}: group or others could reach the records in it; it is 0700 now",
                   path, Octal(before));
    }
    if (::stat(path.c_str(), &st) != 0) {
      return absl::UnavailableError(absl::StrCat("cannot stat spool folder ", path, ": ", std::strerror(errno)));
    }
  }
  if ((st.st_mode & 077) != 0) {
    return absl::FailedPreconditionError(absl::StrCat("spool folder ", path, " is mode ", Octal(st.st_mode),
                                                      " after chmod 0700: it cannot be made private"));
  }
  return absl::OkStatus();
}

absl::Status CheckNotDamagedOrForeign(const std::string& path, bool* empty) {
  namespace fs = std::filesystem;
  std::error_code ec;
  *empty = true;
  if (!fs::exists(path, ec)) return absl::OkStatus();
  if (!fs::is_directory(path, ec)) {
    return absl::FailedPreconditionError(absl::StrCat("spool.path ", path, " exists and is not a folder"));
  }
  bool has_current = false;
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(path, ec)) {
    const std::string name = entry.path().filename().string();
    names.push_back(name);
    if (name == "CURRENT") has_current = true;
  }
  if (ec) return absl::UnavailableError(absl::StrCat("cannot list spool folder ", path, ": ", ec.message()));
  *empty = names.empty();
  if (!names.empty() && !has_current) {
    return absl::DataLossError(absl::StrCat(
        "spool at ", path, " holds ", names.size(), " file(s) (e.g. ", names.front(),
        ") but no CURRENT file: it is damaged or not a spool. It was left untouched; zerobusd never starts a new "
        "spool over existing data. Inspect it with `zerobusctl spool verify --path ", path,
        "`, or move it away to start empty"));
  }
  return absl::OkStatus();
}

}  // namespace zb
