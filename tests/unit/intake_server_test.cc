// The intake server over real Unix sockets into a real RocksDB spool: line
// mode and framed mode, every rejection with its reason, ordering of replies.

#include "intake/intake_server.h"

#include <endian.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <boost/asio/post.hpp>
#include <algorithm>
#include <filesystem>
#include <future>
#include <thread>

#include <sys/stat.h>

#include "absl/strings/str_cat.h"
#include "common/unix_socket.h"
#include "gtest/gtest.h"
#include "spdlog/sinks/ringbuffer_sink.h"
#include "intake.pb.h"
#include "spdlog/spdlog.h"
#include "testutil.h"

namespace zb {
namespace {

namespace asio = boost::asio;
namespace intake = ::zerobusd::intake;
using zb::testing::TempDir;

class IntakeServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (getenv("ZB_TRACE")) spdlog::set_level(spdlog::level::trace);
    SpoolOptions so;
    so.path = dir_.Sub("spool");
    spool_ = std::move(OpenRocksDbSpool(so)).value();
    metrics_ = MakePrometheusMetrics();
  }

  void Start(std::vector<IntakeRoute> routes, size_t max_record_bytes = 1 << 20, size_t read_chunk_bytes = 64 << 10) {
    auto table = std::make_shared<IntakeRouteTable>();
    for (auto& r : routes) (*table)[r.name] = r;
    IntakeOptions options = options_;
    options.socket_path = dir_.Sub("run/intake.sock");
    options.max_record_bytes = max_record_bytes;
    options.max_inflight_bytes = 1 << 20;
    options.read_chunk_bytes = read_chunk_bytes;
    options.block_when_full = block_when_full_;
    std::promise<absl::Status> started;
    asio::post(loop_, [&] {
      auto s = StartIntakeServer(loop_, options, table, *spool_, *metrics_);
      if (s.ok()) server_ = std::move(*s);
      started.set_value(s.status());
    });
    thread_ = std::thread([this] {
      auto guard = asio::make_work_guard(loop_);
      loop_.run();
    });
    ASSERT_TRUE(started.get_future().get().ok());
  }

  void TearDown() override {
    std::promise<void> stopped;
    asio::post(loop_, [&] {
      server_.reset();
      stopped.set_value();
    });
    if (thread_.joinable()) {
      stopped.get_future().wait();
      loop_.stop();
      thread_.join();
    }
    spool_.reset();  // while loop_ lives: appends still waiting in the spool are answered through it
  }

  // Reopens the spool with a cap of `max_bytes` (before Start).
  void CapSpool(uint64_t max_bytes) {
    spool_.reset();
    SpoolOptions so;
    so.path = dir_.Sub("spool");
    so.max_bytes = max_bytes;
    spool_ = std::move(OpenRocksDbSpool(so)).value();
  }

  static IntakeRoute Route(const std::string& name) {
    IntakeRoute r;
    r.name = name;
    r.codec = MakeJsonCodec();
    return r;
  }

  int Connect() {
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    const std::string path = dir_.Sub("run/intake.sock");
    std::memcpy(addr.sun_path, path.c_str(), path.size());
    EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    return fd;
  }

  // Sends `input`, half-closes, and returns everything the daemon answered.
  std::string Exchange(const std::string& input) {
    int fd = Connect();
    struct timeval tv{20, 0};  // a lost reply fails the test instead of hanging it
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    EXPECT_EQ(send(fd, input.data(), input.size(), MSG_NOSIGNAL), static_cast<ssize_t>(input.size()));
    shutdown(fd, SHUT_WR);
    std::string out;
    char buf[4096];
    ssize_t n;
    while ((n = recv(fd, buf, sizeof(buf), 0)) > 0) out.append(buf, n);
    close(fd);
    return out;
  }

  std::vector<std::string> Spooled(const std::string& lane) {
    std::vector<std::string> out;
    auto records = spool_->ReadFrom(lane, 1, 1000000, 1 << 30);  // keep the StatusOr alive while iterating
    EXPECT_TRUE(records.ok()) << records.status();
    for (auto& r : *records) out.push_back(r.payload);
    return out;
  }

  static std::string Frame(const intake::ClientFrame& f) {
    const std::string body = f.SerializeAsString();
    const uint32_t len = htobe32(static_cast<uint32_t>(body.size()));
    return std::string(reinterpret_cast<const char*>(&len), 4) + body;
  }

  static std::vector<intake::ServerFrame> ParseFrames(const std::string& bytes) {
    std::vector<intake::ServerFrame> out;
    size_t pos = 0;
    while (pos + 4 <= bytes.size()) {
      uint32_t len = 0;
      std::memcpy(&len, bytes.data() + pos, 4);
      len = be32toh(len);
      intake::ServerFrame f;
      EXPECT_TRUE(f.ParseFromArray(bytes.data() + pos + 4, static_cast<int>(len)));
      out.push_back(f);
      pos += 4 + len;
    }
    EXPECT_EQ(pos, bytes.size());
    return out;
  }

  // Reads everything until EOF or `timeout`; true when EOF came.
  static bool ReadUntilEof(int fd, std::string* out, std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    char buf[4096];
    while (std::chrono::steady_clock::now() < deadline) {
      pollfd p{fd, POLLIN, 0};
      if (poll(&p, 1, 50) <= 0) continue;
      const ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
      if (n == 0 || (n < 0 && errno == ECONNRESET)) return true;
      if (n > 0) out->append(buf, static_cast<size_t>(n));
    }
    return false;
  }

  // Runs `f` on the loop and waits for it.
  template <typename F>
  auto OnLoop(F f) {
    std::packaged_task<decltype(f())()> task(std::move(f));
    auto result = task.get_future();
    asio::post(loop_, [&task] { task(); });
    return result.get();
  }

