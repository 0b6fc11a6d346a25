// Tests for the OAuth token source against a real HTTP server on 127.0.0.1
// (Boost.Beast, synchronous, one connection at a time, scripted answers).

#include <stdlib.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "../fakes/loop_executor.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "auth/token_source.h"
#include "common/clock.h"
#include "common/redact.h"
#include "gtest/gtest.h"
#include "rapidjson/document.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"
#include "testutil.h"

namespace zb {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = boost::beast::http;
using asio::ip::tcp;
using namespace std::chrono_literals;

constexpr char kClientId[] = "sp-app-id";
// ':' and '@' check that Basic auth carries the secret unmangled; the value is
// distinctive so a leak into any message is easy to spot.
constexpr char kSecret[] = "s3cr3t:p@ss-DO-NOT-LOG";
constexpr char kTable[] = "main.edge.readings";

// libcurl honours http_proxy/https_proxy; a developer's proxy must not see
// (or break) requests to the in-process server.
[[maybe_unused]] const bool kLoopbackBypassesProxy = [] {
  setenv("no_proxy", "127.0.0.1,localhost", 1);
  setenv("NO_PROXY", "127.0.0.1,localhost", 1);
  return true;
}();

struct RecordedRequest {
  std::string method;
  std::string target;
  std::string authorization;
  std::string content_type;
  std::string user_agent;
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // as received, in order
  std::string raw;  // request line, headers and body, as a server would echo them
};

struct Scripted {
  int status = 200;
  std::string body;
  bool hold = false;  // answer only after Release() (or server shutdown)
  // When set, the body is built from the request (a server that echoes it).
  std::function<std::string(const RecordedRequest&)> echo;
  // When > 0, the body has this many bytes: `body`, then filler (spaces:
  // JSON whitespace, so a token reply stays valid JSON). It is generated and
  // written in 64 KiB pieces while the client reads, never held whole.
  size_t stream_bytes = 0;
  // With stream_bytes: announce it in Content-Length, or send the body
  // chunked (the client learns its size only by reading it).
  bool announce_length = true;
};

// What became of a streamed body.
struct StreamOutcome {
  size_t body_bytes = 0;     // how many the socket accepted before it failed or the body ended
  bool complete = false;     // the whole body was written
  std::string error;         // why writing stopped, if it did
};

Scripted TokenReply(const std::string& token, const std::string& expires_in_json = "3600") {
  return Scripted{200, absl::StrCat(R"({"access_token":")", token,
                                    R"(","token_type":"Bearer","expires_in":)", expires_in_json, "}")};
}

// Records every request and answers each from a scripted queue (500 when the
// queue is empty). Connection: close on every answer keeps the one-thread
// server simple: libcurl then opens a connection per request.
class FakeTokenServer {
 public:
  FakeTokenServer() : acceptor_(ioc_, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)) {
    port_ = acceptor_.local_endpoint().port();
    thread_ = std::thread([this] { Serve(); });
  }
  ~FakeTokenServer() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    // Unblocks a pending accept().
    boost::system::error_code ec;
    tcp::socket poke(ioc_);
    poke.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port_), ec);
    thread_.join();
  }

  int port() const { return port_; }
  std::string url() const { return absl::StrCat("http://127.0.0.1:", port_); }

  void Push(Scripted s) {
    std::lock_guard<std::mutex> lock(mu_);
    script_.push_back(std::move(s));
  }
  void Release() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      released_ = true;
    }
    cv_.notify_all();
  }
  size_t count() {
    std::lock_guard<std::mutex> lock(mu_);
    return requests_.size();
  }
  std::vector<RecordedRequest> requests() {
    std::lock_guard<std::mutex> lock(mu_);
    return requests_;
  }
  // Waits (bounded) until the streamed answer number `i` (0-based, counting
  // streamed answers only) has ended, the client having read it all or
  // closed the connection.
  std::optional<StreamOutcome> WaitForStream(size_t i, std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_for(lock, timeout, [&] { return streams_.size() > i; })) return std::nullopt;
    return streams_[i];
  }

 private:
  void Serve() {
    while (true) {
      tcp::socket sock(ioc_);
      boost::system::error_code ec;
      acceptor_.accept(sock, ec);
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (stopping_) return;
      }
      if (ec) continue;
      beast::flat_buffer buf;
      http::request<http::string_body> req;
      http::read(sock, buf, req, ec);
      if (ec) continue;
      Scripted answer{500, R"({"error":"unscripted request"})"};
      {
        std::unique_lock<std::mutex> lock(mu_);
        RecordedRequest r{std::string(req.method_string()), std::string(req.target()),
                          std::string(req[http::field::authorization]),
                          std::string(req[http::field::content_type]),
                          std::string(req[http::field::user_agent]), req.body()};
        r.raw = absl::StrCat(r.method, " ", r.target, " HTTP/1.1\r\n");
        for (const auto& field : req) {
          r.headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
          absl::StrAppend(&r.raw, r.headers.back().first, ": ", r.headers.back().second, "\r\n");
        }
        absl::StrAppend(&r.raw, "\r\n", r.body);
        requests_.push_back(std::move(r));
        if (!script_.empty()) {
          answer = std::move(script_.front());
          script_.pop_front();
        }
        if (answer.echo) answer.body = answer.echo(requests_.back());
        if (answer.hold) cv_.wait(lock, [this] { return released_ || stopping_; });
        if (stopping_) return;
      }
      if (answer.stream_bytes > 0) {
        StreamOutcome outcome = Stream(sock, answer);
        {
          std::lock_guard<std::mutex> lock(mu_);
          streams_.push_back(std::move(outcome));
        }
        cv_.notify_all();
        sock.shutdown(tcp::socket::shutdown_both, ec);
        continue;
      }
      http::response<http::string_body> res{static_cast<http::status>(answer.status), 11};
      res.set(http::field::content_type, "application/json");
      res.body() = answer.body;
      res.keep_alive(false);
      res.prepare_payload();
      http::write(sock, res, ec);
      sock.shutdown(tcp::socket::shutdown_both, ec);
    }
  }

  static StreamOutcome Stream(tcp::socket& sock, const Scripted& answer) {
    StreamOutcome out;
    boost::system::error_code ec;
    // A fixed, small send buffer (no autotuning): what the server gets to
    // write is what the client reads plus a bounded amount in flight.
    sock.set_option(asio::socket_base::send_buffer_size(64 * 1024), ec);
    const size_t total = answer.stream_bytes;
    const std::string head = absl::StrCat(
        "HTTP/1.1 ", answer.status, " ",
        std::string(http::obsolete_reason(static_cast<http::status>(answer.status))),
        "\r\nContent-Type: application/json\r\nConnection: close\r\n",
        answer.announce_length ? absl::StrCat("Content-Length: ", total) : "Transfer-Encoding: chunked",
        "\r\n\r\n");
    asio::write(sock, asio::buffer(head), ec);
    constexpr size_t kPiece = 64 * 1024;
    std::string piece;
    while (!ec && out.body_bytes < total) {
      const size_t at = out.body_bytes;
      const size_t len = std::min(kPiece, total - at);
      piece.assign(len, ' ');
      if (at < answer.body.size()) {
        const size_t from_body = std::min(len, answer.body.size() - at);
        piece.replace(0, from_body, answer.body, at, from_body);
      }
      if (!answer.announce_length) {
        asio::write(sock, asio::buffer(absl::StrCat(absl::Hex(len), "\r\n")), ec);
        if (ec) break;
      }
      out.body_bytes += asio::write(sock, asio::buffer(piece), ec);
      if (!ec && !answer.announce_length) asio::write(sock, asio::buffer(std::string("\r\n")), ec);
    }
    if (!ec && !answer.announce_length) asio::write(sock, asio::buffer(std::string("0\r\n\r\n")), ec);
    out.complete = !ec && out.body_bytes == total;
    if (ec) out.error = ec.message();
    return out;
  }

  asio::io_context ioc_;
  tcp::acceptor acceptor_;
  int port_ = 0;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Scripted> script_;
  std::vector<RecordedRequest> requests_;
  std::vector<StreamOutcome> streams_;
  bool released_ = false;
  bool stopping_ = false;
  std::thread thread_;
};

OAuthOptions Options(const std::string& url) {
  OAuthOptions o;
  o.workspace_url = url;
  o.workspace_id = "1234567890123456";
  o.client_id = kClientId;
  o.client_secret = kSecret;
  o.http_timeout = 5s;
  return o;
}

// Blocks until the callback runs (bounded). Also reports whether it ran inline.
struct Answer {
  absl::StatusOr<std::string> token = absl::DeadlineExceededError("test: callback never ran");
  bool inline_call = false;
};
Answer Get(TokenSource& source, const std::string& table, std::chrono::milliseconds timeout = 10s) {
  auto promise = std::make_shared<std::promise<absl::StatusOr<std::string>>>();
  auto future = promise->get_future();
  const std::thread::id caller = std::this_thread::get_id();
  auto ran_inline = std::make_shared<std::atomic<bool>>(false);
  source.GetToken(table, [promise, caller, ran_inline](absl::StatusOr<std::string> t) {
    ran_inline->store(std::this_thread::get_id() == caller);
    promise->set_value(std::move(t));
  });
  Answer a;
  if (future.wait_for(timeout) == std::future_status::ready) {
    a.token = future.get();
    a.inline_call = ran_inline->load();
  }
  return a;
}

// An answer given the caller's executor: what it said and the thread it
// ran on.
struct Delivered {
  absl::StatusOr<std::string> token = absl::DeadlineExceededError("test: callback never ran");
  std::thread::id thread;
};
Delivered GetVia(TokenSource& source, const std::string& table, const TokenSource::Post& on) {
  auto promise = std::make_shared<std::promise<Delivered>>();
  auto future = promise->get_future();
  source.GetToken(
      table,
      [promise](absl::StatusOr<std::string> t) {
        Delivered d;
        d.token = std::move(t);
        d.thread = std::this_thread::get_id();
        promise->set_value(std::move(d));
      },
      on);
  if (future.wait_for(10s) != std::future_status::ready) return Delivered{};
  return future.get();
}

