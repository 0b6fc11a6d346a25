// spool.max_bytes and spool.when_full, and the min_free_bytes guard on a real
// small filesystem, against the real daemon: each policy does exactly what
// the example config documents, across routes and restarts, and nothing
// that was accepted is lost (except what drop_oldest drops and counts).

#include <sys/mount.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "harness.h"

namespace zb::testing {
namespace {

constexpr char kTable[] = "main.edge.readings";
constexpr char kTwoRoutes[] =
    "routes:\n"
    "  - name: readings\n    table: main.edge.readings\n"
    "  - name: events\n    table: main.edge.events\n";

int CountOf(const std::string& text, const std::string& what) {
  int n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + what.size())) ++n;
  return n;
}

std::string Tail(const std::string& text, size_t n = 4000) {
  return text.size() > n ? text.substr(text.size() - n) : text;
}

// The argv prefix that runs a command in a mount namespace of its own, or
// empty when this machine cannot (checked by mounting a tmpfs on `probe`).
// unshare needs CAP_SYS_ADMIN or unprivileged user namespaces.
std::vector<std::string> MountNamespaceWrapper(const std::string& probe) {
  std::vector<std::string> wrapper = {"/usr/bin/unshare", "--mount"};
  if (geteuid() != 0) wrapper = {"/usr/bin/unshare", "--user", "--map-root-user", "--mount"};
  std::vector<std::string> argv = wrapper;
  for (const char* a : {"/bin/sh", "-c"}) argv.push_back(a);
  argv.push_back("mount -t tmpfs -o size=1m tmpfs " + probe);
  if (RunCommand(argv, std::chrono::seconds(20)).exit_code != 0) return {};
  return wrapper;
}

std::string Drain(int max_batch_records = 100) {
  return absl::StrCat("drain:\n  backoff_initial_ms: 20\n  backoff_max_ms: 100\n  max_batch_records: ",
                      max_batch_records, "\n");
}

class CapacityTest : public ::testing::Test {
 protected:
  // The daemon, with the dev server's ports reserved but the server down.
  void StartDaemon(const std::string& when_full, const std::string& max_bytes, const std::string& min_free = "16MiB",
                   const std::string& routes = kTwoRoutes, const std::string& more_spool_yaml = "") {
    if (grpc_port_ == 0) {
      grpc_port_ = FreePort();
      http_port_ = FreePort();
    }
    DaemonOptions o;
    o.grpc_port = grpc_port_;
    o.http_port = http_port_;
    o.extra_yaml = Drain();
    o.routes_yaml = routes;
    o.spool_yaml = absl::StrCat("  when_full: ", when_full, "\n  max_bytes: ", max_bytes, "\n  min_free_bytes: ",
                                min_free, "\n", more_spool_yaml);
    daemon_ = std::make_unique<Daemon>(dir_.path(), o);
    ASSERT_TRUE(daemon_->Start()) << daemon_->log();
  }

  void StartServer() {
    server_ = std::make_unique<DevServer>(dir_.path(), grpc_port_, http_port_);
    ASSERT_TRUE(server_->Start()) << server_->log();
  }

  double Metric(const std::string& name, const std::string& labels = "") {
    return daemon_->Metric(name, labels).value_or(-1);
  }

  // N of zerobusctl's "accepted N rejected M".
  static int AcceptedCount(const std::string& output) {
    const size_t at = output.rfind("accepted ");
    return at == std::string::npos ? -1 : std::stoi(output.substr(at + 9));
  }

  RunResult SendRecords(const std::string& route, const std::string& prefix, int n) {
    const std::string file = dir_.Sub(prefix + ".ndjson");
    WriteRecords(file, prefix, n, 200);
    return SendFile(daemon_->socket(), route, file);
  }

  TempDir dir_;
  int grpc_port_ = 0, http_port_ = 0;
  std::unique_ptr<DevServer> server_;
  std::unique_ptr<Daemon> daemon_;
};

