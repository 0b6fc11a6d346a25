#pragma once
// gRPC's own log lines (gpr_log: TLS handshake failures, name resolution,
// subchannel errors) are written by the library straight to stderr, outside
// the daemon's log format, levels and rate limits: a route whose server
// certificate has expired gets about 12 of them a minute. This routes them
// through spdlog's default logger instead:
//
//   gRPC severity          spdlog level
//   GPR_LOG_SEVERITY_ERROR warn   (the daemon reports a failure in its own
//                                  words; gRPC's line is supporting detail)
//   GPR_LOG_SEVERITY_INFO  debug
//   GPR_LOG_SEVERITY_DEBUG trace
//
// Each line reads "grpc: <file>:<line>: <message>", with credential-shaped
// values masked (Redactor: an Authorization header in an http trace, a
// bearer token). Each call site (file:line) logs at most one line per
// kGrpcLogInterval; the next one after a quiet stretch says how many were
// suppressed since the last: "(N more from this site since the last
// report)". Lines below spdlog's level are dropped before they are counted.

#include <chrono>

namespace zb {

// The least time between two lines from one gRPC call site.
inline constexpr std::chrono::seconds kGrpcLogInterval{30};

// Installs the route (once; later calls only do the verbosity part below)
// and sets gRPC's verbosity from spdlog's current level, so gRPC does not
// even format what spdlog would drop: trace lets gRPC's DEBUG through,
// debug its INFO, anything else only its ERROR. When GRPC_VERBOSITY is set
// in the environment, the operator chose, and it is left alone. Call again
// after changing spdlog's level to let gRPC follow.
//
// Call at daemon start, before the first channel, from any thread;
// thread-safe and idempotent. The installed function is safe on any gRPC
// thread at any time, also during and after process exit: its state is
// never destroyed (leaked on purpose), and once exit has begun (an atexit
// handler, run before spdlog's registry is destroyed) or spdlog has been
// shut down (spdlog::shutdown), lines go, still rate-limited, to stderr.
void RouteGrpcLoggingToSpdlog();

// For tests: the clock the per-site limits read (steady_clock::now when
// null). Any thread; `now` must be safe to call from any thread.
using GrpcLogNow = std::chrono::steady_clock::time_point (*)();
void SetGrpcLogClockForTest(GrpcLogNow now);

}  // namespace zb
