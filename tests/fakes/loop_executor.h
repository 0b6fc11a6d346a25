#pragma once
// A caller's executor for tests of seams that answer on it (the threading
// rule of spool.h, token_source.h, connection_probe.h): an event loop, as the
// daemon's, run by a thread of its own.

#include <utility>  // before Asio (Boost 1.74 quirk with C++20)

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <thread>

#include "common/loop_post.h"

namespace zb::testing {

// Tasks queued through post() run, in order, on the loop's thread, and what
// they captured is released there. Stop() (or destruction) runs what is
// queued, then joins the thread; a task queued after that is destroyed with
// the loop, never run.
class LoopExecutor {
 public:
  LoopExecutor() : work_(boost::asio::make_work_guard(loop_)), thread_([this] { loop_.run(); }) {
    id_ = thread_.get_id();
  }
  ~LoopExecutor() { Stop(); }
  LoopExecutor(const LoopExecutor&) = delete;
  LoopExecutor& operator=(const LoopExecutor&) = delete;

  PostFn post() { return PostTo(loop_); }
  // The loop's thread (still known after Stop()).
  std::thread::id id() const { return id_; }
  void Stop() {
    work_.reset();
    if (thread_.joinable()) thread_.join();
  }

 private:
  boost::asio::io_context loop_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_;
  std::thread::id id_;
  std::thread thread_;  // last: starts once the rest exists
};

}  // namespace zb::testing