// Records of about 200 bytes: 100 KiB holds about 500.
TEST_F(CapacityTest, RejectAnswersSpoolFullAcrossRoutesAndRestartsAndResumesWhenRoomReturns) {
  StartDaemon("reject", "100KiB");
  RunResult a = SendRecords("readings", "a", 300);  // about 60 KiB
  ASSERT_EQ(a.exit_code, 0) << a.output;
  RunResult b = SendRecords("events", "b", 400);  // the cap counts both routes
  EXPECT_EQ(b.exit_code, 1);
  EXPECT_NE(b.output.find("not spooled: spool full"), std::string::npos) << b.output.substr(0, 2000);
  EXPECT_NE(b.output.find("spool.max_bytes (102400)"), std::string::npos) << b.output.substr(0, 2000);
  EXPECT_EQ(Metric("zerobusd_spool_full"), 1);
  EXPECT_GT(Metric("zerobusd_intake_records_total", "result=\"spool_full\",route=\"events\""), 0);
  const double held = Metric("zerobusd_spool_bytes");
  EXPECT_LE(held, 100 * 1024);

  daemon_->Kill();  // the cap holds across a crash and restart
  StartDaemon("reject", "100KiB");
  EXPECT_EQ(Metric("zerobusd_spool_bytes"), held);
  RunResult c = SendRecords("events", "c", 300);
  EXPECT_EQ(c.exit_code, 1) << "still full after the restart: " << c.output.substr(0, 500);
  EXPECT_LE(Metric("zerobusd_spool_bytes"), 100 * 1024);

  StartServer();  // the drain frees room: new records are accepted again
  ASSERT_TRUE(WaitFor([&] { return Metric("zerobusd_spool_bytes") == 0; }, std::chrono::seconds(30)))
      << daemon_->log().substr(0, 3000);
  EXPECT_EQ(CheckDelivery(*server_, kTable, "a", 300).missing, 0);
  // Every events record the daemon accepted arrived; the refused ones were
  // never accepted.
  EXPECT_EQ(static_cast<int>(RowIds(server_->Rows("main.edge.events")).size()),
            AcceptedCount(b.output) + AcceptedCount(c.output));
  RunResult d = SendRecords("events", "d", 200);
  EXPECT_EQ(d.exit_code, 0) << d.output;
  ASSERT_TRUE(WaitFor([&] { return CheckDelivery(*server_, "main.edge.events", "d", 200).missing == 0; },
                      std::chrono::seconds(30)));
  EXPECT_EQ(Metric("zerobusd_spool_full"), 0);
}

TEST_F(CapacityTest, BlockHoldsProducersWithoutAnsweringUntilTheDrainMakesRoom) {
  StartDaemon("block", "100KiB", "16MiB", "routes:\n  - name: readings\n    table: main.edge.readings\n");
  const std::string file = dir_.Sub("blocked.ndjson");
  WriteRecords(file, "x", 2000, 200);  // about 400 KiB: four times the cap
  Process send({BinDir() + "/zerobusctl", "send", "--socket", daemon_->socket(), "--route", "readings", file},
               dir_.Sub("send.log"));
  ASSERT_TRUE(WaitFor([&] { return Metric("zerobusd_spool_full") == 1; }, std::chrono::seconds(20)));
  // Blocked: the producer is neither answered nor refused, and the daemon
  // holds no more than the cap.
  EXPECT_TRUE(send.Running());
  EXPECT_LE(Metric("zerobusd_spool_bytes"), 100 * 1024);
  EXPECT_LT(Metric("zerobusd_intake_records_total", "result=\"spool_full\",route=\"readings\""), 1);
  StartServer();
  EXPECT_EQ(send.Wait(std::chrono::seconds(60)), 0) << ReadFileOrEmpty(dir_.Sub("send.log"));
  EXPECT_NE(ReadFileOrEmpty(dir_.Sub("send.log")).find("accepted 2000 rejected 0"), std::string::npos);
  ASSERT_TRUE(WaitFor([&] { return CheckDelivery(*server_, kTable, "x", 2000).missing == 0; },
                      std::chrono::seconds(60)));
  EXPECT_EQ(CheckDelivery(*server_, kTable, "x", 2000).duplicates, 0);
  // A blocked producer's records keep their order.
  const std::vector<std::string> rows = server_->Rows(kTable);
  for (size_t i = 0; i < rows.size(); ++i) {
    ASSERT_NE(rows[i].find(absl::StrCat("\"x-", i, "\"")), std::string::npos) << "row " << i << ": " << rows[i];
  }
}

