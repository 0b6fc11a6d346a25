#pragma once
// A "post" function (Spool::Post and its kind): queues a task on an Asio
// event loop, never running it inline. It is how a caller hands its
// executor to a module whose callbacks must come back on the loop.

#include <utility>  // before Asio (Boost 1.74 quirk with C++20)

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <functional>
#include <memory>

namespace zb {

using PostFn = std::function<void(std::function<void()>)>;

// `loop` must outlive every use of the result.
inline PostFn PostTo(boost::asio::io_context& loop) {
  return [&loop](std::function<void()> task) { boost::asio::post(loop, std::move(task)); };
}

// A task posted once the loop is gone is dropped (destroyed on the caller's
// thread).
inline PostFn PostTo(std::weak_ptr<boost::asio::io_context> loop) {
  return [loop = std::move(loop)](std::function<void()> task) {
    if (auto alive = loop.lock()) boost::asio::post(*alive, std::move(task));
  };
}

}  // namespace zb
