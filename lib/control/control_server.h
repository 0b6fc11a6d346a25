#pragma once
// The operator's Unix socket (control.socket): newline-delimited JSON, one
// request per line, one reply line per request, in order. The server only
// frames and guards; what a request means is the handler's business (the
// daemon wires it to the dead-letter store and the lanes).
//
// Guard: the socket file's mode (default 0600), and a peer-credential check
// that admits only root and the daemon's own user. Against a hostile or
// careless local client: at most `max_connections` at once (past it, the
// connection idle the longest makes room; when none is idle, the new one
// is answered with one busy line, {"ok":false,"error":"busy: ..."}, written
// without waiting, and closed; refusals are logged as one line at most
// every 5 s saying how many there were), a deadline on every request line
// and reply write, and an accept loop that never stops: out of descriptors
// (EMFILE, ENFILE) or memory (ENOBUFS, ENOMEM), it retries after 100 ms
// doubling to 1 s. Such conditions are logged as one summary line at most
// every 5 s.

#include <sys/types.h>

#include <utility>  // before Asio (Boost 1.74 quirk with C++20)

#include <boost/asio/io_context.hpp>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace zb {

struct ControlOptions {
  std::string socket_path;
  uint32_t socket_mode = 0600;
  size_t max_request_bytes = 1 << 20;
  uint32_t max_connections = 16;
  // A connection is closed when a whole request line has not arrived this
  // long after it was accepted or after its last reply was written, or when
  // a reply has not been taken by the client this long. The time a handler
  // takes to answer does not count. 0: no deadline.
  uint32_t read_timeout_ms = 30'000;
  // Optional; called on the loop thread for every failed accept with the
  // errno name ("EMFILE", "ENFILE", "ENOBUFS", "ENOMEM", ...), e.g. to count
  // it in zerobusd_accept_errors_total{listener="control"}.
  std::function<void(const std::string& error)> on_accept_error;
};

// Lives on the event loop: its I/O runs there, and so does every call it
// makes into its owner (the handler, on_accept_error), each checked
// (ZB_CHECK_ON_LOOP, in every build). Destroy it on the loop or once no
// thread runs the loop.
class ControlServer {
 public:
  // Must be called exactly once, on the loop thread, possibly later (after
  // asynchronous work: have it answer on the loop, e.g. Spool's `on`);
  // called from another thread it aborts (ZB_CHECK_ON_LOOP) instead of
  // racing the connection.
  using Reply = std::function<void(std::string response_line)>;
  // Called on the loop thread.
  using Handler = std::function<void(const std::string& request_line, Reply reply)>;

  virtual ~ControlServer() = default;
};

// Binds `options.socket_path` (see ListenOnUnixSocket: never over a live
// socket; a stale one of an earlier run is replaced) and serves on `loop`;
// destruction removes the socket file only if it is still this server's.
// Call it on the loop, or before any thread runs `loop`; `loop` outlives
// the server.
absl::StatusOr<std::unique_ptr<ControlServer>> StartControlServer(boost::asio::io_context& loop,
                                                                  const ControlOptions& options,
                                                                  ControlServer::Handler handler);

}  // namespace zb