// Notes the thread it is destroyed on.
struct Witness {
  Witness(std::atomic<int>* wrong, std::thread::id want) : wrong(wrong), want(want) {}
  ~Witness() {
    if (std::this_thread::get_id() != want) ++*wrong;
  }
  std::atomic<int>* wrong;
  std::thread::id want;
};

// Token lifetimes run on MonotonicClock: tests move it instead of waiting.
// A token's lifetime starts when its request is sent, which is somewhere in
// [sent_after, answered].
struct TimedAnswer {
  Answer answer;
  MonotonicClock::time_point sent_after;
  MonotonicClock::time_point answered;
};
TimedAnswer GetTimed(TokenSource& source, const std::string& table) {
  TimedAnswer t;
  t.sent_after = MonotonicClock::now();
  t.answer = Get(source, table);
  t.answered = MonotonicClock::now();
  return t;
}

// GetTimed, which must give `token`.
::testing::AssertionResult FetchesTimed(TokenSource& source, const std::string& token, TimedAnswer* out) {
  *out = GetTimed(source, kTable);
  if (!out->answer.token.ok()) return ::testing::AssertionFailure() << "no token: " << out->answer.token.status();
  if (*out->answer.token != token) {
    return ::testing::AssertionFailure() << "gave " << *out->answer.token << ", not " << token;
  }
  return ::testing::AssertionSuccess();
}

// Moves MonotonicClock forward to `t`. Fails (and moves nothing) when real
// time has already passed `t`: the clock never goes back, so the point the
// test meant to check is gone.
::testing::AssertionResult AdvanceTo(MonotonicClock::time_point t) {
  const MonotonicClock::duration by = t - MonotonicClock::now();
  if (by <= MonotonicClock::duration::zero()) {
    return ::testing::AssertionFailure()
           << "the clock is already " << std::chrono::duration_cast<std::chrono::milliseconds>(-by).count()
           << " ms past the point to move it to";
  }
  MonotonicClock::AdvanceForTest(by);
  return ::testing::AssertionSuccess();
}

// Whether GetToken, asked now, gives `token`: from the cache (inline, no
// request) when `from` is kCache, or by a fetch, with the server having seen
// `requests` requests in all by then.
enum class From { kCache, kFetch };
template <typename Server>
::testing::AssertionResult Gives(TokenSource& source, Server& server, const std::string& token, From from,
                                 size_t requests) {
  const Answer a = Get(source, kTable);
  if (!a.token.ok()) return ::testing::AssertionFailure() << "no token: " << a.token.status();
  if (*a.token != token) return ::testing::AssertionFailure() << "gave " << *a.token << ", not " << token;
  if (a.inline_call != (from == From::kCache)) {
    return ::testing::AssertionFailure() << (a.inline_call ? "served from the cache" : "fetched");
  }
  if (server.count() != requests) {
    return ::testing::AssertionFailure() << server.count() << " requests, not " << requests;
  }
  return ::testing::AssertionSuccess();
}

std::string PercentDecode(absl::string_view in) {
  std::string out;
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] == '%' && i + 2 < in.size()) {
      out += static_cast<char>(std::stoi(std::string(in.substr(i + 1, 2)), nullptr, 16));
      i += 2;
    } else if (in[i] == '+') {
      out += ' ';
    } else {
      out += in[i];
    }
  }
  return out;
}

// Field order as sent, values decoded; duplicates would show as extra pairs.
std::vector<std::pair<std::string, std::string>> ParseForm(absl::string_view body) {
  std::vector<std::pair<std::string, std::string>> out;
  for (absl::string_view part : absl::StrSplit(body, '&')) {
    std::pair<absl::string_view, absl::string_view> kv = absl::StrSplit(part, absl::MaxSplits('=', 1));
    out.emplace_back(PercentDecode(kv.first), PercentDecode(kv.second));
  }
  return out;
}

void ExpectNoSecret(const absl::Status& s) {
  EXPECT_FALSE(absl::StrContains(s.message(), kSecret)) << s;
  EXPECT_FALSE(absl::StrContains(s.message(), "s3cr3t")) << s;
}

TEST(OAuthTokenSourceTest, SendsExactFormFieldsAndBasicAuth) {
  FakeTokenServer server;
  server.Push(TokenReply("tok-1"));
  // Trailing slash must be dropped: the path is exactly /oidc/v1/token.
  auto source = MakeOAuthTokenSource(Options(server.url() + "/"));
  Answer a = Get(*source, kTable);
  ASSERT_TRUE(a.token.ok()) << a.token.status();
  EXPECT_EQ(*a.token, "tok-1");

  std::vector<RecordedRequest> reqs = server.requests();
  ASSERT_EQ(reqs.size(), 1u);
  const RecordedRequest& r = reqs[0];
  EXPECT_EQ(r.method, "POST");
  EXPECT_EQ(r.target, "/oidc/v1/token");
  EXPECT_EQ(r.content_type, "application/x-www-form-urlencoded");
  EXPECT_EQ(r.user_agent, "zerobusd");

  ASSERT_TRUE(absl::StartsWith(r.authorization, "Basic ")) << r.authorization;
  std::string credentials;
  ASSERT_TRUE(absl::Base64Unescape(r.authorization.substr(6), &credentials));
  EXPECT_EQ(credentials, absl::StrCat(kClientId, ":", kSecret));

  // The secret travels only in the Authorization header.
  EXPECT_FALSE(absl::StrContains(r.body, "s3cr3t"));
  auto form = ParseForm(r.body);
  ASSERT_EQ(form.size(), 4u) << r.body;
  std::map<std::string, std::string> fields(form.begin(), form.end());
  ASSERT_EQ(fields.size(), 4u) << "duplicate form field: " << r.body;
  EXPECT_EQ(fields["grant_type"], "client_credentials");
  EXPECT_EQ(fields["scope"], "all-apis");
  EXPECT_EQ(fields["resource"], "api://databricks/workspaces/1234567890123456/zerobusDirectWriteApi");
  // Values are percent-encoded on the wire (curl_easy_escape).
  EXPECT_TRUE(absl::StrContains(r.body, "resource=api%3A%2F%2Fdatabricks%2Fworkspaces%2F")) << r.body;

  rapidjson::Document details;
  details.Parse(fields["authorization_details"].c_str());
  ASSERT_FALSE(details.HasParseError()) << fields["authorization_details"];
  ASSERT_TRUE(details.IsArray());
  ASSERT_EQ(details.Size(), 3u);
  struct Want {
    std::vector<std::string> privileges;
    std::string object_type;
    std::string path;
  };
  const Want want[] = {{{"USE CATALOG"}, "CATALOG", "main"},
                       {{"USE SCHEMA"}, "SCHEMA", "main.edge"},
                       {{"SELECT", "MODIFY"}, "TABLE", "main.edge.readings"}};
  for (rapidjson::SizeType i = 0; i < 3; ++i) {
    SCOPED_TRACE(i);
    const rapidjson::Value& e = details[i];
    ASSERT_TRUE(e.IsObject());
    EXPECT_EQ(e.MemberCount(), 4u);
    ASSERT_TRUE(e.HasMember("type") && e["type"].IsString());
    EXPECT_STREQ(e["type"].GetString(), "unity_catalog_privileges");
    ASSERT_TRUE(e.HasMember("object_type") && e["object_type"].IsString());
    EXPECT_EQ(e["object_type"].GetString(), want[i].object_type);
    ASSERT_TRUE(e.HasMember("object_full_path") && e["object_full_path"].IsString());
    EXPECT_EQ(e["object_full_path"].GetString(), want[i].path);
    ASSERT_TRUE(e.HasMember("privileges") && e["privileges"].IsArray());
    std::vector<std::string> privileges;
    for (const auto& p : e["privileges"].GetArray()) privileges.push_back(p.GetString());
    EXPECT_EQ(privileges, want[i].privileges);
  }
}

TEST(OAuthTokenSourceTest, CachesTokenAndServesItInline) {
  FakeTokenServer server;
  server.Push(TokenReply("tok-1"));
  auto source = MakeOAuthTokenSource(Options(server.url()));
  Answer first = Get(*source, kTable);
  ASSERT_TRUE(first.token.ok()) << first.token.status();
  EXPECT_FALSE(first.inline_call);  // fetched on the worker thread

  Answer second = Get(*source, kTable);
  ASSERT_TRUE(second.token.ok()) << second.token.status();
  EXPECT_EQ(*second.token, "tok-1");
  EXPECT_TRUE(second.inline_call);
  EXPECT_EQ(server.count(), 1u);
}

TEST(OAuthTokenSourceTest, CachesPerTable) {
  FakeTokenServer server;
  server.Push(TokenReply("tok-a"));
  server.Push(TokenReply("tok-b"));
  auto source = MakeOAuthTokenSource(Options(server.url()));
  ASSERT_EQ(*Get(*source, "c.s.a").token, "tok-a");
  ASSERT_EQ(*Get(*source, "c.s.b").token, "tok-b");
  EXPECT_EQ(*Get(*source, "c.s.a").token, "tok-a");
  EXPECT_EQ(*Get(*source, "c.s.b").token, "tok-b");
  ASSERT_EQ(server.count(), 2u);
  // Each request names its own table.
  auto reqs = server.requests();
  EXPECT_TRUE(absl::StrContains(PercentDecode(reqs[0].body), R"("object_full_path":"c.s.a")"));
  EXPECT_TRUE(absl::StrContains(PercentDecode(reqs[1].body), R"("object_full_path":"c.s.b")"));
}

// expires_in=1 with the default 300 s refresh_before_expiry: the margin scales
// to a fifth of the lifetime, so the token is refreshed 0.8 s after its
// request was sent (not at once, and not once it has expired).
class RefreshTest : public ::testing::TestWithParam<std::string> {};