  bool block_when_full_ = true;
  IntakeOptions options_;  // Start() sets the socket, record limit, chunk and policy
  TempDir dir_;
  std::unique_ptr<Spool> spool_;
  std::unique_ptr<Metrics> metrics_;
  asio::io_context loop_;
  std::thread thread_;
  std::unique_ptr<IntakeServer> server_;
};

TEST_F(IntakeServerTest, LineModeSpoolsRecordsInOrderAndAnswersOk) {
  Start({Route("a"), Route("b")});
  const std::string reply = Exchange("@route a\n{\"id\":1}\n{\"id\":2}\n\n{\"id\":3}\n");
  EXPECT_EQ(reply, "ok 5\n");
  EXPECT_EQ(Spooled("a"), (std::vector<std::string>{"{\"id\":1}", "{\"id\":2}", "{\"id\":3}"}));
  EXPECT_EQ(spool_->Stats("a").next_seq, 4u);
}

TEST_F(IntakeServerTest, LineModeRejectsEachBadLineWithItsReasonAndKeepsTheRest) {
  Start({Route("a"), Route("b")}, /*max_record_bytes=*/64);
  const std::string big = "{\"x\":\"" + std::string(100, 'y') + "\"}";
  const std::string reply = Exchange(
      "{\"before\":\"route\"}\n"  // 1: no route selected yet
      "@route nope\n"             // 2: unknown route
      "@route a\n"                // 3
      "{\"ok\":1}\n"              // 4
      "{\"broken\":\n"            // 5: invalid JSON
      "[1,2,3]\n"                 // 6: not an object
      + big + "\n"                // 7: too large
      "{\"ok\":2}\r\n"            // 8: CRLF tolerated
      "@frobnicate\n"             // 9: unknown directive
      "{\"ok\":3}");              // 10: last line without newline
  EXPECT_NE(reply.find("error 1 no route selected"), std::string::npos) << reply;
  EXPECT_NE(reply.find("error 2 unknown route \"nope\" (known: a, b)"), std::string::npos) << reply;
  EXPECT_NE(reply.find("error 5 invalid JSON"), std::string::npos) << reply;
  EXPECT_NE(reply.find("error 6 not a JSON object"), std::string::npos) << reply;
  EXPECT_NE(reply.find("error 7 record too large: 108 bytes, limit 64"), std::string::npos) << reply;
  EXPECT_NE(reply.find("error 9 unknown directive"), std::string::npos) << reply;
  EXPECT_EQ(reply.substr(reply.size() - 6), "ok 10\n") << reply;
  EXPECT_EQ(reply.find("error 4"), std::string::npos);
  EXPECT_EQ(Spooled("a"), (std::vector<std::string>{"{\"ok\":1}", "{\"ok\":2}", "{\"ok\":3}"}));
  auto exposition = metrics_->Exposition();
  EXPECT_EQ(zb::testing::MetricValue(exposition, "zerobusd_intake_records_total",
                                     "result=\"invalid\",route=\"a\"").value_or(-1), 2);
}

TEST_F(IntakeServerTest, OversizeLineLongerThanTheReadBufferIsSkippedWithoutBufferingIt) {
  Start({Route("a")}, /*max_record_bytes=*/1024);
  const std::string huge = "{\"x\":\"" + std::string(3 << 20, 'y') + "\"}";
  const std::string reply = Exchange(huge + "\n{\"after\":1}\n");
  EXPECT_NE(reply.find("error 1 record too large: " + std::to_string(huge.size()) + " bytes"), std::string::npos)
      << reply.substr(0, 200);
  EXPECT_NE(reply.find("ok 2\n"), std::string::npos);
  EXPECT_EQ(Spooled("a"), (std::vector<std::string>{"{\"after\":1}"}));
}

TEST_F(IntakeServerTest, AProtoRecordLargerThanTheLimitOnceEncodedIsRefused) {
  // JSON of 2 bytes per number becomes 9 bytes per number as an unpacked
  // repeated double: what is spooled (and sent) must fit the limit too.
  zb::testing::WriteFile(dir_.Sub("v.proto"), "syntax = \"proto2\";\nmessage V { repeated double x = 1; }\n");
  auto codec = MakeProtoCodec(dir_.Sub("v.proto"), "V");
  ASSERT_TRUE(codec.ok()) << codec.status();
  IntakeRoute r;
  r.name = "v";
  r.codec = std::move(*codec);
  Start({r}, /*max_record_bytes=*/4096);
  auto numbers = [](int n) {
    std::string json = "{\"x\":[";
    for (int i = 0; i < n; ++i) json += i == 0 ? "1" : ",1";
    return json + "]}";
  };
  const std::string small = numbers(400);  // ~810 bytes of JSON, 4000 as protobuf: fits
  const std::string big = numbers(1000);   // ~2010 bytes of JSON (under the limit), 10000 as protobuf
  ASSERT_LT(big.size(), 4096u);
  const std::string reply = Exchange("@route v\n" + small + "\n" + big + "\n");
  EXPECT_NE(reply.find("once encoded as protobuf"), std::string::npos) << reply;
  EXPECT_NE(reply.find("limit 4096 (intake.max_record_bytes)"), std::string::npos) << reply;
  EXPECT_EQ(Spooled("v").size(), 1u);
}

TEST_F(IntakeServerTest, LinesSplitAcrossReadsAreReassembled) {
  // The daemon reads 5 bytes at a time, so nearly every line is split.
  Start({Route("a")}, /*max_record_bytes=*/64, /*read_chunk_bytes=*/5);
  const std::string big = "{\"x\":\"" + std::string(100, 'y') + "\"}";
  const std::string reply = Exchange("{\"id\":1}\nnope\n" + big + "\n{\"id\":2}\n{\"id\":3}");
  EXPECT_NE(reply.find("error 2 invalid JSON"), std::string::npos) << reply;
  EXPECT_NE(reply.find("error 3 record too large"), std::string::npos) << reply;
  EXPECT_EQ(reply.substr(reply.size() - 5), "ok 5\n") << reply;
  EXPECT_EQ(Spooled("a"), (std::vector<std::string>{"{\"id\":1}", "{\"id\":2}", "{\"id\":3}"}));
}

