// gRPC's own log lines go through spdlog, at the documented levels, at most
// one line per call site per interval (the next one counts what was
// suppressed), with credentials masked; never on stderr while spdlog is up,
// and without crashing once spdlog is shut down or the process exits.

#include "zerobus/grpc_log.h"

#include <fcntl.h>
#include <grpc/support/log.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "spdlog/sinks/ringbuffer_sink.h"
#include "spdlog/spdlog.h"
#include "testutil.h"

namespace zb {
namespace {

using Clock = std::chrono::steady_clock;

// A clock the test moves by hand, so the per-site interval passes without
// waiting. Starts at the real time of the first test (limiters created
// earlier in the process saw real times).
std::atomic<Clock::rep> fake_now{0};
Clock::time_point FakeNow() { return Clock::time_point(Clock::duration(fake_now.load())); }
void Advance(Clock::duration d) { fake_now.fetch_add(d.count()); }

class GrpcLogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    unsetenv("GRPC_VERBOSITY");
    if (fake_now.load() == 0) fake_now.store(Clock::now().time_since_epoch().count());
    SetGrpcLogClockForTest(&FakeNow);
    saved_level_ = spdlog::get_level();
    spdlog::default_logger()->sinks().push_back(sink_);
    RouteGrpcLoggingToSpdlog();
  }
  void TearDown() override {
    std::erase(spdlog::default_logger()->sinks(), sink_);
    spdlog::set_level(saved_level_);
    RouteGrpcLoggingToSpdlog();
    SetGrpcLogClockForTest(nullptr);
  }

  // Captured lines containing `text`, with their levels.
  std::vector<std::pair<spdlog::level::level_enum, std::string>> Lines(const std::string& text) {
    std::vector<std::pair<spdlog::level::level_enum, std::string>> out;
    for (const auto& msg : sink_->last_raw()) {
      std::string payload(msg.payload.data(), msg.payload.size());
      if (payload.find(text) != std::string::npos) out.emplace_back(msg.level, payload);
    }
    return out;
  }

  std::shared_ptr<spdlog::sinks::ringbuffer_sink_mt> sink_ =
      std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(10'000);
  spdlog::level::level_enum saved_level_ = spdlog::level::info;
};

// Two call sites inside gRPC, as far as the route can tell.
constexpr int kSiteALine = __LINE__ + 1;
void SiteA(int i) { gpr_log(GPR_ERROR, "ssl handshake failed: certificate has expired (try %d)", i); }
constexpr int kSiteBLine = __LINE__ + 1;
void SiteB(int i) { gpr_log(GPR_ERROR, "subchannel connect failed (try %d)", i); }

std::string SitePrefix(int line) { return absl::StrCat("grpc: ", __FILE__, ":", line, ": "); }

// fd 2 redirected to a file while alive.
class CapturedStderr {
 public:
  explicit CapturedStderr(const std::string& path) : path_(path) {
    saved_ = dup(STDERR_FILENO);
    const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    dup2(fd, STDERR_FILENO);
    close(fd);
  }
  ~CapturedStderr() { Restore(); }
  std::string Restore() {
    if (saved_ >= 0) {
      dup2(saved_, STDERR_FILENO);
      close(saved_);
      saved_ = -1;
    }
    return zb::testing::ReadFileOrEmpty(path_);
  }

 private:
  std::string path_;
  int saved_ = -1;
};

TEST_F(GrpcLogTest, AFloodFromTwoThreadsIsOneLinePerSiteThenOneCountingTheRest) {
  spdlog::set_level(spdlog::level::info);
  RouteGrpcLoggingToSpdlog();
  zb::testing::TempDir dir;
  CapturedStderr err(dir.Sub("stderr"));
  // 1000 calls per site, from two threads at once.
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([t] {
      for (int i = 0; i < 500; ++i) {
        SiteA(t * 500 + i);
        SiteB(t * 500 + i);
      }
    });
  }
  for (auto& thread : threads) thread.join();
  const std::string stderr_text = err.Restore();
  EXPECT_EQ(stderr_text.find("handshake failed"), std::string::npos) << stderr_text;

  // The clock has not moved: exactly the first call of each site.
  auto a = Lines(SitePrefix(kSiteALine));
  auto b = Lines(SitePrefix(kSiteBLine));
  ASSERT_EQ(a.size(), 1u);
  ASSERT_EQ(b.size(), 1u);
  EXPECT_EQ(a[0].first, spdlog::level::warn);
  EXPECT_NE(a[0].second.find("ssl handshake failed: certificate has expired (try "), std::string::npos) << a[0].second;
  EXPECT_EQ(a[0].second.find("more from this site"), std::string::npos) << a[0].second;
  EXPECT_NE(b[0].second.find("subchannel connect failed"), std::string::npos) << b[0].second;