TEST_P(RefreshTest, RefreshesShortLivedTokenBeforeExpiry) {
  FakeTokenServer server;
  server.Push(TokenReply("tok-1", GetParam()));
  server.Push(TokenReply("tok-2"));
  auto source = MakeOAuthTokenSource(Options(server.url()));
  TimedAnswer first;
  ASSERT_TRUE(FetchesTimed(*source, "tok-1", &first));

  // At 0.7 s it is still fresh: served from the cache, inline.
  ASSERT_TRUE(AdvanceTo(first.sent_after + 700ms));
  EXPECT_TRUE(Gives(*source, server, "tok-1", From::kCache, 1));

  // From 0.8 s on, the next GetToken fetches a new one.
  ASSERT_TRUE(AdvanceTo(first.answered + 800ms));
  TimedAnswer refreshed;
  ASSERT_TRUE(FetchesTimed(*source, "tok-2", &refreshed));
  EXPECT_FALSE(refreshed.answer.inline_call);
  EXPECT_EQ(server.count(), 2u);

  // tok-2 lives an hour: cached until 300 s before its end.
  ASSERT_TRUE(AdvanceTo(refreshed.sent_after + 3299s));
  EXPECT_TRUE(Gives(*source, server, "tok-2", From::kCache, 2));
}

INSTANTIATE_TEST_SUITE_P(ExpiresIn, RefreshTest, ::testing::Values("1", "\"1\"", "1.0"),
                         [](const auto& info) {
                           return std::string(info.index == 0 ? "Number" : info.index == 1 ? "QuotedNumber" : "Fraction");
                         });

TEST(OAuthTokenSourceTest, QuotedLongExpiresInIsCached) {
  FakeTokenServer server;
  server.Push(TokenReply("tok-1", "\"3600\""));
  auto source = MakeOAuthTokenSource(Options(server.url()));
  ASSERT_EQ(*Get(*source, kTable).token, "tok-1");
  EXPECT_TRUE(Get(*source, kTable).inline_call);
  EXPECT_EQ(server.count(), 1u);
}

// When a long-lived token is refreshed: cached up to `refresh_at` after its
// request, fetched again from then on.
struct RefreshCase {
  std::string name;
  Scripted reply;                           // the first token's
  std::chrono::seconds refresh_before_expiry;
  std::chrono::seconds refresh_at;
};
class LongLivedRefreshTest : public ::testing::TestWithParam<RefreshCase> {};

TEST_P(LongLivedRefreshTest, IsCachedUntilItsRefreshTime) {
  FakeTokenServer server;
  server.Push(GetParam().reply);
  server.Push(TokenReply("tok-2"));
  OAuthOptions o = Options(server.url());
  o.refresh_before_expiry = GetParam().refresh_before_expiry;
  auto source = MakeOAuthTokenSource(o);
  TimedAnswer first;
  ASSERT_TRUE(FetchesTimed(*source, "tok-1", &first));

  ASSERT_TRUE(AdvanceTo(first.sent_after + GetParam().refresh_at - 1s));
  EXPECT_TRUE(Gives(*source, server, "tok-1", From::kCache, 1));

  ASSERT_TRUE(AdvanceTo(first.answered + GetParam().refresh_at));
  EXPECT_TRUE(Gives(*source, server, "tok-2", From::kFetch, 2));
}

INSTANTIATE_TEST_SUITE_P(
    Lifetimes, LongLivedRefreshTest,
    ::testing::Values(
        // No expires_in: an hour, refreshed the default 300 s before its end.
        RefreshCase{"MissingExpiresInIsAnHour", Scripted{200, R"({"access_token":"tok-1"})"}, 300s, 3300s},
        // refresh_before_expiry as configured.
        RefreshCase{"ConfiguredRefreshBeforeExpiry", TokenReply("tok-1", "3600"), 60s, 3540s}),
    [](const auto& info) { return info.param.name; });

TEST(OAuthTokenSourceTest, ZeroExpiresInIsDeliveredButNotCached) {
  FakeTokenServer server;
  server.Push(TokenReply("tok-1", "0"));
  server.Push(TokenReply("tok-2"));
  auto source = MakeOAuthTokenSource(Options(server.url()));
  ASSERT_EQ(*Get(*source, kTable).token, "tok-1");
  EXPECT_EQ(*Get(*source, kTable).token, "tok-2");
  EXPECT_EQ(server.count(), 2u);
}

// A 200 the client cannot use is the service's fault (or a proxy's), not the
// credentials': retryable, like a 5xx.
TEST(OAuthTokenSourceTest, NonNumericExpiresInIsRetryable) {
  FakeTokenServer server;
  server.Push(TokenReply("tok-1", "\"soon\""));
  auto source = MakeOAuthTokenSource(Options(server.url()));
  Answer a = Get(*source, kTable);
  EXPECT_TRUE(absl::IsUnavailable(a.token.status())) << a.token.status();
  EXPECT_FALSE(absl::StrContains(a.token.status().message(), "tok-1"));
}

TEST(OAuthTokenSourceTest, ConcurrentRequestsShareOneFetch) {
  FakeTokenServer server;
  Scripted held = TokenReply("tok-shared");
  held.hold = true;
  server.Push(held);
  // Declared before the source: its callbacks use them until it is destroyed.
  std::mutex mu;
  std::vector<absl::StatusOr<std::string>> results;
  auto source = MakeOAuthTokenSource(Options(server.url()));
  std::vector<std::thread> callers;
  for (int i = 0; i < 10; ++i) {
    callers.emplace_back([&] {
      source->GetToken(kTable, [&](absl::StatusOr<std::string> t) {
        std::lock_guard<std::mutex> lock(mu);
        results.push_back(std::move(t));
      });
    });
  }
  for (std::thread& t : callers) t.join();
  // All ten GetToken calls have returned while the one request is held.
  ASSERT_TRUE(testing::WaitFor([&] { return server.count() == 1; }, 10s));
  {
    std::lock_guard<std::mutex> lock(mu);
    EXPECT_TRUE(results.empty());
  }
  server.Release();
  ASSERT_TRUE(testing::WaitFor(
      [&] {
        std::lock_guard<std::mutex> lock(mu);
        return results.size() == 10;
      },
      10s));
  std::lock_guard<std::mutex> lock(mu);
  for (const auto& r : results) {
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(*r, "tok-shared");
  }
  EXPECT_EQ(server.count(), 1u);
}

TEST(OAuthTokenSourceTest, InvalidateForcesNewFetch) {
  FakeTokenServer server;
  server.Push(TokenReply("tok-1"));
  server.Push(TokenReply("tok-2"));
  auto source = MakeOAuthTokenSource(Options(server.url()));
  ASSERT_EQ(*Get(*source, kTable).token, "tok-1");
  source->Invalidate("c.s.other");  // another table: no effect
  EXPECT_EQ(*Get(*source, kTable).token, "tok-1");
  EXPECT_EQ(server.count(), 1u);

  source->Invalidate(kTable);
  Answer a = Get(*source, kTable);
  ASSERT_TRUE(a.token.ok()) << a.token.status();
  EXPECT_EQ(*a.token, "tok-2");
  EXPECT_FALSE(a.inline_call);
  EXPECT_EQ(server.count(), 2u);
}

struct HttpErrorCase {
  int status;
  absl::StatusCode want;
};

class HttpErrorTest : public ::testing::TestWithParam<HttpErrorCase> {};

TEST_P(HttpErrorTest, ClassifiesAndReportsStatusAndBody) {
  FakeTokenServer server;
  // The body echoes the secret: it must still never reach the message.
  server.Push(Scripted{GetParam().status, absl::StrCat(R"({"error":"nope","detail":"secret=)", kSecret,
                                                       R"( rejected"})")});
  server.Push(TokenReply("tok-after"));
  auto source = MakeOAuthTokenSource(Options(server.url()));
  Answer a = Get(*source, kTable);
  ASSERT_FALSE(a.token.ok());
  const absl::Status& s = a.token.status();
  EXPECT_EQ(s.code(), GetParam().want) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), absl::StrCat("HTTP ", GetParam().status))) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), server.url() + "/oidc/v1/token")) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), kTable)) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "nope")) << s;  // body excerpt
  // Only a status that cannot come from a token endpoint blames the URL.
  EXPECT_EQ(absl::StrContains(s.message(), "check zerobus.workspace_url"),
            GetParam().want == absl::StatusCode::kFailedPrecondition)
      << s;
  ExpectNoSecret(s);

  // Failures are not cached: the next GetToken asks again.
  Answer b = Get(*source, kTable);
  ASSERT_TRUE(b.token.ok()) << b.token.status();
  EXPECT_EQ(*b.token, "tok-after");
  EXPECT_EQ(server.count(), 2u);
}

INSTANTIATE_TEST_SUITE_P(
    Statuses, HttpErrorTest,
    ::testing::Values(HttpErrorCase{500, absl::StatusCode::kUnavailable},
                      HttpErrorCase{502, absl::StatusCode::kUnavailable},
                      HttpErrorCase{503, absl::StatusCode::kUnavailable},
                      HttpErrorCase{429, absl::StatusCode::kUnavailable},
                      // OAuth's invalid_client and invalid_grant come as 400
                      // or 401 (RFC 6749 5.2): both are the credentials.
                      HttpErrorCase{400, absl::StatusCode::kUnauthenticated},
                      HttpErrorCase{401, absl::StatusCode::kUnauthenticated},
                      HttpErrorCase{403, absl::StatusCode::kPermissionDenied},
                      // No token endpoint there: a wrong workspace_url.
                      HttpErrorCase{404, absl::StatusCode::kFailedPrecondition},
                      HttpErrorCase{405, absl::StatusCode::kFailedPrecondition},
                      HttpErrorCase{410, absl::StatusCode::kFailedPrecondition},
                      // A request timeout on the server side retries like ours.
                      HttpErrorCase{408, absl::StatusCode::kUnavailable},
                      // Redirects are not followed (the secret stays put).
                      HttpErrorCase{301, absl::StatusCode::kFailedPrecondition},
                      HttpErrorCase{302, absl::StatusCode::kFailedPrecondition},
                      HttpErrorCase{307, absl::StatusCode::kFailedPrecondition}),
    [](const auto& info) { return absl::StrCat("Http", info.param.status); });