TEST_F(CapacityTest, DropOldestAcceptsEverythingAndCountsEveryRecordItDrops) {
  StartDaemon("drop_oldest", "100KiB", "16MiB", "routes:\n  - name: readings\n    table: main.edge.readings\n");
  RunResult sent = SendRecords("readings", "o", 2000);
  ASSERT_EQ(sent.exit_code, 0) << sent.output;
  const double dropped = Metric("zerobusd_dropped_records_total", "reason=\"drop_oldest\",route=\"readings\"");
  EXPECT_GT(dropped, 1000);
  EXPECT_LE(Metric("zerobusd_spool_bytes"), 100 * 1024);
  EXPECT_NE(daemon_->log().find("(when_full: drop_oldest): dropped"), std::string::npos);
  StartServer();
  ASSERT_TRUE(WaitFor([&] { return Metric("zerobusd_spool_records", "route=\"readings\"") == 0; },
                      std::chrono::seconds(30)));
  const Delivery d = CheckDelivery(*server_, kTable, "o", 2000);
  EXPECT_EQ(d.missing, dropped) << "every record is delivered or counted as dropped";
  EXPECT_EQ(d.duplicates, 0);
  // The oldest went: the newest record arrived.
  EXPECT_EQ(RowIds(server_->Rows(kTable)).count("o-1999"), 1u);
  EXPECT_EQ(RowIds(server_->Rows(kTable)).count("o-0"), 0u);
}

uint64_t FolderBytes(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  uint64_t total = 0;
  for (const auto& entry : fs::recursive_directory_iterator(path, ec)) {
    if (entry.is_regular_file(ec)) total += entry.file_size(ec);
  }
  return total;
}

