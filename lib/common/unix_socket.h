#pragma once
// Binding a listening Unix stream socket the way both of the daemon's
// sockets (intake, control) need it: never taking over a live socket, the
// mode and group set before anyone can connect, and removed at exit only if
// the path still names the socket this process made.

#include <sys/types.h>

#include <utility>  // before Asio (Boost 1.74 quirk with C++20)

#include <boost/asio/local/stream_protocol.hpp>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace zb {

// The socket file a listener made: its path and identity, and the lock
// (flock on PATH.lock, held while the listener lives) that keeps two
// starting daemons from both deciding the path is free.
struct OwnedSocketPath {
  std::string path;
  dev_t dev = 0;
  ino_t ino = 0;
  int lock_fd = -1;
};

// Creates the parent folder (0755 if missing), takes PATH.lock, refuses a
// path where a live process answers ("in use") or where any other kind of
// file is, or whose state cannot be told, binds
// under a temporary name in the same folder, sets `mode` and, when `gid` is
// not -1, the group, listens, and only then renames it into place (over a
// stale socket of an earlier run). Every step's result is checked. `key`
// names the config key in errors ("intake.socket").
absl::StatusOr<OwnedSocketPath> ListenOnUnixSocket(boost::asio::local::stream_protocol::acceptor& acceptor,
                                                   const std::string& path, uint32_t mode, int64_t gid,
                                                   const std::string& key);

// Whether a process accepts connections on the socket at `path` now: true,
// false (nothing there, or a stale socket that refuses), or an error when
// that cannot be told (e.g. no permission to connect).
absl::StatusOr<bool> UnixSocketIsLive(const std::string& path);

// Unlinks `owned.path` if it is still the socket this process bound (another
// daemon may have replaced it since), and releases the lock. Safe on a
// default-constructed value.
void RemoveOwnedSocket(const OwnedSocketPath& owned);

}  // namespace zb