TEST(OAuthTokenSourceTest, LongErrorBodyIsTruncatedInMessage) {
  FakeTokenServer server;
  server.Push(Scripted{500, std::string(5000, 'x')});
  auto source = MakeOAuthTokenSource(Options(server.url()));
  absl::Status s = Get(*source, kTable).token.status();
  EXPECT_TRUE(absl::IsUnavailable(s)) << s;
  EXPECT_LT(s.message().size(), 500u) << s;
}

TEST(OAuthTokenSourceTest, ErrorBodyStaysOnOneLine) {
  FakeTokenServer server;
  server.Push(Scripted{400, "line one\nFAKE LOG LINE\r\x01"});
  auto source = MakeOAuthTokenSource(Options(server.url()));
  absl::Status s = Get(*source, kTable).token.status();
  EXPECT_TRUE(absl::IsUnauthenticated(s)) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "line one\\x0aFAKE LOG LINE\\x0d\\x01")) << s;
}

TEST(OAuthTokenSourceTest, BodyWithoutAccessTokenIsRetryable) {
  FakeTokenServer server;
  server.Push(Scripted{200, R"({"token_type":"Bearer","expires_in":3600})"});
  auto source = MakeOAuthTokenSource(Options(server.url()));
  absl::Status s = Get(*source, kTable).token.status();
  EXPECT_TRUE(absl::IsUnavailable(s)) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "HTTP 200")) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), server.url() + "/oidc/v1/token")) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "token_type")) << s;  // the excerpt
  EXPECT_TRUE(absl::StrContains(s.message(), "access_token")) << s;
  ExpectNoSecret(s);
}

TEST(OAuthTokenSourceTest, UnparsableBodyIsRetryable) {
  FakeTokenServer server;
  server.Push(Scripted{200, "<html>proxy login</html>"});
  auto source = MakeOAuthTokenSource(Options(server.url()));
  absl::Status s = Get(*source, kTable).token.status();
  EXPECT_TRUE(absl::IsUnavailable(s)) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "HTTP 200")) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), server.url() + "/oidc/v1/token")) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "proxy login")) << s;
}

TEST(OAuthTokenSourceTest, DeeplyNestedBodyIsRefusedWithoutRecursion) {
  FakeTokenServer server;
  // 30,000 levels inside the 64 KiB capture: rapidjson's recursive DOM
  // would overflow the fetch thread's stack.
  server.Push(Scripted{200, "{\"access_token\":" + std::string(30000, '[') + std::string(30000, ']') + "}"});
  auto source = MakeOAuthTokenSource(Options(server.url()));
  absl::Status s = Get(*source, kTable).token.status();
  EXPECT_TRUE(absl::IsUnavailable(s)) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "not a JSON object")) << s;
}

TEST(OAuthTokenSourceTest, TokenThatIsNotAHeaderValueIsRetryable) {
  // JSON escapes: the second one decodes to a CR LF (header injection).
  for (const std::string bad : {"TKN with space", "TKN\\r\\nX-Injected: 1", "TKN\\u00e9", ""}) {
    SCOPED_TRACE(bad);
    FakeTokenServer server;
    server.Push(Scripted{200, absl::StrCat(R"({"access_token":")", bad, R"(","expires_in":3600})")});
    auto source = MakeOAuthTokenSource(Options(server.url()));
    absl::Status s = Get(*source, kTable).token.status();
    EXPECT_TRUE(absl::IsUnavailable(s)) << s;
    EXPECT_FALSE(absl::StrContains(s.message(), "TKN")) << s;
  }
}

TEST(OAuthTokenSourceTest, ConnectionRefusedIsUnavailable) {
  const int port = testing::FreePort();  // nothing listens there
  auto source = MakeOAuthTokenSource(Options(absl::StrCat("http://127.0.0.1:", port)));
  absl::Status s = Get(*source, kTable).token.status();
  EXPECT_TRUE(absl::IsUnavailable(s)) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), absl::StrCat("127.0.0.1:", port))) << s;
  ExpectNoSecret(s);
}

TEST(OAuthTokenSourceTest, TimeoutIsUnavailable) {
  FakeTokenServer server;
  Scripted held = TokenReply("late");
  held.hold = true;
  server.Push(held);
  OAuthOptions o = Options(server.url());
  o.http_timeout = 300ms;
  auto source = MakeOAuthTokenSource(o);
  absl::Status s = Get(*source, kTable).token.status();
  EXPECT_TRUE(absl::IsUnavailable(s)) << s;
  ExpectNoSecret(s);
  server.Release();
}

TEST(OAuthTokenSourceTest, BadTableNameFailsWithoutHttp) {
  FakeTokenServer server;
  auto source = MakeOAuthTokenSource(Options(server.url()));
  for (const char* bad : {"", "a.b", "a.b.c.d", "a..c", ".b.c", "a.b.", "abc"}) {
    SCOPED_TRACE(bad);
    Answer a = Get(*source, bad);
    EXPECT_TRUE(absl::IsInvalidArgument(a.token.status())) << a.token.status();
    EXPECT_TRUE(a.inline_call);
  }
  EXPECT_EQ(server.count(), 0u);
}

TEST(OAuthTokenSourceTest, BadOptionsFailWithoutHttp) {
  FakeTokenServer server;
  OAuthOptions no_id = Options(server.url());
  no_id.workspace_id.clear();
  OAuthOptions bad_scheme = Options("ftp://127.0.0.1:1");
  OAuthOptions no_host = Options("https:///");
  OAuthOptions no_client = Options(server.url());
  no_client.client_id.clear();
  for (const OAuthOptions& o : {no_id, bad_scheme, no_host, no_client}) {
    SCOPED_TRACE(o.workspace_url);
    auto source = MakeOAuthTokenSource(o);
    absl::Status s = Get(*source, kTable).token.status();
    EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
    ExpectNoSecret(s);
  }
  EXPECT_EQ(server.count(), 0u);
}

TEST(OAuthTokenSourceTest, SecretNeverInErrorMessages) {
  FakeTokenServer server;
  const std::string echo = absl::StrCat("client_secret=", kSecret);
  server.Push(Scripted{401, echo});
  server.Push(Scripted{200, echo});                                      // not JSON
  server.Push(Scripted{200, absl::StrCat(R"({"error":")", kSecret, R"("})")});  // no access_token
  server.Push(Scripted{502, echo});
  auto source = MakeOAuthTokenSource(Options(server.url()));
  for (int i = 0; i < 4; ++i) {
    absl::Status s = Get(*source, kTable).token.status();
    ASSERT_FALSE(s.ok());
    ExpectNoSecret(s);
    EXPECT_TRUE(absl::StrContains(s.message(), "[REDACTED]")) << s;
  }
  EXPECT_EQ(server.count(), 4u);
}

TEST(OAuthTokenSourceTest, StillValidTokenIsUsedWhenRefreshFailsRetryably) {
  FakeTokenServer server;
  // Lives 3 s, refreshed from 2.4 s on; the refresh fails with 503, the next
  // one with 401.
  server.Push(TokenReply("tok-1", "3"));
  server.Push(Scripted{503, "busy"});
  server.Push(Scripted{401, "revoked"});
  server.Push(Scripted{503, "busy again"});
  auto source = MakeOAuthTokenSource(Options(server.url()));
  TimedAnswer first;
  ASSERT_TRUE(FetchesTimed(*source, "tok-1", &first));

  ASSERT_TRUE(AdvanceTo(first.answered + 2400ms));
  // The refresh was tried (not the cache), failed, and tok-1 was given.
  EXPECT_TRUE(Gives(*source, server, "tok-1", From::kFetch, 2));

  // Still due: the next GetToken tries again. A fatal refresh failure is
  // reported, and drops the old token ...
  absl::Status s = Get(*source, kTable).token.status();
  EXPECT_TRUE(absl::IsUnauthenticated(s)) << s;
  EXPECT_EQ(server.count(), 3u);
  // ... so a retryable failure is reported too, though tok-1 has not expired.
  s = Get(*source, kTable).token.status();
  EXPECT_TRUE(absl::IsUnavailable(s)) << s;
  EXPECT_EQ(server.count(), 4u);
}

TEST(OAuthTokenSourceTest, ExpiredTokenIsNotUsedWhenRefreshFailsRetryably) {
  FakeTokenServer server;
  server.Push(TokenReply("tok-1", "3"));
  server.Push(Scripted{503, "busy"});
  server.Push(Scripted{503, "busy still"});
  server.Push(TokenReply("tok-2"));
  auto source = MakeOAuthTokenSource(Options(server.url()));
  TimedAnswer first;
  ASSERT_TRUE(FetchesTimed(*source, "tok-1", &first));

  ASSERT_TRUE(AdvanceTo(first.answered + 2400ms));
  EXPECT_TRUE(Gives(*source, server, "tok-1", From::kFetch, 2));

  // Its 3 s are over: the failure is reported, not the expired token.
  ASSERT_TRUE(AdvanceTo(first.answered + 3s));
  absl::Status s = Get(*source, kTable).token.status();
  EXPECT_TRUE(absl::IsUnavailable(s)) << s;
  EXPECT_EQ(server.count(), 3u);

  EXPECT_TRUE(Gives(*source, server, "tok-2", From::kFetch, 4));
}

TEST(OAuthTokenSourceTest, DestructionCancelsInFlightFetchPromptly) {
  FakeTokenServer server;
  Scripted held = TokenReply("never");
  held.hold = true;
  server.Push(held);
  OAuthOptions o = Options(server.url());
  o.http_timeout = 60s;  // destruction must not wait for this
  std::mutex mu;
  std::vector<absl::Status> results;
  auto source = MakeOAuthTokenSource(o);
  auto record = [&](absl::StatusOr<std::string> t) {
    std::lock_guard<std::mutex> lock(mu);
    results.push_back(t.status());
  };
  source->GetToken(kTable, record);
  source->GetToken(kTable, record);
  ASSERT_TRUE(testing::WaitFor([&] { return server.count() == 1; }, 10s));

  const auto start = std::chrono::steady_clock::now();
  source.reset();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);
  std::lock_guard<std::mutex> lock(mu);
  ASSERT_EQ(results.size(), 2u);  // all answered before the destructor returned
  for (const absl::Status& s : results) EXPECT_TRUE(absl::IsCancelled(s)) << s;
}