TEST_F(IntakeServerTest, SingleRouteIsTheDefault) {
  Start({Route("only")});
  EXPECT_EQ(Exchange("{\"id\":1}\n"), "ok 1\n");
  EXPECT_EQ(Spooled("only").size(), 1u);
}

TEST_F(IntakeServerTest, PeerNotOnTheAllowListIsRefused) {
  IntakeRoute r = Route("locked");
  r.allow_uids = {getuid() + 12345};
  Start({r, Route("open")});
  const std::string reply = Exchange("@route locked\n{\"id\":1}\n");
  EXPECT_NE(reply.find("error 1 not allowed: uid " + std::to_string(getuid())), std::string::npos) << reply;
  EXPECT_TRUE(Spooled("locked").empty());
}

TEST_F(IntakeServerTest, PeerWhoseGroupIsAllowedMayWrite) {
  IntakeRoute r = Route("group");
  r.allow_uids = {getuid() + 12345};
  r.allow_gids = {getgid()};
  Start({r});
  EXPECT_EQ(Exchange("{\"id\":1}\n"), "ok 1\n");
}

TEST_F(IntakeServerTest, ManyRecordsFromConcurrentConnectionsAreAllSpooled) {
  Start({Route("a")});
  constexpr int kConns = 4, kPer = 5000;
  std::vector<std::thread> producers;
  std::vector<std::string> replies(kConns);
  for (int c = 0; c < kConns; ++c) {
    producers.emplace_back([&, c] {
      std::string input = "@route a\n";
      for (int i = 0; i < kPer; ++i) input += "{\"c\":" + std::to_string(c) + ",\"i\":" + std::to_string(i) + "}\n";
      replies[c] = Exchange(input);
    });
  }
  for (auto& t : producers) t.join();
  for (const auto& r : replies) {
    EXPECT_EQ(r.find("error"), std::string::npos);
    EXPECT_NE(r.find("ok " + std::to_string(kPer + 1) + "\n"), std::string::npos);
  }
  EXPECT_EQ(Spooled("a").size(), static_cast<size_t>(kConns * kPer));
}

TEST_F(IntakeServerTest, FramedModeAcksBatchesAndNacksWithReasons) {
  IntakeRoute locked = Route("locked");
  locked.allow_gids = {getgid() + 777};
  Start({Route("a"), locked}, /*max_record_bytes=*/100);
  std::string input;
  intake::ClientFrame hello;
  hello.mutable_hello()->set_client("test/1");
  input += Frame(hello);
  auto batch = [](uint64_t seq, const std::string& route, std::vector<std::string> recs) {
    intake::ClientFrame f;
    f.mutable_batch()->set_seq(seq);
    f.mutable_batch()->set_route(route);
    for (auto& r : recs) f.mutable_batch()->add_records(r);
    return Frame(f);
  };
  input += batch(1, "a", {"{\"n\":1}", "{\"n\":2}"});
  input += batch(2, "a", {"{\"n\":3}", "{oops"});
  input += batch(3, "zzz", {"{\"n\":4}"});
  input += batch(4, "a", {std::string(200, ' ') + "{}"});
  input += batch(5, "locked", {"{\"n\":5}"});
  input += batch(6, "a", {"{\"n\":6}"});
  const auto frames = ParseFrames(Exchange(input));
  ASSERT_EQ(frames.size(), 6u);
  EXPECT_TRUE(frames[0].has_ack());
  EXPECT_EQ(frames[0].ack().seq(), 1u);
  EXPECT_EQ(frames[0].ack().records(), 2u);
  EXPECT_EQ(frames[1].nack().seq(), 2u);
  EXPECT_EQ(frames[1].nack().reason(), intake::INVALID_RECORD);
  EXPECT_EQ(frames[1].nack().record_index(), 1);
  EXPECT_NE(frames[1].nack().message().find("record 1: invalid JSON"), std::string::npos);
  EXPECT_EQ(frames[2].nack().reason(), intake::UNKNOWN_ROUTE);
  EXPECT_EQ(frames[3].nack().reason(), intake::TOO_LARGE);
  EXPECT_EQ(frames[4].nack().reason(), intake::NOT_ALLOWED);
  EXPECT_EQ(frames[5].ack().seq(), 6u);
  // Batches are all-or-nothing: nothing of batch 2 was spooled.
  EXPECT_EQ(Spooled("a"), (std::vector<std::string>{"{\"n\":1}", "{\"n\":2}", "{\"n\":6}"}));
}

TEST_F(IntakeServerTest, AFullSpoolAnswersByPolicy) {
  // reject: at once, with the reason, in both modes.
  CapSpool(20);
  block_when_full_ = false;
  Start({Route("a")});
  EXPECT_EQ(Exchange("{\"id\":\"fits\"}\n"), "ok 1\n");
  const std::string reply = Exchange("{\"id\":\"does not fit\"}\n");
  EXPECT_NE(reply.find("error 1 not spooled: spool full"), std::string::npos) << reply;
  EXPECT_EQ(Spooled("a"), (std::vector<std::string>{"{\"id\":\"fits\"}"}));
}

TEST_F(IntakeServerTest, ABlockedFramedProducerThatSaidNoWaitGetsBusy) {
  CapSpool(20);
  Start({Route("a")});
  intake::ClientFrame hello;
  hello.mutable_hello()->set_no_wait(true);
  intake::ClientFrame batch;
  batch.mutable_batch()->set_seq(7);
  batch.mutable_batch()->set_route("a");
  batch.mutable_batch()->add_records(std::string("{\"id\":\"") + std::string(40, 'x') + "\"}");
  const auto frames = ParseFrames(Exchange(Frame(hello) + Frame(batch)));
  ASSERT_EQ(frames.size(), 1u);
  EXPECT_EQ(frames[0].nack().seq(), 7u);
  EXPECT_EQ(frames[0].nack().reason(), intake::BUSY);
  EXPECT_GT(frames[0].nack().retry_after_ms(), 0u);
  EXPECT_NE(frames[0].nack().message().find("spool full"), std::string::npos) << frames[0].nack().message();
}

