// Tests for the OAuth token source against a real HTTP server on 127.0.0.1
// (Boost.Beast, synchronous, one connection at a time, scripted answers).

#include <stdlib.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "auth/token_source.h"
#include "gtest/gtest.h"
#include "rapidjson/document.h"
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
};

struct Scripted {
  int status = 200;
  std::string body;
  bool hold = false;  // answer only after Release() (or server shutdown)
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
        requests_.push_back(RecordedRequest{
            std::string(req.method_string()), std::string(req.target()),
            std::string(req[http::field::authorization]), std::string(req[http::field::content_type]),
            std::string(req[http::field::user_agent]), req.body()});
        if (!script_.empty()) {
          answer = std::move(script_.front());
          script_.pop_front();
        }
        if (answer.hold) cv_.wait(lock, [this] { return released_ || stopping_; });
        if (stopping_) return;
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

  asio::io_context ioc_;
  tcp::acceptor acceptor_;
  int port_ = 0;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Scripted> script_;
  std::vector<RecordedRequest> requests_;
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
// to a fifth of the lifetime, so the token is refreshed after ~0.8 s (not at
// once, and not after it has expired).
class RefreshTest : public ::testing::TestWithParam<std::string> {};

TEST_P(RefreshTest, RefreshesShortLivedTokenBeforeExpiry) {
  FakeTokenServer server;
  server.Push(TokenReply("tok-1", GetParam()));
  server.Push(TokenReply("tok-2"));
  auto source = MakeOAuthTokenSource(Options(server.url()));
  const auto start = std::chrono::steady_clock::now();
  ASSERT_EQ(*Get(*source, kTable).token, "tok-1");
  ASSERT_TRUE(testing::WaitFor(
      [&] {
        Answer a = Get(*source, kTable);
        return a.token.ok() && *a.token == "tok-2";
      },
      10s));
  const auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_GE(elapsed, 700ms);  // not refreshed before ~0.8 s
  EXPECT_EQ(server.count(), 2u);
  EXPECT_EQ(*Get(*source, kTable).token, "tok-2");  // now cached for an hour
  EXPECT_EQ(server.count(), 2u);
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

TEST(OAuthTokenSourceTest, MissingExpiresInDefaultsToAnHour) {
  FakeTokenServer server;
  server.Push(Scripted{200, R"({"access_token":"tok-1"})"});
  auto source = MakeOAuthTokenSource(Options(server.url()));
  ASSERT_EQ(*Get(*source, kTable).token, "tok-1");
  EXPECT_EQ(*Get(*source, kTable).token, "tok-1");
  EXPECT_EQ(server.count(), 1u);
}

TEST(OAuthTokenSourceTest, ZeroExpiresInIsDeliveredButNotCached) {
  FakeTokenServer server;
  server.Push(TokenReply("tok-1", "0"));
  server.Push(TokenReply("tok-2"));
  auto source = MakeOAuthTokenSource(Options(server.url()));
  ASSERT_EQ(*Get(*source, kTable).token, "tok-1");
  EXPECT_EQ(*Get(*source, kTable).token, "tok-2");
  EXPECT_EQ(server.count(), 2u);
}

TEST(OAuthTokenSourceTest, NonNumericExpiresInIsFatal) {
  FakeTokenServer server;
  server.Push(TokenReply("tok-1", "\"soon\""));
  auto source = MakeOAuthTokenSource(Options(server.url()));
  Answer a = Get(*source, kTable);
  EXPECT_TRUE(absl::IsInvalidArgument(a.token.status())) << a.token.status();
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
                      HttpErrorCase{503, absl::StatusCode::kUnavailable},
                      HttpErrorCase{429, absl::StatusCode::kUnavailable},
                      HttpErrorCase{401, absl::StatusCode::kUnauthenticated},
                      HttpErrorCase{403, absl::StatusCode::kPermissionDenied},
                      HttpErrorCase{400, absl::StatusCode::kInvalidArgument},
                      HttpErrorCase{404, absl::StatusCode::kInvalidArgument},
                      // A request timeout on the server side retries like ours.
                      HttpErrorCase{408, absl::StatusCode::kUnavailable},
                      // Redirects are not followed (the secret stays put).
                      HttpErrorCase{302, absl::StatusCode::kInvalidArgument}),
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
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "line one\\x0aFAKE LOG LINE\\x0d\\x01")) << s;
}

TEST(OAuthTokenSourceTest, BodyWithoutAccessTokenIsFatal) {
  FakeTokenServer server;
  server.Push(Scripted{200, R"({"token_type":"Bearer","expires_in":3600})"});
  auto source = MakeOAuthTokenSource(Options(server.url()));
  absl::Status s = Get(*source, kTable).token.status();
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "access_token")) << s;
  ExpectNoSecret(s);
}

TEST(OAuthTokenSourceTest, UnparsableBodyIsFatal) {
  FakeTokenServer server;
  server.Push(Scripted{200, "<html>proxy login</html>"});
  auto source = MakeOAuthTokenSource(Options(server.url()));
  absl::Status s = Get(*source, kTable).token.status();
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "proxy login")) << s;
}

TEST(OAuthTokenSourceTest, TokenThatIsNotAHeaderValueIsFatal) {
  // JSON escapes: the second one decodes to a CR LF (header injection).
  for (const std::string bad : {"TKN with space", "TKN\\r\\nX-Injected: 1", "TKN\\u00e9", ""}) {
    SCOPED_TRACE(bad);
    FakeTokenServer server;
    server.Push(Scripted{200, absl::StrCat(R"({"access_token":")", bad, R"(","expires_in":3600})")});
    auto source = MakeOAuthTokenSource(Options(server.url()));
    absl::Status s = Get(*source, kTable).token.status();
    EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
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
    EXPECT_TRUE(absl::StrContains(s.message(), "<redacted>")) << s;
  }
  EXPECT_EQ(server.count(), 4u);
}

TEST(OAuthTokenSourceTest, StillValidTokenIsUsedWhenRefreshFailsRetryably) {
  FakeTokenServer server;
  // Lives 3 s, refreshed from 2.4 s on; the refresh fails with 503.
  server.Push(TokenReply("tok-1", "3"));
  server.Push(Scripted{503, "busy"});
  server.Push(Scripted{401, "revoked"});
  auto source = MakeOAuthTokenSource(Options(server.url()));
  ASSERT_EQ(*Get(*source, kTable).token, "tok-1");
  absl::StatusOr<std::string> during_refresh;
  ASSERT_TRUE(testing::WaitFor(
      [&] {
        during_refresh = Get(*source, kTable).token;
        return server.count() == 2;
      },
      10s));
  ASSERT_TRUE(during_refresh.ok()) << during_refresh.status();
  EXPECT_EQ(*during_refresh, "tok-1");
  // A fatal refresh failure is reported, and drops the old token.
  absl::Status s = Get(*source, kTable).token.status();
  EXPECT_TRUE(absl::IsUnauthenticated(s)) << s;
  EXPECT_EQ(server.count(), 3u);
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

}  // namespace
}  // namespace zb