TEST(OAuthTokenSourceTest, DestructionWithNothingPendingIsQuick) {
  const auto start = std::chrono::steady_clock::now();
  { auto source = MakeOAuthTokenSource(Options("https://example.invalid")); }
  EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);
}

// Given the caller's executor, every answer runs there: a fetched token
// (never on the worker), a cached one and a refusal known at once (never
// inline), and what the callback captured is released there too.
TEST(OAuthTokenSourceTest, GivenAnExecutorEveryAnswerRunsOnIt) {
  FakeTokenServer server;
  server.Push(TokenReply("tok-1"));
  std::atomic<int> wrong_thread{0};
  std::atomic<int> answered{0};
  zb::testing::LoopExecutor executor;  // after the counters: what it still runs at its end finds them
  auto source = MakeOAuthTokenSource(Options(server.url()));

  Delivered fetched = GetVia(*source, kTable, executor.post());
  ASSERT_TRUE(fetched.token.ok()) << fetched.token.status();
  EXPECT_EQ(fetched.thread, executor.id());

  Delivered cached = GetVia(*source, kTable, executor.post());
  ASSERT_TRUE(cached.token.ok()) << cached.token.status();
  EXPECT_EQ(*cached.token, "tok-1");
  EXPECT_EQ(cached.thread, executor.id()) << "not inline";
  EXPECT_EQ(server.count(), 1u);

  Delivered bad_table = GetVia(*source, "not-a-table", executor.post());
  EXPECT_TRUE(absl::IsInvalidArgument(bad_table.token.status())) << bad_table.token.status();
  EXPECT_EQ(bad_table.thread, executor.id()) << "not inline";

  auto misconfigured = MakeOAuthTokenSource(Options(""));
  Delivered bad_options = GetVia(*misconfigured, kTable, executor.post());
  EXPECT_TRUE(absl::IsInvalidArgument(bad_options.token.status())) << bad_options.token.status();
  EXPECT_EQ(bad_options.thread, executor.id()) << "not inline";

  // The callback holds the only reference (the answer may run before this
  // thread would drop a copy of its own).
  source->GetToken(
      kTable,
      [witness = std::make_shared<Witness>(&wrong_thread, executor.id()), &answered](absl::StatusOr<std::string>) {
        ++answered;
      },
      executor.post());
  ASSERT_TRUE(testing::WaitFor([&] { return answered.load() == 1; }, 10s));
  executor.Stop();
  EXPECT_EQ(wrong_thread.load(), 0) << "the callback's captures were released on the executor";
}

// The destructor cancels a pending fetch; given an executor, the
// cancellation is queued there before the destructor returns and runs there.
TEST(OAuthTokenSourceTest, DestructionCancelsOnTheCallersExecutor) {
  FakeTokenServer server;
  Scripted held = TokenReply("never");
  held.hold = true;
  server.Push(held);
  OAuthOptions o = Options(server.url());
  o.http_timeout = 60s;
  std::promise<Delivered> promise;  // outlives the executor, which outlives the source
  auto future = promise.get_future();
  zb::testing::LoopExecutor executor;
  auto source = MakeOAuthTokenSource(o);
  source->GetToken(
      kTable,
      [&promise](absl::StatusOr<std::string> t) {
        Delivered d;
        d.token = std::move(t);
        d.thread = std::this_thread::get_id();
        promise.set_value(std::move(d));
      },
      executor.post());
  ASSERT_TRUE(testing::WaitFor([&] { return server.count() == 1; }, 10s));
  source.reset();
  ASSERT_EQ(future.wait_for(10s), std::future_status::ready);
  Delivered d = future.get();
  EXPECT_TRUE(absl::IsCancelled(d.token.status())) << d.token.status();
  EXPECT_EQ(d.thread, executor.id());
}

// --- Redaction -------------------------------------------------------------
//
// A token endpoint (or a proxy in front of it) may echo our request in its
// error body; the daemon logs the message and shows it as a lane's parked
// reason. These tests make the fake endpoint echo the request, and re-encode
// the credential it decoded from the Basic header, in every form a server
// could, and check that none reaches the message.

// Every byte class an encoder treats differently: percent-encoding ('+', '/',
// '=', '&', 'é', ' ', ':'), JSON ('/', 'é') and HTML ('&') escaping, and a ':'
// that Basic auth must carry unmangled.
constexpr char kEchoSecret[] = "s3cr+t/=&\xc3\xa9 q:9~Z";

OAuthOptions EchoOptions(const std::string& url) {
  OAuthOptions o = Options(url);
  o.client_secret = kEchoSecret;
  return o;
}

std::string PercentEncode(absl::string_view in, bool upper, bool plus_for_space, bool encode_all) {
  std::string out;
  for (char c : in) {
    const auto u = static_cast<unsigned char>(c);
    const bool unreserved = absl::ascii_isalnum(u) || c == '-' || c == '.' || c == '_' || c == '~';
    if (unreserved && !encode_all) {
      out += c;
    } else if (c == ' ' && plus_for_space) {
      out += '+';
    } else {
      std::string hex = absl::StrCat(absl::Hex(u, absl::kZeroPad2));
      absl::StrAppend(&out, "%", upper ? absl::AsciiStrToUpper(hex) : hex);
    }
  }
  return out;
}

std::string StdBase64Bare(absl::string_view in) {
  std::string b64 = absl::Base64Escape(in);
  return b64.substr(0, b64.find('='));
}
std::string UrlBase64Padded(absl::string_view in) {
  std::string b64 = absl::WebSafeBase64Escape(in);
  b64.append((4 - b64.size() % 4) % 4, '=');
  return b64;
}

// The characters of base64(prefix + secret + suffix) that only the secret
// decides: what a longer encoded blob holding the secret would show.
std::string EmbeddedBase64Core(absl::string_view prefix, absl::string_view secret) {
  const std::string enc = absl::Base64Escape(absl::StrCat(prefix, secret, "!!"));
  const size_t first = (8 * prefix.size() + 5) / 6;
  const size_t last = 8 * (prefix.size() + secret.size()) / 6;
  return enc.substr(first, last - first);
}

// Every form of the credential a message must not hold.
std::vector<std::string> CredentialForms(absl::string_view id, absl::string_view secret) {
  const std::string pair = absl::StrCat(id, ":", secret);
  std::vector<std::string> forms = {
      std::string(secret),
      PercentEncode(secret, true, false, false),
      PercentEncode(secret, false, false, false),
      PercentEncode(secret, true, true, false),
      PercentEncode(secret, false, false, true),
      absl::StrReplaceAll(secret, {{"/", "\\/"}, {"\xc3\xa9", "\\u00e9"}}),
  };
  for (absl::string_view s : {absl::string_view(secret), absl::string_view(pair)}) {
    forms.push_back(absl::Base64Escape(s));
    forms.push_back(StdBase64Bare(s));
    forms.push_back(absl::WebSafeBase64Escape(s));
    forms.push_back(UrlBase64Padded(s));
    forms.push_back(EmbeddedBase64Core("x", s));
    forms.push_back(EmbeddedBase64Core("xy", s));
  }
  return forms;
}

// No 8-byte window of any form: a form cut in two (by truncation, or by a
// redaction that only caught part of it) fails too.
void ExpectNoCredential(absl::string_view message, absl::string_view id, absl::string_view secret) {
  constexpr size_t kWindow = 8;
  for (const std::string& form : CredentialForms(id, secret)) {
    for (size_t i = 0; i + kWindow <= form.size(); ++i) {
      const absl::string_view window = absl::string_view(form).substr(i, kWindow);
      ASSERT_FALSE(absl::StrContains(message, window))
          << "\"" << window << "\" of \"" << form << "\" in: " << message;
    }
  }
}

// The credential as the server decodes it from the Basic header.
std::pair<std::string, std::string> BasicCredential(const RecordedRequest& r) {
  std::string pair;
  if (!absl::StartsWith(r.authorization, "Basic ") ||
      !absl::Base64Unescape(r.authorization.substr(6), &pair)) {
    return {"", ""};
  }
  std::pair<std::string, std::string> kv = absl::StrSplit(pair, absl::MaxSplits(':', 1));
  return kv;
}

std::string JsonEcho(const RecordedRequest& r) {
  rapidjson::StringBuffer buf;
  rapidjson::Writer<rapidjson::StringBuffer> w(buf);
  w.StartObject();
  w.Key("method");
  w.String(r.method.c_str());
  w.Key("headers");
  w.StartObject();
  for (const auto& [name, value] : r.headers) {
    w.Key(name.c_str());
    w.String(value.c_str());
  }
  w.EndObject();
  w.Key("body");
  w.String(r.body.c_str());
  w.EndObject();
  return std::string(buf.GetString(), buf.GetSize());
}

struct EchoCase {
  std::string name;
  // The body after "ECHO " (which keeps every body invalid JSON, so a 200
  // takes the parse-error path); gets the request and its decoded credential.
  std::function<std::string(const RecordedRequest&, const std::string& id, const std::string& secret)> body;
  // Whether the redacted body is longer than the excerpt (so the message
  // must note the full length).
  bool long_body = false;
};