// Issue 9, scaled down: a backlog of incompressible records built while the
// server is down lands in table files (8 MiB of memory budget: 2 MiB write
// buffers). While it drains, the spool never holds much more than the
// backlog (a bound only: 30 MB stays under the tidier's 32 MB mark, so no
// file is dropped here; the files dropped without a rewrite are
// spool_tidy_test's, the figure for a 1.8 GB backlog bench/run.sh's); once
// it is drained, the spool gives the disk back by itself within 30 s
// instead of keeping it until later writes compact it.
TEST_F(CapacityTest, ADrainedBacklogGivesItsDiskBackWithinThirtySeconds) {
  StartDaemon("block", "10GiB", "16MiB", "routes:\n  - name: readings\n    table: main.edge.readings\n",
              "  memory_budget: 8MiB\n");

  constexpr int kRecords = 30000;  // of about 1 KB: 30 MB
  const std::string file = dir_.Sub("backlog.ndjson");
  {
    std::ofstream out(file, std::ios::trunc);
    std::mt19937_64 random(9);
    for (int i = 0; i < kRecords; ++i) {
      std::string noise;
      for (int j = 0; j < 60; ++j) noise += absl::StrCat(absl::Hex(random(), absl::kZeroPad16));
      out << "{\"id\":\"g-" << i << "\",\"seq\":" << i << ",\"payload\":\"" << noise << "\"}\n";
    }
  }
  RunResult sent = SendFile(daemon_->socket(), "readings", file);
  ASSERT_EQ(sent.exit_code, 0) << sent.output;
  const std::string spool = dir_.path() + "/spool";
  const uint64_t backlog = FolderBytes(spool);
  EXPECT_GT(backlog, 20'000'000u) << "the backlog is on disk";

  StartServer();
  uint64_t peak = backlog;  // sampled while it drains
  ASSERT_TRUE(WaitFor(
      [&] {
        peak = std::max(peak, FolderBytes(spool));
        return Metric("zerobusd_acked_records_total", "route=\"readings\"") == kRecords;
      },
      std::chrono::seconds(120)))
      << Tail(daemon_->log());
  const auto drained_at = std::chrono::steady_clock::now();
  // Slack for the write-ahead log and the table files of range deletes.
  EXPECT_LT(peak, backlog + 8'000'000u) << "the backlog was " << backlog << " bytes";
  EXPECT_TRUE(WaitFor([&] { return FolderBytes(spool) < 4'000'000u; }, std::chrono::seconds(30)))
      << "the spool still holds " << FolderBytes(spool) << " bytes (" << backlog << " with the backlog)\n"
      << Tail(daemon_->log());
  EXPECT_LT(std::chrono::steady_clock::now() - drained_at, std::chrono::seconds(30));
  // The writer says where its time went.
  EXPECT_GT(Metric("zerobusd_spool_commits_total"), 0);
  EXPECT_GT(Metric("zerobusd_spool_writer_seconds_total", "phase=\"syncing\""), 0);
  EXPECT_GT(Metric("zerobusd_spool_writer_seconds_total", "phase=\"memtable\""), 0);
  const Delivery d = CheckDelivery(*server_, kTable, "g", kRecords);
  EXPECT_EQ(d.missing, 0) << d.first_missing;
  EXPECT_EQ(d.duplicates, 0);
}

// A 48 MiB tmpfs of its own (a private mount namespace; no setup outside the
// test) holds the spool, so the free-space guard meets a real full disk.
TEST_F(CapacityTest, MinFreeBytesGuardRefusesBeforeTheDiskFillsAndResumesWhenSpaceReturns) {
  const std::string spool = dir_.Sub("spool");
  std::filesystem::create_directories(spool);
  grpc_port_ = FreePort();
  http_port_ = FreePort();
  DaemonOptions o;
  o.grpc_port = grpc_port_;
  o.http_port = http_port_;
  o.extra_yaml = Drain(1000);
  o.spool_yaml = "  when_full: reject\n  max_bytes: 10GiB\n  min_free_bytes: 24MiB\n";
  o.routes_yaml = "routes:\n  - name: readings\n    table: main.edge.readings\n";
  const std::string probe = dir_.Sub("probe");
  std::filesystem::create_directories(probe);
  const std::vector<std::string> wrapper = MountNamespaceWrapper(probe);
  if (wrapper.empty()) GTEST_SKIP() << "this machine cannot mount a private tmpfs (no mount namespaces)";
  o.wrapper = wrapper;
  o.wrapper.push_back("/bin/sh");
  o.wrapper.push_back("-c");
  o.wrapper.push_back("mount -t tmpfs -o size=48m tmpfs " + spool + " && exec \"$0\" \"$@\"");
  daemon_ = std::make_unique<Daemon>(dir_.path(), o);
  ASSERT_TRUE(daemon_->Start()) << daemon_->log();

  // With the server down, send until the guard answers "spool full".
  int sent_ok = 0, batch = 0;
  bool refused = false;
  std::string last_output;
  while (!refused && batch < 60) {
    RunResult r = SendRecords("readings", absl::StrCat("f", batch), 10000);
    last_output = r.output;
    if (r.exit_code == 0) {
      ++sent_ok;
    } else {
      refused = true;
    }
    ++batch;
  }
  ASSERT_TRUE(refused) << "the guard never tripped";
  EXPECT_NE(last_output.find("would leave less than spool.min_free_bytes"), std::string::npos) << last_output.substr(0, 2000);
  // Counted as refused for room. (Not the zerobusd_spool_full gauge: the
  // flush the refusal asks for may free the log's space, and the spool has
  // room again, before a scrape would see it.)
  EXPECT_GT(Metric("zerobusd_intake_records_total", "result=\"spool_full\",route=\"readings\""), 0);
  EXPECT_NE(daemon_->Metric("zerobusd_spool_records", "route=\"readings\"").value_or(0), 0);

  // Space returns as the drain catches up; the daemon takes records again
  // by itself.
  StartServer();
  ASSERT_TRUE(WaitFor([&] { return SendRecords("readings", "after", 100).exit_code == 0; },
                      std::chrono::seconds(60)))
      << daemon_->log().substr(daemon_->log().size() > 4000 ? daemon_->log().size() - 4000 : 0);
  for (int i = 0; i < sent_ok; ++i) {
    const std::string prefix = absl::StrCat("f", i);
    ASSERT_TRUE(WaitFor([&] { return CheckDelivery(*server_, kTable, prefix, 10000).missing == 0; },
                        std::chrono::seconds(60)))
        << prefix;
  }
}