// A route that cannot judge records yet (its table's columns were never
// read): framed batches get BUSY with a retry time, lines the reason, and
// nothing is spooled; counted as schema_unknown, not as invalid.
TEST_F(IntakeServerTest, ARouteThatCannotJudgeRecordsYetAnswersBusy) {
  IntakeRoute r = Route("t");
  r.codec = MakeRefusingCodec(absl::UnavailableError("route t takes no records yet: the columns of a.b.c"));
  Start({r});
  intake::ClientFrame batch;
  batch.mutable_batch()->set_seq(3);
  batch.mutable_batch()->set_route("t");
  batch.mutable_batch()->add_records("{}");
  const auto frames = ParseFrames(Exchange(Frame(batch)));
  ASSERT_EQ(frames.size(), 1u);
  EXPECT_EQ(frames[0].nack().seq(), 3u);
  EXPECT_EQ(frames[0].nack().reason(), intake::BUSY);
  EXPECT_GT(frames[0].nack().retry_after_ms(), 0u);
  EXPECT_NE(frames[0].nack().message().find("takes no records yet"), std::string::npos) << frames[0].nack().message();
  const std::string reply = Exchange("@route t\n{\"id\":1}\n");
  EXPECT_NE(reply.find("route t takes no records yet"), std::string::npos) << reply;
  EXPECT_TRUE(Spooled("t").empty());
}

TEST_F(IntakeServerTest, OversizeFrameIsRefusedAndTheConnectionClosed) {
  Start({Route("a")});
  intake::ClientFrame hello;
  hello.mutable_hello()->set_client("test/1");
  std::string input = Frame(hello);  // framed mode starts with a zero byte
  const uint32_t len = htobe32(64u << 20);
  input.append(reinterpret_cast<const char*>(&len), 4);
  const auto frames = ParseFrames(Exchange(input));
  ASSERT_EQ(frames.size(), 1u);
  EXPECT_EQ(frames[0].nack().reason(), intake::BAD_FRAME);
}

TEST_F(IntakeServerTest, AProducerThatDoesNotReadRepliesIsNotReadEither) {
  // Every "x" line earns a ~60-byte rejection. If the daemon kept reading
  // while the producer ignores its replies, it would buffer them without
  // bound; instead it stops reading once the replies fill the credit window
  // (1 MiB here), so the producer's sends stall.
  Start({Route("a")});
  int fd = Connect();
  const std::string chunk = [] {
    std::string c;
    for (int i = 0; i < 1000; ++i) c += "x\n";
    return c;
  }();
  size_t sent = 0;
  bool stalled = false;
  while (sent < (256u << 20)) {
    pollfd p{fd, POLLOUT, 0};
    if (poll(&p, 1, /*timeout_ms=*/1000) == 0) {
      stalled = true;
      break;
    }
    const ssize_t n = send(fd, chunk.data(), chunk.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) sent += static_cast<size_t>(n);
  }
  ASSERT_TRUE(stalled) << "the daemon read " << sent << " bytes without its replies being read";
  EXPECT_LT(sent, 16u << 20);
  // Reading the replies lets the daemon go on, and every line is answered.
  const size_t lines = sent / 2;
  ASSERT_EQ(sent % 2, 0u);
  shutdown(fd, SHUT_WR);
  struct timeval tv{20, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  std::string out;
  char buf[65536];
  ssize_t n;
  while ((n = recv(fd, buf, sizeof(buf), 0)) > 0) out.append(buf, n);
  close(fd);
  EXPECT_NE(out.find(absl::StrCat("error ", lines, " ")), std::string::npos);
  EXPECT_EQ(out.substr(out.size() - absl::StrCat("ok ", lines, "\n").size()), absl::StrCat("ok ", lines, "\n"));
}

TEST_F(IntakeServerTest, StaleSocketFileIsReplaced) {
  // A socket file left by a killed daemon must not stop the next start.
  const std::string path = dir_.Sub("run/intake.sock");
  std::filesystem::create_directories(dir_.Sub("run"));
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size());
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  close(fd);
  Start({Route("a")});
  EXPECT_EQ(Exchange("{\"id\":1}\n"), "ok 1\n");
}

// ----------------------------------------------------------- hostile producers

TEST_F(IntakeServerTest, HostileJsonDepthIsRefusedInBothModesAndTheServerGoesOn) {
  Start({Route("a")});
  // 200,000 nested arrays (400 KB, under the record limit): once a stack
  // overflow in the parser that explains refusals.
  const std::string deep = "{\"a\":" + std::string(200000, '[') + std::string(200000, ']') + "}";
  const std::string reply = Exchange("@route a\n" + deep + "\n{\"ok\":1}\n");
  EXPECT_NE(reply.find("error 2 JSON nested deeper than 64 levels"), std::string::npos) << reply.substr(0, 200);
  EXPECT_NE(reply.find("ok 3"), std::string::npos) << reply.substr(0, 200);
  intake::ClientFrame batch;
  batch.mutable_batch()->set_seq(9);
  batch.mutable_batch()->set_route("a");
  batch.mutable_batch()->add_records(deep);
  intake::ClientFrame hello;
  hello.mutable_hello()->set_client("test/1");
  const auto frames = ParseFrames(Exchange(Frame(hello) + Frame(batch)));
  ASSERT_EQ(frames.size(), 1u);
  EXPECT_EQ(frames[0].nack().reason(), intake::INVALID_RECORD);
  EXPECT_NE(frames[0].nack().message().find("nested deeper than"), std::string::npos) << frames[0].nack().message();
  EXPECT_EQ(Spooled("a"), (std::vector<std::string>{"{\"ok\":1}"}));
}

