#include "common/serial_worker.h"

#include <pthread.h>

#include <utility>

namespace zb {

SerialWorker::SerialWorker(const std::string& thread_name)
    : thread_([this, name = thread_name.substr(0, 15)] {
        pthread_setname_np(pthread_self(), name.c_str());
        Run();
      }) {}

SerialWorker::~SerialWorker() { Stop(); }

void SerialWorker::Post(Task task) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!stopping_) {
      tasks_.push_back(std::move(task));
      cv_.notify_one();
      return;
    }
  }
  task(true);
}

void SerialWorker::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  std::deque<Task> cancelled;
  {
    std::lock_guard<std::mutex> lock(mu_);
    cancelled.swap(tasks_);
  }
  for (auto& task : cancelled) task(true);
}

void SerialWorker::Run() {
  while (true) {
    Task task;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stopping_ || !tasks_.empty(); });
      if (stopping_) return;
      task = std::move(tasks_.front());
      tasks_.pop_front();
    }
    task(false);
  }
}

}  // namespace zb
