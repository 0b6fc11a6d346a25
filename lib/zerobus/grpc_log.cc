#include "zerobus/grpc_log.h"

#include <grpc/support/log.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "common/log_limiter.h"
#include "common/redact.h"
#include "spdlog/spdlog.h"

namespace zb {
namespace {

using Clock = std::chrono::steady_clock;

struct State {
  std::mutex mu;
  // Set by OnExit: from then on, spdlog's registry may be destroyed under
  // us, so it is not touched again.
  bool exiting = false;  // guarded by mu
  // One limiter per gRPC call site, "file:line". gRPC's sources hold a
  // bounded number of them, so the map stays small.
  std::unordered_map<std::string, std::unique_ptr<RateLimitedLog>> sites;  // guarded by mu
  // No secrets of its own: masks credential-shaped values (Authorization
  // headers in an http trace, bearer tokens, JWTs). Immutable.
  const Redactor redactor;
  std::atomic<GrpcLogNow> now{nullptr};
};

// Created on first use and never destroyed, on purpose: gRPC's threads may
// log at any time, also while exit() runs static destructors (the daemon's
// own exit is _Exit, but a failed start or a test binary ends with exit),
// and a destroyed mutex or map under them would crash the process at its
// very end. A pointer has nothing to destroy; the OS takes the memory.
State& TheState() {
  static State* const state = new State();
  return *state;
}

spdlog::level::level_enum LevelFor(gpr_log_severity severity) {
  switch (severity) {
    case GPR_LOG_SEVERITY_ERROR: return spdlog::level::warn;
    case GPR_LOG_SEVERITY_INFO: return spdlog::level::debug;
    case GPR_LOG_SEVERITY_DEBUG: return spdlog::level::trace;
  }
  return spdlog::level::warn;
}

// Last resort once spdlog cannot be used: one write(2) per line, no stdio
// buffer or lock that exit may be tearing down.
void WriteToStderr(std::string line) {
  line += '\n';
  const char* p = line.data();
  size_t left = line.size();
  while (left > 0) {
    const ssize_t n = ::write(STDERR_FILENO, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    p += n;
    left -= static_cast<size_t>(n);
  }
}

// gpr_log_func: any gRPC thread, any time.
void Forward(gpr_log_func_args* args) {
  State& st = TheState();
  const char* file = args->file != nullptr ? args->file : "?";
  const char* message = args->message != nullptr ? args->message : "";
  const spdlog::level::level_enum level = LevelFor(args->severity);
  const GrpcLogNow now_fn = st.now.load(std::memory_order_acquire);
  const Clock::time_point now = now_fn != nullptr ? now_fn() : Clock::now();
  std::string site = absl::StrCat(file, ":", args->line);
  std::shared_ptr<spdlog::logger> logger;
  uint64_t suppressed = 0;
  {
    // Held only while spdlog's registry is read (never while writing), so
    // OnExit waits at most for that, never for a stuck sink.
    std::lock_guard<std::mutex> lock(st.mu);
    // The copy keeps the logger and its sinks alive while we write, even
    // if the registry drops it meanwhile. Null after spdlog::shutdown().
    if (!st.exiting) logger = spdlog::default_logger();
    if (logger != nullptr && !logger->should_log(level)) return;
    auto& limiter = st.sites[site];
    if (limiter == nullptr) limiter = std::make_unique<RateLimitedLog>(kGrpcLogInterval);
    if (!limiter->ShouldLog(now, &suppressed)) return;
  }
  std::string line = absl::StrCat("grpc: ", site, ": ", st.redactor.Redact(message));
  if (suppressed > 0) absl::StrAppend(&line, " (", suppressed, " more from this site since the last report)");
  if (logger != nullptr) {
    logger->log(level, "{}", line);
  } else {
    WriteToStderr(std::move(line));
  }
}

// Registered after spdlog's registry was constructed, so exit() runs it
// before the registry's destructor: no Forward touches the registry after.
void OnExit() {
  State& st = TheState();
  std::lock_guard<std::mutex> lock(st.mu);
  st.exiting = true;
}

}  // namespace

void RouteGrpcLoggingToSpdlog() {
  // A once_flag has nothing to destroy either.
  static std::once_flag installed;
  std::call_once(installed, [] {
    TheState();
    (void)spdlog::default_logger();  // constructs spdlog's registry before OnExit is registered
    std::atexit(&OnExit);
    gpr_set_log_function(&Forward);
  });
  // gRPC formats a line before handing it over; its verbosity keeps it
  // from formatting what spdlog would drop anyway. An explicit
  // GRPC_VERBOSITY (read by grpc_init only while none is set) wins.
  if (std::getenv("GRPC_VERBOSITY") != nullptr) return;
  const auto logger = spdlog::default_logger();
  const spdlog::level::level_enum level = logger != nullptr ? logger->level() : spdlog::level::info;
  gpr_set_log_verbosity(level <= spdlog::level::trace   ? GPR_LOG_SEVERITY_DEBUG
                        : level <= spdlog::level::debug ? GPR_LOG_SEVERITY_INFO
                                                        : GPR_LOG_SEVERITY_ERROR);
}

void SetGrpcLogClockForTest(GrpcLogNow now) { TheState().now.store(now, std::memory_order_release); }

}  // namespace zb