// Another process fills the disk under a running daemon: the guard answers
// "spool full" at once, and the spool takes records again by itself when
// that process frees its space.
TEST_F(CapacityTest, AnotherProcessFillingTheDiskTripsTheGuardUntilItFreesTheSpace) {
  const std::string fs_dir = dir_.Sub("fs");
  std::filesystem::create_directories(fs_dir);
  const std::vector<std::string> wrapper = MountNamespaceWrapper(fs_dir);
  if (wrapper.empty()) GTEST_SKIP() << "this machine cannot mount a private tmpfs (no mount namespaces)";
  grpc_port_ = FreePort();
  http_port_ = FreePort();
  DaemonOptions o;
  o.grpc_port = grpc_port_;
  o.http_port = http_port_;
  o.extra_yaml = Drain();
  o.spool_path = fs_dir + "/spool";
  o.spool_yaml = "  when_full: reject\n  max_bytes: 10GiB\n  min_free_bytes: 16MiB\n";
  o.routes_yaml = "routes:\n  - name: readings\n    table: main.edge.readings\n";
  // A 64 MiB tmpfs; "the other process" writes 48 MiB to it when the test
  // creates `fill`, and deletes it when the test creates `free` (both
  // outside the tmpfs).
  const std::string fill = dir_.Sub("fill"), free = dir_.Sub("free");
  o.wrapper = wrapper;
  o.wrapper.push_back("/bin/sh");
  o.wrapper.push_back("-c");
  o.wrapper.push_back(absl::StrCat(
      "mount -t tmpfs -o size=64m tmpfs ", fs_dir, " || exit 1; (until [ -e ", fill, " ]; do sleep 0.02; done; head -c 50331648 ",
      "/dev/zero > ", fs_dir, "/other; touch ", fill, ".done; until [ -e ", free, " ]; do sleep 0.02; done; rm ", fs_dir,
      "/other) & exec \"$0\" \"$@\""));
  daemon_ = std::make_unique<Daemon>(dir_.path(), o);
  ASSERT_TRUE(daemon_->Start()) << daemon_->log();
  ASSERT_EQ(SendRecords("readings", "before", 1000).exit_code, 0);
  WriteFile(fill, "");
  ASSERT_TRUE(WaitFor([&] { return std::filesystem::exists(fill + ".done"); }, std::chrono::seconds(20)));
  RunResult refused;
  ASSERT_TRUE(WaitFor(
      [&] {
        refused = SendRecords("readings", "during", 100);
        return refused.exit_code != 0;
      },
      std::chrono::seconds(20)));
  EXPECT_NE(refused.output.find("would leave less than spool.min_free_bytes"), std::string::npos)
      << refused.output.substr(0, 2000);
  EXPECT_EQ(Metric("zerobusd_spool_full"), 1);
  WriteFile(free, "");
  ASSERT_TRUE(WaitFor([&] { return SendRecords("readings", "after", 100).exit_code == 0; }, std::chrono::seconds(30)))
      << daemon_->log().substr(daemon_->log().size() > 4000 ? daemon_->log().size() - 4000 : 0);
  StartServer();
  ASSERT_TRUE(WaitFor([&] { return CheckDelivery(*server_, kTable, "before", 1000).missing == 0 &&
                                   CheckDelivery(*server_, kTable, "after", 100).missing == 0; },
                      std::chrono::seconds(30)));
}

