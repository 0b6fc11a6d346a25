// The crash loop: producers send while the daemon is killed with SIGKILL at
// random moments, again and again. Every record a producer was told was
// accepted ("ok N") must reach the dev server; duplicates are allowed only
// for requests in flight at a crash, so they are bounded by the window.
//
// It runs with one stream per lane and with several (routes[].max_streams,
// a low stream_quota so the backlog opens them): crashes then catch spans
// acked out of order, and the restarted daemon must resend exactly the
// unacked ones.
//
// ZEROBUSD_CRASH_ROUNDS sets the rounds (default 20; a soak run uses more),
// ZEROBUSD_CRASH_SEED the random seed (printed, so a failure can be replayed).

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "harness.h"

namespace zb::testing {
namespace {

constexpr char kTable[] = "main.edge.readings";
constexpr int kInflightRequests = 8;
constexpr int kBatchRecords = 100;

int EnvInt(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v == nullptr ? fallback : std::atoi(v);
}

// A line-mode producer that keeps sending through every crash: it records
// exactly which ids the daemon acknowledged, and reconnects when the daemon
// comes back.
class Producer {
 public:
  explicit Producer(std::string socket_path) : socket_path_(std::move(socket_path)) {
    thread_ = std::thread([this] { Run(); });
  }
  ~Producer() { Stop(); }

  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  uint64_t acked_count() const { return acked_count_.load(); }
  std::set<std::string> acked() {
    std::lock_guard<std::mutex> lock(mu_);
    return acked_;
  }
  uint64_t sent_count() const { return next_id_.load(); }

 private:
  void Run() {
    while (!stop_) {
      const int fd = Connect();
      if (fd < 0) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));  // the daemon is down: try again
        continue;
      }
      SendOnConnection(fd);
      ::close(fd);
    }
  }

  int Connect() {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, socket_path_.c_str(), socket_path_.size());
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      ::close(fd);
      return -1;
    }
    const timeval timeout{5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
    return fd;
  }

  // Batches of 200 lines; a batch counts only once "ok <its last line>"
  // came back. A connection that breaks leaves its batch unknown.
  void SendOnConnection(int fd) {
    uint64_t line = 0;
    std::string pending;  // unparsed reply bytes
    while (!stop_) {
      std::vector<std::string> ids;
      std::string text;
      for (int i = 0; i < 200; ++i) {
        const std::string id = absl::StrCat("c-", next_id_++);
        ids.push_back(id);
        absl::StrAppend(&text, "{\"id\":\"", id, "\",\"payload\":\"", std::string(120, 'x'), "\"}\n");
      }
      if (::send(fd, text.data(), text.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(text.size())) return;
      const uint64_t last = line + ids.size();
      bool acked = false;
      char buf[4096];
      while (!acked) {
        const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
        if (n <= 0) return;
        pending.append(buf, static_cast<size_t>(n));
        size_t nl;
        while ((nl = pending.find('\n')) != std::string::npos) {
          const std::string reply = pending.substr(0, nl);
          pending.erase(0, nl + 1);
          if (reply.rfind("ok ", 0) == 0 && std::stoull(reply.substr(3)) >= last) acked = true;
          if (reply.rfind("error ", 0) == 0) return;  // not expected here: treat the batch as unknown
        }
      }
      line = last;
      std::lock_guard<std::mutex> lock(mu_);
      acked_.insert(ids.begin(), ids.end());
      acked_count_ += ids.size();
    }
  }

  const std::string socket_path_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> next_id_{0};
  std::atomic<uint64_t> acked_count_{0};
  std::mutex mu_;
  std::set<std::string> acked_;
  std::thread thread_;
};

struct CrashCase {
  const char* name;
  int max_streams;
  int rows_per_second;  // per stream; 0: unlimited
};

class CrashTest : public ::testing::TestWithParam<CrashCase> {};

