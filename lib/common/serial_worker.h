#pragma once
// One thread that runs posted tasks one at a time, in the order they were
// posted: a blocking resource (a database's reads, a slow probe) served off
// the event loop. Every task runs exactly once: the tasks still queued when
// the worker stops run with cancelled = true, on the thread that stops it.

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace zb {

class SerialWorker {
 public:
  using Task = std::function<void(bool cancelled)>;

  // `thread_name`: what ps and perf show (at most 15 characters).
  explicit SerialWorker(const std::string& thread_name);
  // Stop().
  ~SerialWorker();

  SerialWorker(const SerialWorker&) = delete;
  SerialWorker& operator=(const SerialWorker&) = delete;

  // Any thread. After Stop, runs `task(true)` at once on the caller.
  void Post(Task task);

  // Any thread but the worker's own: waits for the task under way, then
  // runs the queued ones cancelled. Idempotent (from one thread at a time).
  void Stop();

 private:
  void Run();

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Task> tasks_;  // guarded by mu_
  bool stopping_ = false;   // guarded by mu_
  std::thread thread_;      // last: starts once the rest exists
};

}  // namespace zb
