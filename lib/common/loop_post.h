#pragma once
// PostFn (common/post_fn.h) for an Asio event loop: PostTo(loop).

#include <utility>  // before Asio (Boost 1.74 quirk with C++20)

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <functional>
#include <memory>

#include "common/post_fn.h"

namespace zb {

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
