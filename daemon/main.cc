// zerobusd: durable Unix-socket -> RocksDB spool -> Databricks Zerobus daemon.

#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#ifdef ZEROBUSD_LEAK_CHECK_AT_EXIT
#include <sanitizer/lsan_interface.h>
#endif

#include "config/config.h"
#include "daemon/daemon.h"
#include "daemon/logging.h"
#include "spdlog/spdlog.h"
#include "zerobus/grpc_log.h"

namespace {

void Usage(FILE* out) {
  std::fprintf(out,
               "usage: zerobusd --config FILE [--check [--running]] [--log-level LEVEL]\n"
               "\n"
               "  --config FILE      YAML configuration (see zerobusd.example.yaml)\n"
               "  --check            validate the configuration and the host (free sockets and\n"
               "                     metrics port, descriptor limit) and exit (0: valid)\n"
               "  --running          with --check: the daemon is running (a reload check), so its\n"
               "                     own sockets and metrics port are expected to be in use\n"
               "  --log-level LEVEL  trace|debug|info|warn|error (overrides log_level)\n"
               "  --version          print the version\n");
}

// What the daemon frees goes back to the system (issue 8). glibc's mmap
// threshold is dynamic: it rises to the size of each large mapped block
// freed, up to 32 MiB. RocksDB's memtable blocks (1 MiB) and the spool's
// group-commit WriteBatches (up to 16 MiB) take it there within the first
// seconds of load; from then on such buffers are carved from malloc's arenas
// (8 per core), which keep what is freed and only grow towards the sum of
// their peaks. bench/route_soak.sh (200 routes x 5,000 records, drained to
// zero 30 times) found malloc holding 185-305 MiB free beside 67-127 MiB in
// use: RSS 304 MiB after round 1, 331-380 after rounds 10-30. With the
// threshold fixed at 1 MiB (setting it also freezes the trim threshold at
// its 128 KiB default), buffers of 1 MiB and more, memtable blocks included,
// are mappings of their own, unmapped when freed, and malloc keeps 46-72
// MiB free: RSS 165-175 MiB after rounds 3-30, ratio 0.48 over rounds 10-30
// (with the drained spool's memtable flush, lib/spool/spool_tidy.h).
// The price is page faults on fresh mappings: about 12 % more CPU for the
// daemon at full intake speed. Smaller buffers (records, requests of a few
// hundred KiB) stay in the arenas. An operator's own MALLOC_MMAP_THRESHOLD_
// (or glibc.malloc.mmap_threshold tunable) wins.
void KeepLargeBuffersOutOfTheArenas() {
  const char* tunables = std::getenv("GLIBC_TUNABLES");
  if (std::getenv("MALLOC_MMAP_THRESHOLD_") != nullptr ||
      (tunables != nullptr && std::strstr(tunables, "glibc.malloc.mmap_threshold") != nullptr)) {
    return;
  }
  mallopt(M_MMAP_THRESHOLD, 1 << 20);
}

}  // namespace

int main(int argc, char** argv) {
  KeepLargeBuffersOutOfTheArenas();
  // Stop and reload signals stay pending until the daemon's loop takes
  // them (RunDaemon unblocks them on this thread once it listens), so a
  // SIGTERM during start-up is honoured, not fatal. Every thread started
  // from here on inherits the mask and never sees them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  // Everything the daemon creates (spool files, sockets before their mode
  // is set, logs) is private unless it says otherwise.
  umask(0077);
  // Intake connections are checked against this limit, minus a reserve for
  // the spool (CheckRuntimeConfig): take all the host allows.
  struct rlimit files{};
  if (getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
    files.rlim_cur = files.rlim_max;
    setrlimit(RLIMIT_NOFILE, &files);
  }
  std::string config_path;
  std::string log_level;
  bool check = false;
  bool running = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&](const char* flag) -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "zerobusd: %s needs a value\n", flag);
        std::exit(2);
      }
      return argv[++i];
    };
    if (arg == "--config") config_path = value("--config");
    else if (arg.rfind("--config=", 0) == 0) config_path = arg.substr(9);
    else if (arg == "--check") check = true;
    else if (arg == "--running") running = true;
    else if (arg == "--log-level") log_level = value("--log-level");
    else if (arg == "--version") {
      std::printf("zerobusd %s\n", ZEROBUSD_VERSION);
      return 0;
    } else if (arg == "--help" || arg == "-h") {
      Usage(stdout);
      return 0;
    } else {
      std::fprintf(stderr, "zerobusd: unknown argument \"%s\"\n", arg.c_str());
      Usage(stderr);
      return 2;
    }
  }
  if (config_path.empty()) {
    std::fprintf(stderr, "zerobusd: --config FILE is required\n");
    Usage(stderr);
    return 2;
  }
  // A reload check (--check --running) runs beside the daemon, which keeps
  // its credentials (the zerobus section changes only on restart) and may
  // hold them where the check cannot read them: it does not require them.
  zb::LoadOptions load;
  load.credentials_required = !(check && running);
  auto config = zb::LoadConfigFile(config_path, load);
  absl::Status runtime = config.ok() ? zb::CheckRuntimeConfig(*config, check && running ? zb::RuntimeCheck::kRunning
                                                                                          : zb::RuntimeCheck::kStart)
                                    : absl::OkStatus();
  if (!config.ok() || !runtime.ok()) {
    const absl::Status& s = config.ok() ? runtime : config.status();
    std::fprintf(stderr, "zerobusd: invalid configuration %s:\n%s\n", config_path.c_str(),
                 std::string(s.message()).c_str());
    return 1;
  }
  if (check) {
    std::printf("zerobusd: configuration %s is valid (%zu route%s)\n", config_path.c_str(), config->routes.size(),
                config->routes.size() == 1 ? "" : "s");
    return 0;
  }
  const std::string level = log_level.empty() ? config->log_level : log_level;
  spdlog::set_level(spdlog::level::from_str(level));
  zb::ConfigureLogging(config->log_format == "json" ? zb::LogFormat::kJson : zb::LogFormat::kText,
                       zb::LogStreamIsJournal());
  // gRPC's own lines (TLS handshake failures, ...) through our logger and
  // its rate limits, not straight to stderr.
  zb::RouteGrpcLoggingToSpdlog();
  absl::Status s = zb::RunDaemon(*config, config_path);
  if (!s.ok()) spdlog::critical("zerobusd: {}", std::string(s.message()));
  spdlog::shutdown();
#ifdef ZEROBUSD_LEAK_CHECK_AT_EXIT
  // Sanitizer builds (ZEROBUSD_SANITIZE): RunDaemon has destroyed the Daemon
  // and everything it made (the gRPC channels it leaves to the OS are marked
  // as such, daemon.cc), so whatever LeakSanitizer finds unreachable now
  // leaked during the daemon's life or its shutdown. _Exit below skips the
  // check LeakSanitizer would make at a normal exit.
  __lsan_do_leak_check();
#endif
  // The spool is closed and synced by now. Skip static destructors, in every
  // build: gRPC's background threads may still hold references at exit (a
  // call that just ended unwinds on its own threads, see ~Daemon), and
  // tearing gRPC's globals down under them could crash a clean stop. The OS
  // takes the memory back.
  std::fflush(nullptr);
  std::_Exit(s.ok() ? 0 : 1);
}