TEST_F(IntakeServerTest, IdleConnectionsAtTheLimitDoNotLockOutARealProducer) {
  options_.max_connections = 4;
  Start({Route("a")});
  std::vector<int> idle;
  for (int i = 0; i < 4; ++i) idle.push_back(Connect());
  ASSERT_TRUE(zb::testing::WaitFor([&] { return OnLoop([&] { return server_->connection_count(); }) == 4; },
                                   std::chrono::seconds(10)));
  // A producer arriving at the limit displaces the connection idle the
  // longest (the first), and is served.
  EXPECT_EQ(Exchange("{\"id\":1}\n"), "ok 1\n");
  std::string out;
  EXPECT_TRUE(ReadUntilEof(idle[0], &out, std::chrono::seconds(10)));
  EXPECT_EQ(out, "");
  for (int fd : idle) close(fd);
}

TEST_F(IntakeServerTest, AtTheLimitWithNoIdleConnectionANewOneIsRefused) {
  options_.max_connections = 2;
  Start({Route("a")});
  // Two producers in the middle of a record: neither is idle.
  std::vector<int> busy;
  for (int i = 0; i < 2; ++i) {
    busy.push_back(Connect());
    ASSERT_EQ(send(busy.back(), "{\"a\":", 5, MSG_NOSIGNAL), 5);
  }
  ASSERT_TRUE(zb::testing::WaitFor([&] { return OnLoop([&] { return server_->connection_count(); }) == 2; },
                                   std::chrono::seconds(10)));
  int refused = Connect();
  std::string out;
  EXPECT_TRUE(ReadUntilEof(refused, &out, std::chrono::seconds(10)));
  close(refused);
  for (int fd : busy) close(fd);
}

TEST_F(IntakeServerTest, AStalledRecordIsAnsweredAndClosedAfterTheReadTimeout) {
  options_.read_timeout_ms = 300;
  Start({Route("a")});
  int fd = Connect();
  const std::string input = "{\"id\":1}\n{\"id\":";
  ASSERT_EQ(send(fd, input.data(), input.size(), MSG_NOSIGNAL), static_cast<ssize_t>(input.size()));
  std::string out;
  ASSERT_TRUE(ReadUntilEof(fd, &out, std::chrono::seconds(10)));
  close(fd);
  EXPECT_NE(out.find("ok 1\n"), std::string::npos) << out;
  EXPECT_NE(out.find("error 2 record not complete within 300 ms of its first byte (intake.read_timeout_ms)"),
            std::string::npos)
      << out;
  EXPECT_EQ(Spooled("a"), (std::vector<std::string>{"{\"id\":1}"}));
}

TEST_F(IntakeServerTest, AOneByteAtATimeProducerIsClosedAtTheRecordDeadline) {
  // Bytes keep coming, but the record's deadline counts from its first byte.
  options_.read_timeout_ms = 400;
  Start({Route("a")});
  int fd = Connect();
  const auto start = std::chrono::steady_clock::now();
  bool closed = false;
  std::string out;
  for (int i = 0; i < 200 && !closed; ++i) {
    if (send(fd, "x", 1, MSG_NOSIGNAL) != 1) break;
    closed = ReadUntilEof(fd, &out, std::chrono::milliseconds(50));
  }
  if (!closed) closed = ReadUntilEof(fd, &out, std::chrono::seconds(10));
  close(fd);
  EXPECT_TRUE(closed);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  EXPECT_NE(out.find("error 1 record not complete within 400 ms"), std::string::npos) << out;
}

TEST_F(IntakeServerTest, AnIdleConnectionIsClosedAfterTheIdleTimeout) {
  options_.idle_timeout_ms = 200;
  Start({Route("a")});
  int fd = Connect();
  EXPECT_EQ(send(fd, "{\"id\":1}\n", 9, MSG_NOSIGNAL), 9);
  std::string out;
  EXPECT_TRUE(ReadUntilEof(fd, &out, std::chrono::seconds(10)));
  EXPECT_EQ(out, "ok 1\n");
  close(fd);
}

TEST_F(IntakeServerTest, PartialFramesAreAdmittedAgainstOneMemoryBudget) {
  // 64 framed producers each announce an almost 1 MiB frame and send half
  // of it. Memory stays within the budget (4 MiB): only the frames that fit
  // are admitted (reserved whole before their bodies are read); the others
  // are not read at all. Stalled ones are closed at the read deadline,
  // which frees the budget, and a real producer is served afterwards.
  options_.max_buffered_bytes = 4u << 20;
  options_.read_timeout_ms = 200;
  Start({Route("a")});
  constexpr uint32_t kFrame = (1u << 20) - 16;
  std::vector<int> hostile;
  intake::ClientFrame hello;
  hello.mutable_hello()->set_client("hostile/1");
  const std::string hello_frame = Frame(hello);
  const std::string half(kFrame / 2, 'z');
  for (int i = 0; i < 64; ++i) {
    int fd = Connect();
    const uint32_t len = htobe32(kFrame);
    std::string head = hello_frame;
    head.append(reinterpret_cast<const char*>(&len), 4);
    ASSERT_EQ(send(fd, head.data(), head.size(), MSG_NOSIGNAL), static_cast<ssize_t>(head.size()));
    ASSERT_GT(send(fd, half.data(), half.size(), MSG_NOSIGNAL | MSG_DONTWAIT), 0);
    hostile.push_back(fd);
  }
  size_t peak = 0;
  ASSERT_TRUE(zb::testing::WaitFor([&] { return OnLoop([&] { return server_->connection_count(); }) > 0; },
                                   std::chrono::seconds(10)));
  ASSERT_TRUE(zb::testing::WaitFor(
      [&] {
        const auto [conns, held] = OnLoop([&] { return std::pair(server_->connection_count(), server_->buffered_bytes()); });
        peak = std::max(peak, held);
        return conns == 0;
      },
      std::chrono::seconds(30)));
  EXPECT_LE(peak, 4u << 20);
  EXPECT_EQ(OnLoop([&] { return server_->buffered_bytes(); }), 0u);
  for (int fd : hostile) {
    std::string out;
    EXPECT_TRUE(ReadUntilEof(fd, &out, std::chrono::seconds(10)));
    const auto frames = ParseFrames(out);
    ASSERT_EQ(frames.size(), 1u);
    EXPECT_EQ(frames[0].nack().reason(), intake::BAD_FRAME);
    close(fd);
  }
  EXPECT_EQ(Exchange("{\"id\":1}\n"), "ok 1\n");
}

