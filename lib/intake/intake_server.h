#pragma once
// The producer-facing Unix socket. Two protocols share one socket; the first
// byte decides (docs/intake-protocol.md):
//  - line mode: NDJSON, one record per line, "@route NAME" selects the route;
//    the daemon answers "ok N" (every record line <= N not rejected is
//    durable) and "error N reason" per rejected line;
//  - framed mode (first byte 0x00): length-prefixed intake.proto frames;
//    every Batch gets ACK(seq) once durable, or NACK(seq, reason).
// A connection's replies are sent in the order of its input. A connection
// stops being read while more than max_inflight_bytes of its input is waiting
// for the spool (credit window), so memory is bounded by configuration.

#include <sys/types.h>

#include <utility>  // before Asio (Boost 1.74 quirk with C++20)

#include <boost/asio/io_context.hpp>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "metrics/metrics.h"
#include "schema/record_codec.h"
#include "spool/spool.h"

namespace zb {

struct IntakeRoute {
  std::string name;
  // The spool lane its records go to: one per (route, destination), so
  // records accepted for one table never drain to another. Empty: `name`.
  std::string lane;
  std::shared_ptr<const RecordCodec> codec;
  std::vector<uint32_t> allow_uids;  // both empty: any peer may write
  std::vector<uint32_t> allow_gids;
  // The route's series, resolved once by whoever builds the table (must
  // outlive it); null: looked up by name on every use.
  RouteMetrics* metrics = nullptr;
};
using IntakeRouteTable = std::map<std::string, IntakeRoute>;

struct IntakeOptions {
  std::string socket_path;
  uint32_t socket_mode = 0600;
  int64_t socket_gid = -1;  // the producers' group (intake.socket_group); -1: leave it
  size_t max_record_bytes = 1u << 20;
  // Per connection: input read but not yet durable, and replies not yet
  // read by the producer; past either, the socket is not read.
  size_t max_inflight_bytes = 2u << 20;
  // All connections together: input held in memory (unfinished lines and
  // frames, records waiting for the spool) and unread replies. A read is
  // made only when its bytes fit; a frame is admitted whole as soon as its
  // header arrives, before its body is read.
  size_t max_buffered_bytes = 128u << 20;
  uint32_t max_connections = 1024;
  // A record or frame that has started must be complete this long after
  // its first byte; a connection waiting this long for memory while holding
  // an unfinished one, or a producer not reading its replies for this long,
  // is closed too. 0: no deadline.
  uint32_t read_timeout_ms = 30'000;
  // A connection with nothing unfinished and nothing to answer is closed
  // after this long without input. 0: never.
  uint32_t idle_timeout_ms = 600'000;
  // A full spool (ResourceExhausted): true holds the records and stops
  // reading until they fit (framed producers that said no_wait get NACK
  // BUSY); false answers "spool full" at once.
  bool block_when_full = true;
  // Bytes asked of the socket per read (tests make it tiny to split lines).
  size_t read_chunk_bytes = 64 * 1024;
};

// Lives on the event loop: every method is called on the loop thread, and so
// are the callbacks it makes. Each method checks it (ZB_CHECK_ON_LOOP, in
// every build), and so does the spool's answer to each append. Destroy it on
// the loop or once no thread runs the loop.
class IntakeServer {
 public:
  virtual ~IntakeServer() = default;

  // Replaces the routing table for input read from now on (SIGHUP reload).
  virtual void SetRoutes(std::shared_ptr<const IntakeRouteTable> routes) = 0;
  // Stops accepting and reading; input already read is still spooled and
  // answered, then each connection closes.
  virtual void StopAccepting() = 0;
  virtual size_t connection_count() const = 0;
  // Bytes held against IntakeOptions::max_buffered_bytes now.
  virtual size_t buffered_bytes() const = 0;
};

// Binds `options.socket_path` (see ListenOnUnixSocket: never over a live
// socket) and starts accepting on `loop`. At max_connections a new
// connection displaces the one idle the longest, or is refused when none is
// idle. `spool`, `metrics` and
// `loop` must outlive the server. Call it on the loop, or before any
// thread runs `loop`.
absl::StatusOr<std::unique_ptr<IntakeServer>> StartIntakeServer(boost::asio::io_context& loop,
                                                                const IntakeOptions& options,
                                                                std::shared_ptr<const IntakeRouteTable> routes,
                                                                Spool& spool, Metrics& metrics);

}  // namespace zb