std::vector<EchoCase> EchoCases() {
  using R = const RecordedRequest&;
  using S = const std::string&;
  std::vector<EchoCase> cases = {
      {"RawRequest", [](R r, S, S) { return r.raw; }, true},
      {"JsonRequest", [](R r, S, S) { return JsonEcho(r); }, true},
      {"Base64PairStdPadded",
       [](R, S id, S secret) { return absl::StrCat("bad ", absl::Base64Escape(id + ":" + secret), " ok"); }},
      {"Base64PairStdBare",
       [](R, S id, S secret) { return absl::StrCat("bad ", StdBase64Bare(id + ":" + secret), " ok"); }},
      {"Base64PairUrlBare",
       [](R, S id, S secret) {
         return absl::StrCat("bad ", absl::WebSafeBase64Escape(id + ":" + secret), " ok");
       }},
      {"Base64PairUrlPadded",
       [](R, S id, S secret) { return absl::StrCat("bad ", UrlBase64Padded(id + ":" + secret), " ok"); }},
      {"Base64SecretAlone",
       [](R, S, S secret) { return absl::StrCat("bad ", absl::Base64Escape(secret), " ok"); }},
      {"Base64PairEmbeddedAtOffset1",
       [](R, S id, S secret) {
         return absl::StrCat("blob ", absl::Base64Escape("x" + id + ":" + secret + "yz"));
       }},
      {"Base64PairEmbeddedAtOffset2",
       [](R, S id, S secret) {
         return absl::StrCat("blob ", absl::Base64Escape("xy" + id + ":" + secret + "z"));
       }},
      {"RawPair", [](R, S id, S secret) { return absl::StrCat("user ", id, ":", secret, " denied"); }},
      {"PercentUpper",
       [](R, S, S secret) {
         return absl::StrCat("secret=", PercentEncode(secret, true, false, false), " no");
       }},
      {"PercentLower",
       [](R, S, S secret) {
         return absl::StrCat("got ", PercentEncode(secret, false, false, false), " no");
       }},
      {"PercentPlusForSpace",
       [](R, S, S secret) { return absl::StrCat("got ", PercentEncode(secret, true, true, false), " no"); }},
      {"PercentEverything",
       [](R, S, S secret) { return absl::StrCat("got ", PercentEncode(secret, false, false, true), " no"); }},
      {"ClientSecretFormField",
       [](R, S, S secret) {
         return absl::StrCat("client_secret=", PercentEncode(secret, true, true, false), "&grant_type=x");
       }},
      {"JsonEscaped",
       [](R, S, S secret) {
         return absl::StrCat(R"({"detail":")",
                             absl::StrReplaceAll(secret, {{"/", "\\/"}, {"\xc3\xa9", "\\u00E9"}}), R"("})");
       }},
      {"HtmlEscaped",
       [](R, S, S secret) {
         return absl::StrCat("<p>", absl::StrReplaceAll(secret, {{"&", "&amp;"}, {"\xc3\xa9", "&#233;"}}),
                             "</p>");
       }},
      // The secret straddles the 200-byte cut: cutting first would leave its
      // first half unredacted.
      {"SecretAtTruncationPoint",
       [](R, S, S secret) { return absl::StrCat(std::string(190, '.'), secret, std::string(100, '.')); },
       true},
  };
  return cases;
}

struct EchoStatus {
  int http;
  absl::StatusCode want;
};

class EchoTest : public ::testing::TestWithParam<std::tuple<EchoCase, EchoStatus>> {};

TEST_P(EchoTest, EchoedCredentialNeverReachesTheMessage) {
  const auto& [echo_case, status] = GetParam();
  FakeTokenServer server;
  Scripted answer{status.http, ""};
  answer.echo = [body = echo_case.body](const RecordedRequest& r) {
    auto [id, secret] = BasicCredential(r);
    return absl::StrCat("ECHO ", body(r, id, secret));
  };
  server.Push(answer);
  auto source = MakeOAuthTokenSource(EchoOptions(server.url()));
  absl::Status s = Get(*source, kTable).token.status();
  ASSERT_EQ(server.count(), 1u);
  // The test really echoed the credential the daemon sent.
  ASSERT_EQ(BasicCredential(server.requests()[0]),
            (std::pair<std::string, std::string>{kClientId, kEchoSecret}));

  EXPECT_EQ(s.code(), status.want) << s;
  ExpectNoCredential(s.message(), kClientId, kEchoSecret);
  // Still useful: what failed, the HTTP status, the body with the secret
  // masked, and how long the body was when cut.
  EXPECT_TRUE(absl::StrContains(s.message(), absl::StrCat(": HTTP ", status.http, ": "))) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), kTable)) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "ECHO ")) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "[RED")) << s;  // the cut may split the mask
  EXPECT_FALSE(absl::StrContains(s.message(), "]]")) << s;   // a mask is never re-masked
  if (echo_case.long_body) {
    EXPECT_TRUE(absl::StrContains(s.message(), " bytes in all]")) << s;
  }
  if (echo_case.name == "RawRequest") {
    EXPECT_TRUE(absl::StrContains(s.message(), "POST /oidc/v1/token HTTP/1.1")) << s;
    EXPECT_TRUE(absl::StrContains(s.message(), "Authorization: Basic [REDACTED]")) << s;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Echoes, EchoTest,
    ::testing::Combine(::testing::ValuesIn(EchoCases()),
                       ::testing::Values(EchoStatus{401, absl::StatusCode::kUnauthenticated},
                                         EchoStatus{400, absl::StatusCode::kUnauthenticated},
                                         EchoStatus{500, absl::StatusCode::kUnavailable},
                                         EchoStatus{404, absl::StatusCode::kFailedPrecondition},
                                         // 200 with a body that is not JSON.
                                         EchoStatus{200, absl::StatusCode::kUnavailable})),
    [](const auto& info) {
      return absl::StrCat(std::get<0>(info.param).name, "Http", std::get<1>(info.param).http);
    });

TEST(OAuthTokenSourceTest, BodyNoteGivesFullLengthOfLongBodies) {
  FakeTokenServer server;
  server.Push(Scripted{503, absl::StrCat("busy ", std::string(4995, 'x'))});
  auto source = MakeOAuthTokenSource(Options(server.url()));
  absl::Status s = Get(*source, kTable).token.status();
  EXPECT_TRUE(absl::IsUnavailable(s)) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "HTTP 503: busy xxx")) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "[5000 bytes in all]")) << s;
  EXPECT_FALSE(absl::StrContains(s.message(), std::string(201, 'x'))) << s;
}

// Past 64 KiB the client stops reading, so it no longer knows the full
// length; it says so, with what the server announced.
TEST(OAuthTokenSourceTest, BodyBeyondTheCapIsNotedAsCutWithItsAnnouncedLength) {
  FakeTokenServer server;
  server.Push(Scripted{502, std::string(100'000, 'y')});
  auto source = MakeOAuthTokenSource(Options(server.url()));
  absl::Status s = Get(*source, kTable).token.status();
  EXPECT_TRUE(absl::IsUnavailable(s)) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "HTTP 502: yyyy")) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), " ... [more than 65536 bytes (Content-Length 100000); stopped reading]"))
      << s;
  EXPECT_FALSE(absl::StrContains(s.message(), "bytes in all")) << s;
  EXPECT_FALSE(absl::StrContains(s.message(), std::string(201, 'y'))) << s;
}

// --- Replies too large to be token responses --------------------------------
//
// The client reads at most 64 KiB of any reply's body, then closes the
// connection; the status line alone classifies the reply.

constexpr size_t kHugeBody = 100 * 1024 * 1024;
// Far below the body, and far above what the client reads (64 KiB) plus
// what the two sockets hold in flight.
constexpr size_t kReadAtMost = 4 * 1024 * 1024;

struct HugeCase {
  std::string name;
  int status;
  bool announce_length;  // Content-Length, or chunked
  std::string prefix;    // the body starts with it, spaces follow
  absl::StatusCode want;
};

void PrintTo(const HugeCase& c, std::ostream* os) { *os << c.name; }

class HugeBodyTest : public ::testing::TestWithParam<HugeCase> {};

TEST_P(HugeBodyTest, ClientStopsReadingAndClassifiesByStatusLine) {
  const HugeCase& c = GetParam();
  FakeTokenServer server;
  Scripted huge{c.status, c.prefix};
  huge.stream_bytes = kHugeBody;
  huge.announce_length = c.announce_length;
  server.Push(huge);
  server.Push(TokenReply("tok-after"));
  OAuthOptions o = Options(server.url());
  o.http_timeout = 60s;  // an answer by timeout would be far too late
  auto source = MakeOAuthTokenSource(o);

  const auto start = std::chrono::steady_clock::now();
  Answer a = Get(*source, kTable, 30s);
  const auto took = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(a.token.ok());
  const absl::Status& s = a.token.status();
  EXPECT_EQ(s.code(), c.want) << s;
  EXPECT_LT(took, 10s) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), absl::StrCat("HTTP ", c.status, ": "))) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), server.url() + "/oidc/v1/token")) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), kTable)) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "more than 65536 bytes")) << s;
  EXPECT_EQ(absl::StrContains(s.message(), absl::StrCat("(Content-Length ", kHugeBody, ")")), c.announce_length)
      << s;
  if (absl::StrContains(c.prefix, "access_token")) {
    // A valid token reply padded with whitespace: too large all the same,
    // and its token is not quoted.
    EXPECT_FALSE(absl::StrContains(s.message(), "tok-big")) << s;
    EXPECT_TRUE(absl::StrContains(s.message(), "withheld")) << s;
  } else {
    EXPECT_TRUE(absl::StrContains(s.message(), c.prefix)) << s;  // the excerpt
    EXPECT_TRUE(absl::StrContains(s.message(), "stopped reading]")) << s;
  }
  ExpectNoSecret(s);

  // The server saw the client go away long before the body's end.
  std::optional<StreamOutcome> out = server.WaitForStream(0, 30s);
  ASSERT_TRUE(out.has_value()) << "the server is still writing the body";
  EXPECT_FALSE(out->complete);
  EXPECT_LT(out->body_bytes, kReadAtMost) << "written before the client closed (" << out->error << ")";

  // Nothing was cached from the failure: the next GetToken asks again.
  Answer b = Get(*source, kTable);
  ASSERT_TRUE(b.token.ok()) << b.token.status();
  EXPECT_EQ(*b.token, "tok-after");
  EXPECT_EQ(server.count(), 2u);
}