TEST_F(IntakeServerTest, WhenHostileFramedProducersGoAwayTheBudgetIsFreedAndOthersServed) {
  options_.max_buffered_bytes = 4u << 20;
  options_.read_timeout_ms = 60000;
  Start({Route("a")});
  constexpr uint32_t kFrame = (3u << 20) / 2;
  std::vector<int> hostile;
  for (int i = 0; i < 16; ++i) {
    int fd = Connect();
    const uint32_t len = htobe32(kFrame);
    const std::string head = std::string(4, '\0') + std::string(reinterpret_cast<const char*>(&len), 4);
    ASSERT_EQ(send(fd, head.data(), head.size(), MSG_NOSIGNAL), static_cast<ssize_t>(head.size()));
    const std::string body(kFrame - 1, 'z');
    size_t sent = 0;
    for (int tries = 0; tries < 100 && sent < body.size(); ++tries) {
      const ssize_t n = send(fd, body.data() + sent, body.size() - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) sent += static_cast<size_t>(n);
    }
    hostile.push_back(fd);
  }
  ASSERT_TRUE(zb::testing::WaitFor([&] { return OnLoop([&] { return server_->connection_count(); }) == 16; },
                                   std::chrono::seconds(10)));
  EXPECT_LE(OnLoop([&] { return server_->buffered_bytes(); }), 4u << 20);
  for (int fd : hostile) close(fd);
  ASSERT_TRUE(zb::testing::WaitFor([&] { return OnLoop([&] { return server_->connection_count(); }) == 0; },
                                   std::chrono::seconds(10)));
  EXPECT_EQ(OnLoop([&] { return server_->buffered_bytes(); }), 0u);
  EXPECT_EQ(Exchange("{\"id\":1}\n"), "ok 1\n");
}

TEST_F(IntakeServerTest, RepliesWaitingBehindABlockedAppendCountAndStopReading) {
  // One record waits in a full spool (when_full: block); every rejected
  // line after it earns a reply that must wait behind it. Those replies are
  // held memory: they close the credit window (1 MiB here) and count
  // against the budget, so the producer's sends stall.
  CapSpool(20);
  Start({Route("a")});
  int fd = Connect();
  const std::string first = "{\"id\":\"" + std::string(40, 'x') + "\"}\n";
  ASSERT_EQ(send(fd, first.data(), first.size(), MSG_NOSIGNAL), static_cast<ssize_t>(first.size()));
  ASSERT_TRUE(zb::testing::WaitFor([&] { return spool_->full(); }, std::chrono::seconds(10)));
  std::string chunk;
  for (int i = 0; i < 2000; ++i) chunk += absl::StrCat("bad ", i, "\n");  // each its own reason
  size_t sent = 0;
  bool stalled = false;
  while (sent < (64u << 20)) {
    pollfd p{fd, POLLOUT, 0};
    if (poll(&p, 1, 1000) == 0) {
      stalled = true;
      break;
    }
    const ssize_t n = send(fd, chunk.data(), chunk.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) sent += static_cast<size_t>(n);
  }
  EXPECT_TRUE(stalled) << "the daemon read " << sent << " bytes while their replies could not be sent";
  const size_t held = OnLoop([&] { return server_->buffered_bytes(); });
  EXPECT_GT(held, 512u << 10) << "waiting replies are counted";
  EXPECT_LT(held, 4u << 20);
  close(fd);
}

TEST_F(IntakeServerTest, AProducerHeldByAFullSpoolIsNotBlamedForItsUnfinishedRecord) {
  // when_full: block stops reading the producer; the read deadline is the
  // producer's clock and must not run meanwhile.
  auto sink = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(1000);
  spdlog::default_logger()->sinks().push_back(sink);
  CapSpool(20);
  options_.read_timeout_ms = 200;
  Start({Route("a")});
  int fd = Connect();
  std::string input;
  while (input.size() < (3u << 20)) input += "{\"id\":\"" + std::string(97, 'y') + "\"}\n";
  size_t sent = 0;
  ASSERT_TRUE(zb::testing::WaitFor(
      [&] {
        const ssize_t n = send(fd, input.data() + sent, input.size() - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) sent += static_cast<size_t>(n);
        pollfd p{fd, POLLOUT, 0};
        return poll(&p, 1, 0) == 0 && OnLoop([&] { return server_->buffered_bytes(); }) >= (1u << 20);
      },
      std::chrono::seconds(10)));
  // Several read deadlines pass while the daemon holds the producer.
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(1000);
  zb::testing::WaitFor([&] { return std::chrono::steady_clock::now() >= until; }, std::chrono::seconds(2));
  spdlog::default_logger()->sinks().pop_back();
  for (const auto& line : sink->last_formatted()) {
    EXPECT_EQ(line.find("not complete in time"), std::string::npos) << line;
  }
  EXPECT_EQ(send(fd, "z", 1, MSG_NOSIGNAL | MSG_DONTWAIT) == 1 || errno == EAGAIN, true) << strerror(errno);
  EXPECT_EQ(OnLoop([&] { return server_->connection_count(); }), 1u);
  close(fd);
}

