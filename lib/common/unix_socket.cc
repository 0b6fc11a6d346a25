#include "common/unix_socket.h"

#include <sys/stat.h>

#include <filesystem>

#include "absl/strings/str_cat.h"

namespace zb {

absl::Status ListenOnUnixSocket(boost::asio::local::stream_protocol::acceptor& acceptor, const std::string& path,
                                uint32_t mode, const std::string& key) {
  namespace fs = std::filesystem;
  std::error_code fec;
  const fs::path p(path);
  if (p.has_parent_path()) fs::create_directories(p.parent_path(), fec);
  struct stat st{};
  if (lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return absl::FailedPreconditionError(absl::StrCat(key, ": ", path, " exists and is not a socket"));
    }
    fs::remove(p, fec);  // stale socket of an earlier run
  }
  boost::system::error_code ec;
  boost::asio::local::stream_protocol::endpoint ep(path);
  acceptor.open(ep.protocol(), ec);
  if (!ec) acceptor.bind(ep, ec);
  if (!ec) acceptor.listen(boost::asio::socket_base::max_listen_connections, ec);
  if (ec) return absl::UnavailableError(absl::StrCat(key, ": cannot listen on ", path, ": ", ec.message()));
  chmod(path.c_str(), mode);
  return absl::OkStatus();
}

}  // namespace zb
