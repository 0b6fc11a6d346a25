#pragma once
// A "post" function (PostFn; Spool::Post, TokenSource::Post and their kind):
// queues a task on the caller's executor, never running it inline. It is how
// a caller hands its executor to a module whose callbacks must come back on
// it; DeliverVia is the module's side. Asio-free, so module headers can name
// it cheaply; loop_post.h makes one for an Asio event loop.

#include <functional>
#include <utility>

namespace zb {

using PostFn = std::function<void(std::function<void()>)>;

// `done`, delivered through `on`: calling the result (once, on any thread)
// queues done(result) on `on`'s executor. The queued task holds the only
// reference to what `done` captured, so that is released on the executor's
// thread too, not on the thread that answered. As is when `on` or `done` is
// empty. The one implementation of "every async seam completes on the
// caller's executor" (the spool, the token source, the connection prober).
template <typename Result>
std::function<void(Result)> DeliverVia(const PostFn& on, std::function<void(Result)> done) {
  if (!on || !done) return done;
  return [on, done = std::move(done)](Result result) mutable {
    on([done = std::move(done), result = std::move(result)]() mutable { done(std::move(result)); });
    done = nullptr;  // the queued task's copy is the only one left
  };
}

}  // namespace zb
