#pragma once
// The composition root: builds every module from the config, wires their
// callbacks, and runs the event loop until SIGTERM/SIGINT.

#include "absl/status/status.h"
#include "config/config.h"

namespace zb {

// What the host must offer: kStart before a daemon starts (its sockets and
// metrics port must be free); kRunning for a reload check while the daemon
// runs (its own sockets and port are in use by it).
enum class RuntimeCheck { kStart, kRunning };

// Builds route codecs (loading .proto files) and checks everything that can
// be checked without starting: what `zerobusd --check` runs after
// LoadConfig. Lists every problem, one per line.
absl::Status CheckRuntimeConfig(const DaemonConfig& config, RuntimeCheck mode = RuntimeCheck::kStart);

// Runs the daemon; returns when it has shut down. A non-OK status means it
// could not start (or failed fatally) and says why.
absl::Status RunDaemon(const DaemonConfig& config, const std::string& config_path);

}  // namespace zb