INSTANTIATE_TEST_SUITE_P(
    Replies, HugeBodyTest,
    ::testing::Values(
        HugeCase{"Ok200Chunked", 200, false, R"({"note":"huge-chunked)", absl::StatusCode::kUnavailable},
        HugeCase{"Ok200Announced", 200, true, R"({"note":"huge-announced)", absl::StatusCode::kUnavailable},
        HugeCase{"Ok200ValidTokenPadded", 200, true, R"({"access_token":"tok-big","expires_in":3600})",
                 absl::StatusCode::kUnavailable},
        HugeCase{"Unavailable503Chunked", 503, false, "huge-503-page", absl::StatusCode::kUnavailable},
        HugeCase{"Unauthorized401Announced", 401, true, "huge-401-page", absl::StatusCode::kUnauthenticated},
        HugeCase{"Forbidden403Chunked", 403, false, "huge-403-page", absl::StatusCode::kPermissionDenied},
        HugeCase{"NotFound404Chunked", 404, false, "huge-404-page", absl::StatusCode::kFailedPrecondition}),
    [](const auto& info) { return info.param.name; });

TEST(OAuthTokenSourceTest, TokenReplyOfExactlyTheCapIsReadOneByteMoreIsNot) {
  std::string body = R"({"access_token":"tok-cap","expires_in":3600})";
  body.resize(64 * 1024, ' ');
  FakeTokenServer server;
  server.Push(Scripted{200, body});
  server.Push(Scripted{200, body + " "});
  auto source = MakeOAuthTokenSource(Options(server.url()));
  Answer a = Get(*source, kTable);
  ASSERT_TRUE(a.token.ok()) << a.token.status();
  EXPECT_EQ(*a.token, "tok-cap");
  source->Invalidate(kTable);
  absl::Status s = Get(*source, kTable).token.status();
  EXPECT_TRUE(absl::IsUnavailable(s)) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "too large for a token response")) << s;
  EXPECT_FALSE(absl::StrContains(s.message(), "tok-cap")) << s;
}

// Every kind of bad reply, each followed by a good one: the failure reaches
// the caller with its class, and the next GetToken fetches again and gets the
// token (no failure is cached).
TEST(OAuthTokenSourceTest, BadReplyThenGoodReplyGivesTheToken) {
  struct Bad {
    const char* what;
    Scripted reply;
    absl::StatusCode want;
  };
  Scripted huge{200, R"({"note":"x)"};
  huge.stream_bytes = kHugeBody;
  huge.announce_length = false;
  const std::vector<Bad> bads = {
      {"invalid JSON", Scripted{200, "{\"access_token\": oops"}, absl::StatusCode::kUnavailable},
      {"HTML", Scripted{200, "<html>maintenance</html>"}, absl::StatusCode::kUnavailable},
      {"no access_token", Scripted{200, R"({"expires_in":3600})"}, absl::StatusCode::kUnavailable},
      {"access_token not a string", Scripted{200, R"({"access_token":42})"}, absl::StatusCode::kUnavailable},
      {"bad expires_in", TokenReply("tok-x", "[]"), absl::StatusCode::kUnavailable},
      {"huge", huge, absl::StatusCode::kUnavailable},
      {"503", Scripted{503, "busy"}, absl::StatusCode::kUnavailable},
      {"400 invalid_client", Scripted{400, R"({"error":"invalid_client"})"}, absl::StatusCode::kUnauthenticated},
      {"403", Scripted{403, "no grants"}, absl::StatusCode::kPermissionDenied},
      {"404", Scripted{404, "no such page"}, absl::StatusCode::kFailedPrecondition},
  };
  FakeTokenServer server;
  for (size_t i = 0; i < bads.size(); ++i) {
    server.Push(bads[i].reply);
    server.Push(TokenReply(absl::StrCat("tok-", i)));
  }
  auto source = MakeOAuthTokenSource(Options(server.url()));
  for (size_t i = 0; i < bads.size(); ++i) {
    SCOPED_TRACE(bads[i].what);
    absl::Status s = Get(*source, kTable).token.status();
    EXPECT_EQ(s.code(), bads[i].want) << s;
    EXPECT_TRUE(absl::StrContains(s.message(), absl::StrCat("HTTP ", bads[i].reply.status))) << s;
    Answer good = Get(*source, kTable);
    ASSERT_TRUE(good.token.ok()) << good.token.status();
    EXPECT_EQ(*good.token, absl::StrCat("tok-", i));
    EXPECT_FALSE(good.inline_call);  // fetched, not a cached answer
    source->Invalidate(kTable);      // so the next bad reply is not hidden by the cache
  }
  EXPECT_EQ(server.count(), 2 * bads.size());
}

TEST(OAuthTokenSourceTest, FetchedTokensNeverReachLaterMessages) {
  constexpr char kToken[] = "tok-0123456789-FETCHED-abcdef";
  FakeTokenServer server;
  server.Push(TokenReply(kToken));
  // Each echoes the token a different way; the first bare, after the cache
  // has let it go (Invalidate).
  server.Push(Scripted{500, absl::StrCat("ECHO old token ", kToken, " revoked")});
  server.Push(Scripted{401, absl::StrCat("ECHO token=", PercentEncode(kToken, true, true, false))});
  server.Push(Scripted{400, absl::StrCat(R"(ECHO {"seen":")", kToken, R"("})")});
  auto source = MakeOAuthTokenSource(Options(server.url()));
  ASSERT_EQ(*Get(*source, kTable).token, kToken);
  source->Invalidate(kTable);
  for (int i = 0; i < 3; ++i) {
    SCOPED_TRACE(i);
    absl::Status s = Get(*source, kTable).token.status();
    ASSERT_FALSE(s.ok());
    EXPECT_FALSE(absl::StrContains(s.message(), "0123456789")) << s;
    EXPECT_TRUE(absl::StrContains(s.message(), "ECHO")) << s;
    EXPECT_TRUE(absl::StrContains(s.message(), "[REDACTED]")) << s;
  }
  EXPECT_EQ(server.count(), 4u);
}

TEST(OAuthTokenSourceTest, TokenShapedValuesInBodiesAreMasked) {
  // Tokens this source never fetched: masked by their shape.
  const std::string jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzcCJ9.c2lnbmF0dXJlLWJ5dGVz";
  FakeTokenServer server;
  server.Push(Scripted{400, "ECHO access_token=UNSEEN-FORM-TOKEN&token_type=Bearer"});
  server.Push(Scripted{503, "ECHO Authorization: Bearer UNSEEN-BEARER-TOKEN\r\nHost: x"});
  server.Push(Scripted{500, absl::StrCat("ECHO upstream said ", jwt)});
  server.Push(Scripted{403, R"(ECHO {"refresh_token":"UNSEEN-REFRESH","id_token":"UNSEEN-ID"})"});
  auto source = MakeOAuthTokenSource(Options(server.url()));
  for (int i = 0; i < 4; ++i) {
    SCOPED_TRACE(i);
    absl::Status s = Get(*source, kTable).token.status();
    ASSERT_FALSE(s.ok());
    EXPECT_FALSE(absl::StrContains(s.message(), "UNSEEN")) << s;
    EXPECT_FALSE(absl::StrContains(s.message(), "c2lnbmF0dXJl")) << s;
    EXPECT_TRUE(absl::StrContains(s.message(), "[REDACTED]")) << s;
  }
}

TEST(OAuthTokenSourceTest, InvalidJsonThatMayHoldATokenIsWithheld) {
  FakeTokenServer server;
  // Not JSON, and the token is in a shape no field rule knows.
  server.Push(Scripted{200, "<access_token>UNSEEN-XML-TOKEN</access_token>"});
  auto source = MakeOAuthTokenSource(Options(server.url()));
  absl::Status s = Get(*source, kTable).token.status();
  EXPECT_TRUE(absl::IsUnavailable(s)) << s;
  EXPECT_FALSE(absl::StrContains(s.message(), "UNSEEN")) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "HTTP 200")) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "45 bytes withheld")) << s;
}

TEST(OAuthTokenSourceTest, OAuthRedactorMasksTheConfiguredCredential) {
  const Redactor r = OAuthRedactor(EchoOptions("https://example.invalid"));
  for (const std::string& form : CredentialForms(kClientId, kEchoSecret)) {
    SCOPED_TRACE(form);
    EXPECT_EQ(r.Redact(absl::StrCat("<", form, ">")), "<[REDACTED]>");
  }
  // No secret configured: nothing but credential-shaped fields is masked
  // (in particular not every "sp-app-id:").
  OAuthOptions no_secret = Options("https://example.invalid");
  no_secret.client_secret.clear();
  EXPECT_EQ(OAuthRedactor(no_secret).Redact("client sp-app-id: ok"), "client sp-app-id: ok");
}

// --- Redactor on its own --------------------------------------------------

constexpr char kRedactSecret[] = "s3cr+t/=&\xc3\xa9";

TEST(RedactorTest, MasksEveryEncodingOfASecret) {
  const Redactor r({kRedactSecret});
  const std::vector<std::string> forms = {
      kRedactSecret,
      "s3cr%2Bt%2F%3D%26%C3%A9",             // upper-case hex
      "s3cr%2bt%2f%3d%26%c3%a9",             // lower-case hex
      "%73%33%63%72%2B%74%2F%3D%26%C3%A9",   // everything escaped
      "s3cr+t%2F=%26%C3%A9",                 // some escaped, some not
      "s3cr+t\\/=&\\u00e9",                  // JSON
      "s3cr\\u002bt\\u002F=\\u0026\\u00E9",  // JSON, \u for ASCII too
      "s3cr+t/=&amp;&#233;",                 // HTML
      "s3cr+t/=&#x26;&#xE9;",                // HTML, hex
      absl::Base64Escape(kRedactSecret),     // czNjcit0Lz0mw6k=
      StdBase64Bare(kRedactSecret),
      absl::WebSafeBase64Escape(kRedactSecret),
      UrlBase64Padded(kRedactSecret),
      PercentEncode(absl::Base64Escape(kRedactSecret), true, false, false),  // base64 in a URL
  };
  for (const std::string& form : forms) {
    SCOPED_TRACE(form);
    EXPECT_EQ(r.Redact(absl::StrCat("a ", form, " b")), "a [REDACTED] b");
  }
}

TEST(RedactorTest, MasksSpaceAsPlusInFormEncoding) {
  const Redactor r({"pass word"});
  EXPECT_EQ(r.Redact("x=pass+word&y=1"), "x=[REDACTED]&y=1");
  EXPECT_EQ(r.Redact("x=pass%20word&y=1"), "x=[REDACTED]&y=1");
  EXPECT_EQ(r.Redact("pass word"), "[REDACTED]");
}