TEST_P(CrashTest, KillNineAtRandomMomentsNeverLosesAnAcknowledgedRecord) {
  const CrashCase c = GetParam();
  const int rounds = EnvInt("ZEROBUSD_CRASH_ROUNDS", 20);
  const int seed = EnvInt("ZEROBUSD_CRASH_SEED", static_cast<int>(std::random_device{}() % 100000));
  std::printf("crash loop: %d rounds, seed %d (ZEROBUSD_CRASH_SEED replays it)\n", rounds, seed);
  std::mt19937 rng(seed);
  TempDir dir;
  DevServer server(dir.path());
  ASSERT_TRUE(server.Start()) << server.log();
  DaemonOptions o;
  o.grpc_port = server.grpc_port();
  o.http_port = server.http_port();
  o.extra_yaml = absl::StrCat("drain:\n  backoff_initial_ms: 20\n  backoff_max_ms: 200\n  max_inflight_requests: ",
                              kInflightRequests, "\n  max_batch_records: ", kBatchRecords, "\n");
  o.routes_yaml = absl::StrCat("routes:\n  - name: readings\n    table: ", kTable, "\n    max_streams: ", c.max_streams,
                               "\n");
  if (c.rows_per_second > 0) {
    o.zerobus_yaml = absl::StrCat("  stream_quota: {rows_per_second: ", c.rows_per_second, "}\n");
  }
  Daemon daemon(dir.path(), o);
  Producer producer(daemon.socket());
  for (int round = 0; round < rounds; ++round) {
    ASSERT_TRUE(daemon.Start()) << "round " << round << "\n" << daemon.log().substr(0, 4000);
    // Kill after a random amount of progress: sometimes at once, sometimes
    // mid-batch, mid-group-commit or mid-drain.
    const uint64_t target = producer.acked_count() + std::uniform_int_distribution<int>(0, 3000)(rng);
    ASSERT_TRUE(WaitFor([&] { return producer.acked_count() >= target; }, std::chrono::seconds(30)))
        << "round " << round << ": the producer made no progress";
    daemon.Kill();
  }
  ASSERT_TRUE(daemon.Start()) << daemon.log().substr(0, 4000);
  producer.Stop();
  const std::set<std::string> acked = producer.acked();
  ASSERT_GT(acked.size(), 0u);
  ASSERT_TRUE(WaitFor([&] { return daemon.Metric("zerobusd_spool_records", "route=\"readings\"").value_or(-1) == 0; },
                      std::chrono::seconds(120)))
      << daemon.log().substr(0, 4000);
  const std::multiset<std::string> rows = RowIds(server.Rows(kTable));
  int missing = 0;
  std::string first_missing;
  for (const auto& id : acked) {
    if (rows.count(id) == 0 && missing++ == 0) first_missing = id;
  }
  EXPECT_EQ(missing, 0) << "acknowledged but never delivered, e.g. " << first_missing;
  const size_t duplicates = rows.size() - std::set<std::string>(rows.begin(), rows.end()).size();
  std::printf("crash loop: %zu records acknowledged, %zu rows, %zu duplicates, %llu sent in all\n", acked.size(),
              rows.size(), duplicates, static_cast<unsigned long long>(producer.sent_count()));
  EXPECT_LE(duplicates, static_cast<size_t>(rounds + 1) * c.max_streams * kInflightRequests * kBatchRecords)
      << "duplicates come only from requests in flight at a crash";
  EXPECT_EQ(server.Stat("violations"), 0);
  if (c.max_streams > 1) {
    EXPECT_GE(server.TableStat(kTable, "max_open_streams"), 2) << "several streams were open";
  }
}

INSTANTIATE_TEST_SUITE_P(Streams, CrashTest,
                         ::testing::Values(CrashCase{"OneStream", 1, 0}, CrashCase{"SeveralStreams", 4, 3000}),
                         [](const ::testing::TestParamInfo<CrashCase>& info) { return info.param.name; });

}  // namespace
}  // namespace zb::testing
