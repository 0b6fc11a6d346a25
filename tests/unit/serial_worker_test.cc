// SerialWorker: tasks run one at a time in posting order on the worker's
// thread, and every task runs exactly once, cancelled if the worker stopped
// before it.

#include "common/serial_worker.h"

#include <pthread.h>

#include <atomic>
#include <future>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "testutil.h"

namespace zb {
namespace {

TEST(SerialWorkerTest, TasksRunInPostingOrderOnTheWorkersThread) {
  SerialWorker worker("zb-test-worker");
  std::mutex mu;
  std::vector<int> ran;
  std::set<std::thread::id> threads;
  std::promise<void> last;
  for (int i = 0; i < 1000; ++i) {
    worker.Post([&, i](bool cancelled) {
      EXPECT_FALSE(cancelled);
      std::lock_guard<std::mutex> lock(mu);
      ran.push_back(i);
      threads.insert(std::this_thread::get_id());
      if (i == 999) last.set_value();
    });
  }
  ASSERT_EQ(last.get_future().wait_for(std::chrono::seconds(30)), std::future_status::ready);
  std::lock_guard<std::mutex> lock(mu);
  ASSERT_EQ(ran.size(), 1000u);
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(ran[i], i);
  ASSERT_EQ(threads.size(), 1u);
  EXPECT_NE(*threads.begin(), std::this_thread::get_id());
  char name[16] = {};
  // The thread is named for ps and perf (read from the task's own thread).
  std::promise<std::string> named;
  worker.Post([&](bool) {
    pthread_getname_np(pthread_self(), name, sizeof(name));
    named.set_value(name);
  });
  EXPECT_EQ(named.get_future().get(), "zb-test-worker");
}

TEST(SerialWorkerTest, StopWaitsForTheTaskUnderWayAndCancelsTheQueuedOnes) {
  SerialWorker worker("zb-test-worker");
  std::promise<void> started, release;
  std::shared_future<void> released = release.get_future().share();
  std::atomic<int> finished{0}, cancelled{0}, ran_after{0};
  worker.Post([&](bool was_cancelled) {
    EXPECT_FALSE(was_cancelled);
    started.set_value();
    released.wait();
    ++finished;
  });
  started.get_future().wait();
  for (int i = 0; i < 5; ++i) {
    worker.Post([&](bool was_cancelled) { ++(was_cancelled ? cancelled : ran_after); });
  }
  auto stopping = std::async(std::launch::async, [&] { worker.Stop(); });
  // Once Stop has begun, a task posted runs at once, cancelled, on the
  // poster (probes queued before that are cancelled later, on their own
  // flags).
  ASSERT_TRUE(zb::testing::WaitFor(
      [&] {
        auto ran = std::make_shared<std::atomic<int>>(0);  // 1: cancelled, 2: ran
        worker.Post([ran](bool was_cancelled) { *ran = was_cancelled ? 1 : 2; });
        return *ran == 1;
      },
      std::chrono::seconds(30)));
  // Stop cannot return while the first task still runs.
  EXPECT_EQ(stopping.wait_for(std::chrono::milliseconds(50)), std::future_status::timeout);
  release.set_value();
  ASSERT_EQ(stopping.wait_for(std::chrono::seconds(30)), std::future_status::ready);
  EXPECT_EQ(finished, 1);
  EXPECT_EQ(cancelled, 5);
  EXPECT_EQ(ran_after, 0);
}

TEST(SerialWorkerTest, ATaskPostedAfterStopRunsCancelledOnThePoster) {
  SerialWorker worker("zb-test-worker");
  worker.Stop();
  worker.Stop();  // idempotent
  bool was_cancelled = false;
  std::thread::id ran_on;
  worker.Post([&](bool cancelled) {
    was_cancelled = cancelled;
    ran_on = std::this_thread::get_id();
  });
  EXPECT_TRUE(was_cancelled);
  EXPECT_EQ(ran_on, std::this_thread::get_id());
}

TEST(SerialWorkerTest, DestructionAnswersEveryQueuedTask) {
  std::atomic<int> answered{0};
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  {
    SerialWorker worker("zb-test-worker");
    worker.Post([&](bool) {
      released.wait();
      ++answered;
    });
    for (int i = 0; i < 100; ++i) worker.Post([&](bool) { ++answered; });
    release.set_value();
  }
  EXPECT_EQ(answered, 101);
}

}  // namespace
}  // namespace zb