// The disk fills completely between two writes, with records streaming in
// and a burst right behind: the guard looks at the free space before every
// write, so RocksDB never meets ENOSPC (Debian's RocksDB aborts on a failed
// WAL write), the producers wait (when_full: block) instead of being told
// "accepted" for records that are not on disk, the state shows once (gauge
// and one log line), and the held records go in and drain once the space is
// back.
TEST_F(CapacityTest, DiskFilledRightBeforeABurstHoldsTheProducersAndNeverReachesRocksDb) {
  const std::string fs_dir = dir_.Sub("fs");
  std::filesystem::create_directories(fs_dir);
  const std::vector<std::string> wrapper = MountNamespaceWrapper(fs_dir);
  if (wrapper.empty()) GTEST_SKIP() << "this machine cannot mount a private tmpfs (no mount namespaces)";
  grpc_port_ = FreePort();
  http_port_ = FreePort();
  DaemonOptions o;
  o.grpc_port = grpc_port_;
  o.http_port = http_port_;
  o.extra_yaml = Drain();
  o.spool_path = fs_dir + "/spool";
  o.spool_yaml = "  when_full: block\n  max_bytes: 10GiB\n  min_free_bytes: 16MiB\n";
  o.routes_yaml = "routes:\n  - name: readings\n    table: main.edge.readings\n";
  // A 64 MiB tmpfs. "The other process" fills it to the last byte when the
  // test creates `fill`, and frees it when the test creates `free`.
  const std::string fill = dir_.Sub("fill"), free = dir_.Sub("free");
  o.wrapper = wrapper;
  o.wrapper.push_back("/bin/sh");
  o.wrapper.push_back("-c");
  o.wrapper.push_back(absl::StrCat("mount -t tmpfs -o size=64m tmpfs ", fs_dir, " || exit 1; (until [ -e ", fill,
                                   " ]; do sleep 0.01; done; cat /dev/zero > ", fs_dir, "/other 2>/dev/null; touch ",
                                   fill, ".done; until [ -e ", free, " ]; do sleep 0.01; done; rm ", fs_dir,
                                   "/other) & exec \"$0\" \"$@\""));
  daemon_ = std::make_unique<Daemon>(dir_.path(), o);
  ASSERT_TRUE(daemon_->Start()) << daemon_->log();
  ASSERT_EQ(SendRecords("readings", "before", 1000).exit_code, 0);
  const std::string accepted = "result=\"accepted\",route=\"readings\"";

  // Records stream in; the disk fills while they do.
  const std::string stream_file = dir_.Sub("stream.ndjson"), burst_file = dir_.Sub("burst.ndjson");
  WriteRecords(stream_file, "stream", 10000, 200);
  WriteRecords(burst_file, "burst", 2000, 200);
  Process stream({BinDir() + "/zerobusctl", "send", "--socket", daemon_->socket(), "--route", "readings", stream_file},
                 dir_.Sub("stream.log"));
  ASSERT_TRUE(WaitFor([&] { return Metric("zerobusd_intake_records_total", accepted) > 1000; },
                      std::chrono::seconds(20)));
  WriteFile(fill, "");
  ASSERT_TRUE(WaitFor([&] { return std::filesystem::exists(fill + ".done"); }, std::chrono::seconds(20)));
  // The burst comes right behind, with no pause for any sampling interval.
  Process burst({BinDir() + "/zerobusctl", "send", "--socket", daemon_->socket(), "--route", "readings", burst_file},
                dir_.Sub("burst.log"));

  ASSERT_TRUE(WaitFor([&] { return Metric("zerobusd_spool_full") == 1; }, std::chrono::seconds(20)))
      << Tail(daemon_->log());
  ASSERT_TRUE(daemon_->process()->Running()) << Tail(daemon_->log());
  // Held, not answered: the burst cannot have gone in (not a byte is free).
  EXPECT_TRUE(burst.Running()) << ReadFileOrEmpty(dir_.Sub("burst.log"));
  const double accepted_when_full = Metric("zerobusd_intake_records_total", accepted);
  EXPECT_LT(accepted_when_full, 1000 + 10000 + 2000);
  EXPECT_LT(Metric("zerobusd_intake_records_total", "result=\"spool_full\",route=\"readings\""), 1);
  // It stays so for a second of scrapes, while the spool tries the held
  // appends again every 100 ms (each try a refused write).
  for (const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(1);
       std::chrono::steady_clock::now() < until;) {
    ASSERT_EQ(Metric("zerobusd_spool_full"), 1);
    ASSERT_EQ(Metric("zerobusd_intake_records_total", accepted), accepted_when_full);
  }
  EXPECT_TRUE(burst.Running());
  ASSERT_TRUE(daemon_->process()->Running()) << Tail(daemon_->log());

  // The other process frees its space: the held records go in by themselves.
  WriteFile(free, "");
  EXPECT_EQ(burst.Wait(std::chrono::seconds(60)), 0) << ReadFileOrEmpty(dir_.Sub("burst.log"));
  EXPECT_EQ(stream.Wait(std::chrono::seconds(60)), 0) << ReadFileOrEmpty(dir_.Sub("stream.log"));
  EXPECT_NE(ReadFileOrEmpty(dir_.Sub("burst.log")).find("accepted 2000 rejected 0"), std::string::npos)
      << ReadFileOrEmpty(dir_.Sub("burst.log"));
  EXPECT_NE(ReadFileOrEmpty(dir_.Sub("stream.log")).find("accepted 10000 rejected 0"), std::string::npos)
      << ReadFileOrEmpty(dir_.Sub("stream.log"));
  ASSERT_TRUE(WaitFor([&] { return Metric("zerobusd_spool_full") == 0; }, std::chrono::seconds(20)));
  StartServer();
  ASSERT_TRUE(WaitFor(
      [&] {
        return CheckDelivery(*server_, kTable, "before", 1000).missing == 0 &&
               CheckDelivery(*server_, kTable, "stream", 10000).missing == 0 &&
               CheckDelivery(*server_, kTable, "burst", 2000).missing == 0;
      },
      std::chrono::seconds(60)))
      << Tail(daemon_->log());

  const std::string log = daemon_->log();
  EXPECT_EQ(CountOf(log, " is full: "), 1) << "one line when the spool fills, not one per refused write:\n"
                                           << Tail(log);
  // Whichever write met the full disk first (an append, or a delete that
  // frees space) names the guard.
  EXPECT_TRUE(log.find("would leave less than spool.min_free_bytes (16777216)") != std::string::npos ||
              log.find("(spool.min_free_bytes is 16777216)") != std::string::npos)
      << Tail(log);
  EXPECT_EQ(CountOf(log, " has room again "), 1) << Tail(log);
  EXPECT_EQ(log.find("No space left on device"), std::string::npos) << "RocksDB met the full disk:\n" << Tail(log);
  EXPECT_EQ(daemon_->Terminate(std::chrono::seconds(20)), 0) << Tail(daemon_->log());
}

}  // namespace
}  // namespace zb::testing
