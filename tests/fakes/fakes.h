#pragma once
// Fakes for the drain's seams: a scripted stream factory and token source.
// Called on the loop, like the real ones.

#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "auth/token_source.h"
#include "zerobus/ingest_stream.h"

namespace zb::testing {

struct FakeCall {
  StreamOpenParams params;
  StreamEventFn emit;  // deliver an event as the server would (call on the loop)
  std::vector<std::pair<int64_t, std::vector<std::string>>> writes;
  bool writes_done = false;
  bool cancelled = false;
  bool destroyed = false;
  bool response_started = true;  // false: as a call on a dead connection
  // As gRPC's queue: with queue_writes, each Write waits in `queued` until
  // the test takes it (as a kWriteDone would).
  bool queue_writes = false;
  size_t queued = 0;
};

class FakeStreamFactory final : public IngestStreamFactory {
 public:
  std::unique_ptr<IngestStream> Open(const StreamOpenParams& params, StreamEventFn on_event) override {
    auto call = std::make_shared<FakeCall>();
    call->params = params;
    call->emit = std::move(on_event);
    calls.push_back(call);
    return std::make_unique<Stream>(call);
  }
  void ResetConnection() override { ++connection_resets; }
  std::vector<std::shared_ptr<FakeCall>> calls;
  int connection_resets = 0;

 private:
  class Stream final : public IngestStream {
   public:
    explicit Stream(std::shared_ptr<FakeCall> call) : call_(std::move(call)) {}
    ~Stream() override { call_->destroyed = true; }
    void Write(int64_t offset, std::vector<std::string> records) override {
      call_->writes.emplace_back(offset, std::move(records));
      if (call_->queue_writes) ++call_->queued;
    }
    void WritesDone() override { call_->writes_done = true; }
    void Cancel() override { call_->cancelled = true; }
    size_t queued_writes() const override { return call_->queued; }
    bool response_started() const override { return call_->response_started; }

   private:
    std::shared_ptr<FakeCall> call_;
  };
};

// Answers at once: "tok-<table>", or next_error. Inline on the caller's
// thread, or, with answer_on_worker, on a thread of its own (as the OAuth
// source's worker does; the call returns once it has answered). Either way
// a caller that passed its executor hears the answer there.
class FakeTokenSource final : public TokenSource {
 public:
  using TokenSource::GetToken;
  void GetToken(const std::string& table, Callback done) override {
    requests.push_back(table);
    absl::StatusOr<std::string> answer =
        next_error.ok() ? absl::StatusOr<std::string>("tok-" + table) : absl::StatusOr<std::string>(next_error);
    if (answer_on_worker) {
      std::thread([&done, &answer] { done(std::move(answer)); }).join();
    } else {
      done(std::move(answer));
    }
  }
  void Invalidate(const std::string& table) override { invalidated.push_back(table); }
  std::vector<std::string> requests, invalidated;
  absl::Status next_error;
  bool answer_on_worker = false;
};

}  // namespace zb::testing
