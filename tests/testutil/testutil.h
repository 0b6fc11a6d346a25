#pragma once
// Helpers for tests that run real parts: temp dirs, free loopback ports,
// child processes, HTTP GETs on loopback, and waiting on a condition with a
// deadline (never sleep-and-hope).

#include <sys/resource.h>
#include <sys/types.h>

#include <chrono>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace zb::testing {

// A fresh directory removed (recursively) on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string Sub(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// A port that was free on 127.0.0.1 a moment ago.
int FreePort();
// A connected Unix stream socket to `path` (close-on-exec), or -1.
int ConnectUnix(const std::string& path);

// Polls `condition` every few ms until it returns true or `timeout` passes.
bool WaitFor(const std::function<bool()>& condition, std::chrono::milliseconds timeout);

// Directory of the built executables (zerobusd, zerobusctl, zerobus-devserver).
std::string BinDir();

// A child process. Destruction SIGKILLs and reaps it if still running.
class Process {
 public:
  // Starts argv[0] (a path) with `argv`; stdout+stderr go to `log_path`
  // (appended) when not empty, else are inherited.
  Process(std::vector<std::string> argv, const std::string& log_path = "",
          const std::string& stdin_path = "");
  ~Process();
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  bool Running();
  void Signal(int sig);
  // Waits for exit; returns the exit code, 128+signal if killed, -1 on timeout.
  int Wait(std::chrono::milliseconds timeout);
  void Kill();  // SIGKILL and reap

 private:
  pid_t pid_ = -1;
  bool reaped_ = false;
  int status_ = 0;
};

struct RunResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};
// Runs a command to completion (bounded by `timeout`), capturing its output.
RunResult RunCommand(const std::vector<std::string>& argv, std::chrono::milliseconds timeout,
              const std::string& stdin_path = "");

// GET http://127.0.0.1:port/target; returns the body or an error.
absl::StatusOr<std::string> HttpGet(int port, const std::string& target);

struct HttpResponse {
  int status = 0;
  std::string body;
};
// Any request to http://127.0.0.1:port/target; `headers` are full
// "Name: value" lines. An error only when no HTTP response came back.
absl::StatusOr<HttpResponse> HttpRequest(int port, const std::string& method, const std::string& target,
                                         const std::vector<std::string>& headers = {}, const std::string& body = "");
// Returns the value of a Prometheus sample line `name{labels} value`; `labels`
// is the exact label text inside the braces (empty for none). Sums nothing.
absl::StatusOr<double> MetricValue(const std::string& exposition, const std::string& name,
                                   const std::string& labels = "");

std::string ReadFileOrEmpty(const std::string& path);
void WriteFile(const std::string& path, const std::string& content);
std::vector<std::string> ReadLines(const std::string& path);

// Lowers this process's RLIMIT_NOFILE to just above its highest open
// descriptor and fills every free slot below it, so that the next socket or
// accept fails with EMFILE. Release() (or destruction) gives it all back.
class DescriptorExhaustion {
 public:
  DescriptorExhaustion() = default;
  ~DescriptorExhaustion() { Release(); }
  DescriptorExhaustion(const DescriptorExhaustion&) = delete;
  DescriptorExhaustion& operator=(const DescriptorExhaustion&) = delete;

  // True when no descriptor can be made any more.
  bool Exhaust();
  // Frees one descriptor slot (e.g. for a client socket); false if none held.
  bool FreeOne();
  void Release();

 private:
  rlimit saved_{};
  bool lowered_ = false;
  std::vector<int> fillers_;
};

}  // namespace zb::testing