  // Within the interval: still nothing more. After it: one line, counting
  // the 999 not logged.
  Advance(kGrpcLogInterval - std::chrono::seconds(1));
  SiteA(1000);
  EXPECT_EQ(Lines(SitePrefix(kSiteALine)).size(), 1u);
  Advance(std::chrono::seconds(1));
  SiteA(1001);
  a = Lines(SitePrefix(kSiteALine));
  ASSERT_EQ(a.size(), 2u);
  EXPECT_NE(a[1].second.find("ssl handshake failed: certificate has expired (try 1001) (1000 more from this site "
                             "since the last report)"),
            std::string::npos)
      << a[1].second;
  // Site B has its own limit.
  EXPECT_EQ(Lines(SitePrefix(kSiteBLine)).size(), 1u);
}

TEST_F(GrpcLogTest, SeveritiesMapToSpdlogLevelsAndVerbosityFollowsSpdlog) {
  spdlog::set_level(spdlog::level::trace);
  RouteGrpcLoggingToSpdlog();
  EXPECT_TRUE(gpr_should_log(GPR_LOG_SEVERITY_DEBUG));
  constexpr int kError = __LINE__ + 1;
  gpr_log(GPR_ERROR, "severity probe");
  constexpr int kInfo = __LINE__ + 1;
  gpr_log(GPR_INFO, "severity probe");
  constexpr int kDebug = __LINE__ + 1;
  gpr_log(GPR_DEBUG, "severity probe");
  const auto error = Lines(SitePrefix(kError) + "severity probe");
  const auto info = Lines(SitePrefix(kInfo) + "severity probe");
  const auto debug = Lines(SitePrefix(kDebug) + "severity probe");
  ASSERT_EQ(error.size(), 1u);
  ASSERT_EQ(info.size(), 1u);
  ASSERT_EQ(debug.size(), 1u);
  EXPECT_EQ(error[0].first, spdlog::level::warn);
  EXPECT_EQ(info[0].first, spdlog::level::debug);
  EXPECT_EQ(debug[0].first, spdlog::level::trace);

  // At debug, gRPC keeps its DEBUG lines to itself (not even formatted).
  spdlog::set_level(spdlog::level::debug);
  RouteGrpcLoggingToSpdlog();
  EXPECT_FALSE(gpr_should_log(GPR_LOG_SEVERITY_DEBUG));
  EXPECT_TRUE(gpr_should_log(GPR_LOG_SEVERITY_INFO));

  // At info, only its ERROR lines, as warnings.
  spdlog::set_level(spdlog::level::info);
  RouteGrpcLoggingToSpdlog();
  EXPECT_FALSE(gpr_should_log(GPR_LOG_SEVERITY_INFO));
  EXPECT_TRUE(gpr_should_log(GPR_LOG_SEVERITY_ERROR));
  gpr_log(GPR_INFO, "quiet info probe");
  EXPECT_TRUE(Lines("quiet info probe").empty());

  // An operator's GRPC_VERBOSITY wins.
  setenv("GRPC_VERBOSITY", "DEBUG", 1);
  gpr_set_log_verbosity(GPR_LOG_SEVERITY_DEBUG);  // as grpc_init would from the variable
  RouteGrpcLoggingToSpdlog();
  EXPECT_TRUE(gpr_should_log(GPR_LOG_SEVERITY_DEBUG));
  unsetenv("GRPC_VERBOSITY");
}

TEST_F(GrpcLogTest, CredentialsInGrpcLinesAreMasked) {
  gpr_log(GPR_ERROR, "sending headers: authorization: Bearer s3cr3t-t0ken-value");
  const auto lines = Lines("sending headers");
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0].second.find("s3cr3t-t0ken-value"), std::string::npos) << lines[0].second;
  EXPECT_NE(lines[0].second.find("[REDACTED]"), std::string::npos) << lines[0].second;
}

// In a child process: lines logged after spdlog::shutdown(), and while
// exit() runs static destructors, neither crash nor vanish (they go to
// stderr, rate-limited).
TEST(GrpcLogDeathTest, SafeAfterSpdlogShutdownAndDuringExit) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        RouteGrpcLoggingToSpdlog();
        std::atomic<bool> started{false};
        // Logs from many sites until the process is gone.
        std::thread([&started] {
          for (int i = 0;; ++i) {
            gpr_log(GPR_ERROR, "background line %d", i);
            gpr_log(GPR_ERROR, "background line again %d", i);
            started.store(true);
          }
        }).detach();
        while (!started.load()) {
        }
        spdlog::shutdown();
        gpr_log(GPR_ERROR, "after spdlog shutdown");
        std::exit(7);
      },
      ::testing::ExitedWithCode(7), "grpc: .*grpc_log_test.cc:[0-9]+: after spdlog shutdown");
}

}  // namespace
}  // namespace zb
