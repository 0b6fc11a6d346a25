#pragma once
// How the daemon's accept loops (intake, control, metrics) read an accept
// error: back off, retry at once, or count it under a name.

#include <cerrno>
#include <string>

#include <utility>  // before Asio (Boost 1.74 quirk with C++20)

#include <boost/asio/error.hpp>
#include <boost/system/error_code.hpp>

namespace zb {

// No descriptor or memory for a new socket now: the connection waits in the
// backlog, and accepting again at once would spin.
inline bool IsResourceExhaustion(const boost::system::error_code& ec) {
  if (ec.category() != boost::system::system_category()) return false;
  const int e = ec.value();
  return e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM;
}

// One connection went away before it was accepted: accept the next at once.
inline bool IsPerConnection(const boost::system::error_code& ec) {
  namespace error = boost::asio::error;
  return ec == error::connection_aborted || ec == error::interrupted || ec == error::try_again ||
         ec == error::would_block || (ec.category() == boost::system::system_category() && ec.value() == EPROTO);
}

// The `error` label of zerobusd_accept_errors_total.
inline std::string AcceptErrorName(const boost::system::error_code& ec) {
  if (ec.category() == boost::system::system_category()) {
    switch (ec.value()) {
      case EMFILE: return "EMFILE";
      case ENFILE: return "ENFILE";
      case ENOBUFS: return "ENOBUFS";
      case ENOMEM: return "ENOMEM";
      case ECONNABORTED: return "ECONNABORTED";
      case EPROTO: return "EPROTO";
      case EPERM: return "EPERM";
      default: break;
    }
  }
  return "other";
}

}  // namespace zb