TEST(RedactorTest, MasksBase64EmbeddedInALongerBlob) {
  const std::string secret = "an-embedded-secret-value";
  const Redactor r({secret});
  for (const std::string prefix : {"", "a", "ab", "abc", "abcd"}) {
    SCOPED_TRACE(prefix);
    const std::string blob = absl::Base64Escape(absl::StrCat(prefix, secret, "-trailer"));
    const std::string out = r.Redact(blob);
    EXPECT_TRUE(absl::StrContains(out, "[REDACTED]")) << out;
    // At most the characters shared with the neighbouring bytes remain.
    EXPECT_LT(out.size() - Redactor::kMask.size(), blob.size() - secret.size()) << out;
    EXPECT_FALSE(absl::StrContains(out, EmbeddedBase64Core(prefix, secret).substr(0, 8))) << out;
  }
}

TEST(RedactorTest, PairAndSecretAreBothMaskedLongestFirst) {
  const Redactor r({"s3cret-value", "client:s3cret-value"});
  EXPECT_EQ(r.Redact("client:s3cret-value"), "[REDACTED]");
  EXPECT_EQ(r.Redact("id other:s3cret-value"), "id other:[REDACTED]");
  EXPECT_EQ(r.Redact(absl::StrCat("Basic ", absl::Base64Escape("client:s3cret-value"))), "Basic [REDACTED]");
}

TEST(RedactorTest, MasksAuthorizationValuesKeepingTheScheme) {
  const Redactor r;  // no secrets: field rules only
  EXPECT_EQ(r.Redact("Host: a\r\nAuthorization: Basic dXNlcjpwdw==\r\nAccept: */*"),
            "Host: a\r\nAuthorization: Basic [REDACTED]\r\nAccept: */*");
  EXPECT_EQ(r.Redact("proxy-authorization:Negotiate YIIabc"), "proxy-authorization:Negotiate [REDACTED]");
  EXPECT_EQ(r.Redact(R"({"Authorization": "Bearer a\/b", "x": 1})"),
            R"({"Authorization": "Bearer [REDACTED]", "x": 1})");
  EXPECT_EQ(r.Redact(R"(\"authorization\":\"Basic abc\")"), R"(\"authorization\":\"Basic [REDACTED]\")");
  EXPECT_EQ(r.Redact("authorization=Basic%20dXNlcjpwdw%3D%3D&x=1"), "authorization=Basic%20[REDACTED]&x=1");
  EXPECT_EQ(r.Redact("AUTHORIZATION: opaque-value"), "AUTHORIZATION: [REDACTED]");
  // A quote never closed runs to the end.
  EXPECT_EQ(r.Redact(R"({"authorization":"Basic dXNlcjpwdw==)"), R"({"authorization":"Basic [REDACTED])");
}

TEST(RedactorTest, MasksBearerBasicAndJwtByShape) {
  const Redactor r;
  EXPECT_EQ(r.Redact("sent Bearer abc.DEF-123_x~+/== to"), "sent Bearer [REDACTED] to");
  EXPECT_EQ(r.Redact("bearer%20abc"), "bearer%20[REDACTED]");
  EXPECT_EQ(r.Redact(absl::StrCat("basic ", absl::Base64Escape("u:p"), ".")), "basic [REDACTED].");
  EXPECT_EQ(r.Redact("x eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0.sig y"), "x [REDACTED] y");
  EXPECT_EQ(r.Redact("x eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0. y"), "x [REDACTED] y");
}

TEST(RedactorTest, MasksTokenAndSecretFields) {
  const Redactor r;
  EXPECT_EQ(r.Redact(R"({"access_token":"t\"k","expires_in":3600})"),
            R"({"access_token":"[REDACTED]","expires_in":3600})");
  EXPECT_EQ(r.Redact(R"({"access_token" : 12345})"), R"({"access_token" : [REDACTED]})");
  EXPECT_EQ(r.Redact("grant_type=x&client_secret=a%2Bb&scope=y"),
            "grant_type=x&client_secret=[REDACTED]&scope=y");
  EXPECT_EQ(r.Redact("access_token=abc def"), "access_token=[REDACTED] def");
  EXPECT_EQ(r.Redact(R"({\"refresh_token\":\"abc\"})"), R"({\"refresh_token\":\"[REDACTED]\"})");
  EXPECT_EQ(r.Redact("ID_TOKEN='abc' password=hunter2"), "ID_TOKEN='[REDACTED]' password=[REDACTED]");
  EXPECT_EQ(r.Redact("client_assertion=abc"), "client_assertion=[REDACTED]");
}

TEST(RedactorTest, LeavesOrdinaryTextAlone) {
  const Redactor r({"unrelated-secret"});
  for (const std::string& text : {
           std::string(R"({"token_type":"Bearer","expires_in":3600})"),
           std::string("authorization_details=%5B%7B%22type%22%5D&scope=all-apis"),
           std::string("Basic auth failed"),
           std::string("response's access_token is not a string"),
           std::string("response has no \"access_token\" member; body: {}"),
           std::string("Authorization failed for client sp-app-id"),
           std::string("HTTP 401 for main.edge.readings at http://127.0.0.1:8080/oidc/v1/token"),
           std::string("50% done, 100%; a+b \\u00 &amp &#xZZ;"),
       }) {
    SCOPED_TRACE(text);
    EXPECT_EQ(r.Redact(text), text);
  }
  // "Bearer" is always followed by a token as far as the rules know: prose
  // loses a word, which is the safe side.
  EXPECT_EQ(r.Redact("Bearer token expected"), "Bearer [REDACTED] expected");
}

TEST(RedactorTest, RedactingTwiceLeavesMasksAlone) {
  const Redactor r({kRedactSecret});
  for (const std::string& text : {
           absl::StrCat("Authorization: Basic ", absl::Base64Escape(kRedactSecret), "\r\nHost: x"),
           absl::StrCat(R"({"access_token":")", kRedactSecret, R"("})"),
           std::string("a Bearer xyz b eyJa.eyJb.c"),
           std::string("client_secret=a]b&x=1 password=(p) Authorization: x]"),
       }) {
    const std::string once = r.Redact(text);
    EXPECT_EQ(r.Redact(once), once);
    EXPECT_FALSE(absl::StrContains(once, "s3cr")) << once;
  }
}

TEST(RedactorTest, WithAddsSecrets) {
  const Redactor base({"first-secret"});
  const Redactor more = base.With({"second-secret", ""});
  EXPECT_EQ(more.Redact("first-secret second-secret"), "[REDACTED] [REDACTED]");
  EXPECT_EQ(base.Redact("second-secret"), "second-secret");  // base unchanged
}

TEST(RedactorTest, RedactStatusKeepsTheCode) {
  const Redactor r({"hunter2"});
  absl::Status s = r.RedactStatus(absl::PermissionDeniedError("pw hunter2 rejected"));
  EXPECT_TRUE(absl::IsPermissionDenied(s));
  EXPECT_EQ(s.message(), "pw [REDACTED] rejected");
  EXPECT_TRUE(r.RedactStatus(absl::OkStatus()).ok());
}

TEST(RedactorTest, PrefixTextMasksASecretItEndsInside) {
  const Redactor r({kRedactSecret});
  // Complete text: a secret's first bytes are not the secret.
  EXPECT_EQ(r.Redact("abc s3cr+"), "abc s3cr+");
  // The start of something longer (a capped capture): they may be.
  EXPECT_EQ(r.Redact("abc s3cr+", true), "abc [REDACTED]");
  EXPECT_EQ(r.Redact("abc s3cr%2Bt%2", true), "abc [REDACTED]");  // cut inside an escape
  EXPECT_EQ(r.Redact("abc czNjcit0", true), "abc [REDACTED]");    // base64, cut
  EXPECT_EQ(r.Redact("x Bearer eyJhbGciOi", true), "x Bearer [REDACTED]");
  EXPECT_EQ(r.Redact("x eyJhbGciOi.eyJz", true), "x [REDACTED]");
}

TEST(RedactorTest, ExcerptRedactsBeforeItCuts) {
  const Redactor r({kRedactSecret});
  constexpr size_t kMax = 200;
  bool cutting_first_would_leak = false;
  // The secret starts anywhere from well before to exactly at the cut.
  for (size_t at = kMax - 20; at <= kMax; ++at) {
    SCOPED_TRACE(at);
    const std::string body = absl::StrCat(std::string(at, '.'), kRedactSecret, std::string(50, '.'));
    const std::string excerpt = RedactedExcerpt(r, body, kMax);
    EXPECT_FALSE(absl::StrContains(excerpt, "s3")) << excerpt;
    EXPECT_TRUE(absl::StrContains(excerpt, absl::StrCat(" ... [", body.size(), " bytes in all]"))) << excerpt;
    // The wrong order: the cut leaves a piece no redaction recognises.
    if (at < kMax && absl::StrContains(r.Redact(body.substr(0, kMax)), "s3")) cutting_first_would_leak = true;
  }
  EXPECT_TRUE(cutting_first_would_leak);
}

TEST(RedactorTest, ExcerptOfACappedCaptureMasksItsTail) {
  const Redactor r({kRedactSecret});
  // The capture cap (not the excerpt) cut the secret; the excerpt shows all
  // of the short redacted capture, so the tail must be masked.
  const std::string capture = absl::StrCat(kRedactSecret, " and again s3cr+t");
  const std::string excerpt = RedactedExcerpt(r, capture, 200, 70'000);
  EXPECT_EQ(excerpt, "[REDACTED] and again [REDACTED] ... [70000 bytes in all]");
}

TEST(RedactorTest, ExcerptEscapesControlAndNonAsciiBytes) {
  const Redactor r;
  EXPECT_EQ(RedactedExcerpt(r, "a\nb\\c\xc3\xa9", 200), "a\\x0ab\\x5cc\\xc3\\xa9");
  EXPECT_EQ(RedactedExcerpt(r, "short", 200), "short");  // nothing left out, no note
}

}  // namespace
}  // namespace zb