TEST_F(IntakeServerTest, LongLinesAreAdmittedWholeSoHonestProducersNeverWaitOnEachOther) {
  // Six producers each send one complete 200 KiB line into a budget too
  // small for all of them at once. Each line is admitted whole when it
  // starts, so they take turns; none waits on memory another one holds.
  options_.max_buffered_bytes = 1536u << 10;  // one 1 MiB line limit + room
  options_.read_timeout_ms = 0;               // no deadline can hide a deadlock
  Start({Route("a")});
  constexpr int kProducers = 6;
  std::vector<int> fds;
  for (int i = 0; i < kProducers; ++i) fds.push_back(Connect());
  std::vector<std::thread> threads;
  std::vector<std::string> outs(kProducers);
  for (int i = 0; i < kProducers; ++i) {
    threads.emplace_back([&, i] {
      const std::string line = "{\"id\":\"" + std::string(200 << 10, static_cast<char>('a' + i)) + "\"}\n";
      size_t sent = 0;
      while (sent < line.size()) {
        const ssize_t n = send(fds[i], line.data() + sent, line.size() - sent, MSG_NOSIGNAL);
        if (n <= 0) break;
        sent += static_cast<size_t>(n);
      }
      shutdown(fds[i], SHUT_WR);
      ReadUntilEof(fds[i], &outs[i], std::chrono::seconds(20));
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < kProducers; ++i) EXPECT_EQ(outs[i], "ok 1\n") << "producer " << i;
  for (int fd : fds) close(fd);
  EXPECT_EQ(Spooled("a").size(), static_cast<size_t>(kProducers));
}

TEST_F(IntakeServerTest, RepeatedRejectionsAndLongNamesKeepRepliesSmall) {
  std::vector<IntakeRoute> routes;
  for (int i = 0; i < 10; ++i) routes.push_back(Route(absl::StrCat("route_", i, "_", std::string(90, 'n'))));
  Start(routes);
  std::string input = "@route " + std::string(5000, 'q') + "\n";
  for (int i = 0; i < 32768; ++i) input += "x\n";
  const std::string reply = Exchange(input);
  EXPECT_LT(reply.size(), 32768u * 32) << reply.substr(0, 400);
  EXPECT_NE(reply.find("error 1 unknown route \"qqqq"), std::string::npos) << reply.substr(0, 400);
  EXPECT_LT(reply.find('\n'), 400u) << "the echoed name and route list are cut";
  EXPECT_NE(reply.find("error 2 no usable route"), std::string::npos) << reply.substr(0, 600);
  EXPECT_NE(reply.find("error 3 same as line 2\n"), std::string::npos) << reply.substr(0, 600);
  EXPECT_EQ(reply.substr(reply.size() - 9), "ok 32769\n") << reply.substr(reply.size() - 100);
}

TEST_F(IntakeServerTest, AFrameCutOffByEofGivesItsMemoryBack) {
  CapSpool(20);  // the first batch waits in the spool, keeping the connection open
  options_.max_buffered_bytes = 32u << 20;
  Start({Route("a")});
  int fd = Connect();
  intake::ClientFrame batch;
  batch.mutable_batch()->set_seq(1);
  batch.mutable_batch()->set_route("a");
  batch.mutable_batch()->add_records("{\"id\":\"" + std::string(40, 'x') + "\"}");
  std::string input = Frame(batch);
  const uint32_t len = htobe32(15u << 20);
  input.append(reinterpret_cast<const char*>(&len), 4);
  input += "abc";
  ASSERT_EQ(send(fd, input.data(), input.size(), MSG_NOSIGNAL), static_cast<ssize_t>(input.size()));
  // The frame is admitted (its rest reserved) by the read after its header.
  ASSERT_TRUE(zb::testing::WaitFor(
      [&] {
        send(fd, "d", 1, MSG_NOSIGNAL);
        return OnLoop([&] { return server_->buffered_bytes(); }) > (15u << 20);
      },
      std::chrono::seconds(10)));
  shutdown(fd, SHUT_WR);
  EXPECT_TRUE(zb::testing::WaitFor([&] { return OnLoop([&] { return server_->buffered_bytes(); }) < (1u << 20); },
                                   std::chrono::seconds(10)));
  close(fd);
}

TEST_F(IntakeServerTest, AFrameLargerThanTheWholeBudgetIsRefusedAtItsHeader) {
  options_.max_buffered_bytes = 1u << 20;
  Start({Route("a")});
  intake::ClientFrame hello;
  hello.mutable_hello()->set_client("test/1");
  std::string input = Frame(hello);
  const uint32_t len = htobe32(8u << 20);  // under the frame limit, over the budget
  input.append(reinterpret_cast<const char*>(&len), 4);
  const auto frames = ParseFrames(Exchange(input));
  ASSERT_EQ(frames.size(), 1u);
  EXPECT_EQ(frames[0].nack().reason(), intake::BAD_FRAME);
  EXPECT_NE(frames[0].nack().message().find("intake.max_buffered_bytes"), std::string::npos);
}

TEST_F(IntakeServerTest, RepeatedRefusalsAreLoggedAtMostOncePerInterval) {
  auto sink = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(10000);
  spdlog::default_logger()->sinks().push_back(sink);
  options_.max_connections = 1;
  Start({Route("a")});
  int busy = Connect();
  ASSERT_EQ(send(busy, "{", 1, MSG_NOSIGNAL), 1);
  ASSERT_TRUE(zb::testing::WaitFor([&] { return OnLoop([&] { return server_->connection_count(); }) == 1; },
                                   std::chrono::seconds(10)));
  for (int i = 0; i < 200; ++i) {
    int fd = Connect();
    std::string out;
    EXPECT_TRUE(ReadUntilEof(fd, &out, std::chrono::seconds(10)));
    close(fd);
  }
  close(busy);
  spdlog::default_logger()->sinks().pop_back();
  size_t refusals = 0;
  for (const auto& line : sink->last_formatted()) refusals += line.find("refused a connection") != std::string::npos;
  EXPECT_GE(refusals, 1u);
  EXPECT_LE(refusals, 2u);  // 200 refusals in well under 10 s
}

TEST_F(IntakeServerTest, AcceptBacksOffWhenDescriptorsRunOutAndRecovers) {
  auto sink = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(100000);
  spdlog::default_logger()->sinks().push_back(sink);
  Start({Route("a")});
  // Exhaust this process's descriptors, keeping one for the client socket.
  zb::testing::DescriptorExhaustion hog;
  ASSERT_TRUE(hog.Exhaust());
  ASSERT_TRUE(hog.FreeOne());
  int client = Connect();  // queued in the backlog: accept gets EMFILE
  ASSERT_TRUE(zb::testing::WaitFor(
      [&] {
        for (const auto& line : sink->last_formatted()) {
          if (line.find("cannot accept connections") != std::string::npos) return true;
        }
        return false;
      },
      std::chrono::seconds(10)));
  // Give a spinning accept loop the chance to show itself.
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(500);
  zb::testing::WaitFor([&] { return std::chrono::steady_clock::now() >= until; }, std::chrono::seconds(1));
  hog.Release();
  const std::string input = "{\"id\":1}\n";
  ASSERT_EQ(send(client, input.data(), input.size(), MSG_NOSIGNAL), static_cast<ssize_t>(input.size()));
  shutdown(client, SHUT_WR);
  std::string out;
  EXPECT_TRUE(ReadUntilEof(client, &out, std::chrono::seconds(10)));
  close(client);
  EXPECT_EQ(out, "ok 1\n");
  spdlog::default_logger()->sinks().pop_back();
  size_t lines = 0;
  for (const auto& line : sink->last_formatted()) lines += line.find("cannot accept") != std::string::npos;
  EXPECT_LE(lines, 2u);
  EXPECT_GE(zb::testing::MetricValue(metrics_->Exposition(), "zerobusd_accept_errors_total",
                                     "error=\"EMFILE\",listener=\"intake\"").value_or(0), 1);
}

TEST_F(IntakeServerTest, TwoServersStartingTogetherCannotBothTakeThePath) {
  // The lock is taken before the liveness check, so a second start at the
  // same moment is refused even before the first one listens.
  const std::string path = dir_.Sub("run/intake.sock");
  std::filesystem::create_directories(dir_.Sub("run"));
  asio::io_context io;
  asio::local::stream_protocol::acceptor first(io);
  auto owned = ListenOnUnixSocket(first, path, 0600, -1, "intake.socket");
  ASSERT_TRUE(owned.ok()) << owned.status();
  asio::local::stream_protocol::acceptor second(io);
  auto refused = ListenOnUnixSocket(second, path, 0600, -1, "intake.socket");
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("is in use"), std::string::npos) << refused.status();
  // Released with the first listener, the path can be taken again.
  first.close();
  RemoveOwnedSocket(*owned);
  asio::local::stream_protocol::acceptor third(io);
  auto again = ListenOnUnixSocket(third, path, 0600, -1, "intake.socket");
  ASSERT_TRUE(again.ok()) << again.status();
  third.close();
  RemoveOwnedSocket(*again);
}

TEST_F(IntakeServerTest, ALiveSocketIsNeverTakenOver) {
  Start({Route("a")});
  const std::string path = dir_.Sub("run/intake.sock");
  asio::io_context other;
  IntakeOptions o;
  o.socket_path = path;
  auto second = StartIntakeServer(other, o, std::make_shared<IntakeRouteTable>(), *spool_, *metrics_);
  ASSERT_FALSE(second.ok());
  EXPECT_NE(second.status().message().find("is in use"), std::string::npos) << second.status();
  EXPECT_EQ(Exchange("{\"id\":1}\n"), "ok 1\n");  // the first one still has it
}

TEST_F(IntakeServerTest, AnythingButASocketAtThePathIsRefused) {
  std::filesystem::create_directories(dir_.Sub("run"));
  zb::testing::WriteFile(dir_.Sub("run/intake.sock"), "not a socket");
  IntakeOptions o;
  o.socket_path = dir_.Sub("run/intake.sock");
  auto s = StartIntakeServer(loop_, o, std::make_shared<IntakeRouteTable>(), *spool_, *metrics_);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("exists and is not a socket"), std::string::npos) << s.status();
}

TEST_F(IntakeServerTest, TheSocketHasItsModeAndGroupAndOnlyOursIsRemoved) {
  options_.socket_mode = 0660;
  options_.socket_gid = static_cast<int64_t>(getgid());
  Start({Route("a")});
  const std::string path = dir_.Sub("run/intake.sock");
  struct stat st{};
  ASSERT_EQ(lstat(path.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0660u);
  EXPECT_EQ(st.st_gid, getgid());
  // No temporary socket is left beside it; only its lock file.
  std::vector<std::string> files;
  for (const auto& e : std::filesystem::directory_iterator(dir_.Sub("run"))) {
    files.push_back(e.path().filename().string());
  }
  std::sort(files.begin(), files.end());
  EXPECT_EQ(files, (std::vector<std::string>{"intake.sock", "intake.sock.lock"}));
  // Another process replaced the path: our shutdown leaves theirs alone.
  ASSERT_EQ(unlink(path.c_str()), 0);
  int theirs = socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size());
  ASSERT_EQ(bind(theirs, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  OnLoop([&] {
    server_.reset();
    return 0;
  });
  EXPECT_EQ(lstat(path.c_str(), &st), 0) << "the other process's socket was removed";
  close(theirs);
}

}  // namespace
}  // namespace zb
