#pragma once
// The event loop's ownership rule, checked: state owned by the loop (drain
// lanes, intake, the daemon's own) is touched only from inside that loop's
// run()/run_one()/poll() on its thread, and every seam answers there
// (loop_post.h). An entry point of a loop-owned class starts with
// ZB_CHECK_ON_LOOP(loop). The check stays in release builds (NDEBUG turns
// assert() off): a call from another thread is a data race that corrupts
// state silently, so it logs the function and aborts instead, like ZB_CHECK.
//
// Code on the thread that is about to run the loop, before run(), is not on
// the loop: post such a call (boost::asio::post) instead. Constructors and
// destructors are not entry points: an object is built before anything can
// call it, and destroyed on the loop or once no thread runs it.

#include <utility>  // before Asio (Boost 1.74 quirk with C++20)

#include <boost/asio/io_context.hpp>
#include <cstdio>
#include <cstdlib>

namespace zb {

// Whether the calling thread is inside `loop`'s run(), run_one(), poll() or
// poll_one(). Cheap: a thread-local lookup.
inline bool OnLoopThread(boost::asio::io_context& loop) { return loop.get_executor().running_in_this_thread(); }

[[noreturn]] inline void LoopThreadCheckFailed(const char* file, int line, const char* function) {
  std::fprintf(stderr,
               "%s:%d: check failed: %s must run on the event loop thread (inside the loop's run()); it was called "
               "from another thread or while the loop was not running\n",
               file, line, function);
  std::abort();
}

}  // namespace zb

#if defined(__GNUC__) || defined(__clang__)
#define ZB_FUNCTION_NAME_ __PRETTY_FUNCTION__
#else
#define ZB_FUNCTION_NAME_ __func__
#endif

// Aborts unless the caller runs on `loop` (a boost::asio::io_context&),
// naming the enclosing function.
#define ZB_CHECK_ON_LOOP(loop)                                                   \
  do {                                                                           \
    if (!::zb::OnLoopThread(loop)) {                                             \
      ::zb::LoopThreadCheckFailed(__FILE__, __LINE__, ZB_FUNCTION_NAME_);        \
    }                                                                            \
  } while (0)
