#pragma once
// Binding a listening Unix stream socket the way both of the daemon's
// sockets (intake, control) need it.

#include <utility>  // before Asio (Boost 1.74 quirk with C++20)

#include <boost/asio/local/stream_protocol.hpp>
#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace zb {

// Creates the parent folder, replaces a stale socket file of an earlier run
// (but refuses any other kind of file there), binds, listens and sets the
// file's mode. `key` names the config key in errors ("intake.socket").
absl::Status ListenOnUnixSocket(boost::asio::local::stream_protocol::acceptor& acceptor, const std::string& path,
                                uint32_t mode, const std::string& key);

}  // namespace zb
