#include "common/unix_socket.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"

namespace zb {
namespace {

std::string Errno(int e) { return std::strerror(e); }

}  // namespace

absl::StatusOr<bool> UnixSocketIsLive(const std::string& path) {
  sockaddr_un addr{};
  if (path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat(path, " is too long for a Unix socket path"));
  }
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.data(), path.size());
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return absl::UnavailableError(absl::StrCat("cannot make a socket: ", Errno(errno)));
  const int rc = connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
  const int err = errno;
  close(fd);
  // EAGAIN: a listener whose backlog is full is alive too.
  if (rc == 0 || err == EAGAIN || err == EINPROGRESS) return true;
  if (err == ECONNREFUSED || err == ENOENT) return false;
  return absl::FailedPreconditionError(
      absl::StrCat("cannot tell whether a process accepts connections on ", path, ": ", Errno(err)));
}

absl::StatusOr<OwnedSocketPath> ListenOnUnixSocket(boost::asio::local::stream_protocol::acceptor& acceptor,
                                                   const std::string& path, uint32_t mode, int64_t gid,
                                                   const std::string& key) {
  namespace fs = std::filesystem;
  const fs::path p(path);
  const fs::path dir = p.has_parent_path() ? p.parent_path() : fs::path(".");
  std::error_code fec;
  if (!fs::exists(dir, fec)) {
    fs::create_directories(dir, fec);
    if (fec) return absl::UnavailableError(absl::StrCat(key, ": cannot create ", dir.string(), ": ", fec.message()));
    if (chmod(dir.c_str(), 0755) != 0) {
      return absl::UnavailableError(absl::StrCat(key, ": cannot set the mode of ", dir.string(), ": ", Errno(errno)));
    }
  }
  if (path.size() >= sizeof(sockaddr_un::sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat(key, ": ", path, " is too long for a Unix socket path"));
  }
  // Held from the check to the rename and while this process listens: a
  // second daemon starting at the same moment waits here, then finds the
  // socket live.
  const std::string lock_path = path + ".lock";
  const int lock_fd = open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (lock_fd < 0) {
    return absl::UnavailableError(absl::StrCat(key, ": cannot open ", lock_path, ": ", Errno(errno)));
  }
  if (flock(lock_fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    close(lock_fd);
    return absl::FailedPreconditionError(absl::StrCat(
        key, ": ", path, " is in use: another process (a running zerobusd?) holds ", lock_path, " (",
        Errno(err), ")"));
  }
  auto unlock_on_error = [lock_fd](absl::Status s) {
    close(lock_fd);
    return s;
  };
  struct stat st{};
  if (lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return unlock_on_error(absl::FailedPreconditionError(absl::StrCat(key, ": ", path, " exists and is not a socket")));
    }
    auto live = UnixSocketIsLive(path);
    if (!live.ok()) return unlock_on_error(absl::FailedPreconditionError(absl::StrCat(key, ": ", live.status().message())));
    if (*live) {
      return unlock_on_error(absl::FailedPreconditionError(absl::StrCat(
          key, ": ", path, " is in use: another process (a running zerobusd?) accepts connections on it")));
    }
    // A stale socket of an earlier run: the rename below replaces it.
  }
  // Bound under a temporary name, so the socket is only reachable at `path`
  // once its mode and group are right (fchmod does not reach a bound
  // socket's file, and umask is process-wide).
  const std::string tmp = (dir / absl::StrCat(".zb", getpid(), ".sock")).string();
  if (tmp.size() >= sizeof(sockaddr_un::sun_path)) {
    return unlock_on_error(absl::InvalidArgumentError(
        absl::StrCat(key, ": the folder of ", path, " has too long a path to bind a socket in (",
                     tmp.size(), " bytes with the temporary name)")));
  }
  ::unlink(tmp.c_str());  // ours from a crashed start (the pid names it)
  boost::system::error_code ec;
  boost::asio::local::stream_protocol::endpoint ep(tmp);
  acceptor.open(ep.protocol(), ec);
  if (!ec) acceptor.bind(ep, ec);
  if (ec) {
    return unlock_on_error(
        absl::UnavailableError(absl::StrCat(key, ": cannot bind in ", dir.string(), ": ", ec.message())));
  }
  auto fail = [&](const std::string& what, int err) {
    ::unlink(tmp.c_str());
    boost::system::error_code ignored;
    acceptor.close(ignored);
    return unlock_on_error(absl::UnavailableError(absl::StrCat(key, ": cannot ", what, " ", path, ": ", Errno(err))));
  };
  if (chmod(tmp.c_str(), mode) != 0) return fail("set the mode of", errno);
  // The socket may be born with the group (the unit makes it the daemon's
  // primary group, and its system call filter has no chown).
  struct stat made{};
  if (gid >= 0 && (lstat(tmp.c_str(), &made) != 0 || made.st_gid != static_cast<gid_t>(gid)) &&
      chown(tmp.c_str(), static_cast<uid_t>(-1), static_cast<gid_t>(gid)) != 0) {
    return fail(absl::StrCat("give group ", gid, " (intake.socket_group) to"), errno);
  }
  acceptor.listen(boost::asio::socket_base::max_listen_connections, ec);
  if (ec) {
    const std::string why = ec.message();
    ::unlink(tmp.c_str());
    acceptor.close(ec);
    return unlock_on_error(absl::UnavailableError(absl::StrCat(key, ": cannot listen on ", path, ": ", why)));
  }
  if (rename(tmp.c_str(), path.c_str()) != 0) return fail("move the socket into place at", errno);
  if (lstat(path.c_str(), &st) != 0) return fail("stat", errno);
  return OwnedSocketPath{path, st.st_dev, st.st_ino, lock_fd};
}

void RemoveOwnedSocket(const OwnedSocketPath& owned) {
  if (owned.path.empty()) return;
  struct stat st{};
  if (lstat(owned.path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode) && st.st_dev == owned.dev &&
      st.st_ino == owned.ino) {
    ::unlink(owned.path.c_str());
  }
  // The lock file stays: unlinking it would let a third process lock a new
  // file while a second still holds the old one.
  if (owned.lock_fd >= 0) close(owned.lock_fd);
}

}  // namespace zb
