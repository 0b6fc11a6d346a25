// A damaged spool fails closed: the daemon says what is wrong and exits
// non-zero (it never crash-loops on bad bytes, and never starts an empty
// spool over the old one), or, for damage RocksDB can only see when it reads
// the bytes, parks the route that hits it with the same diagnostic.
// `zerobusctl spool verify` finds every kind.

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "harness.h"

namespace zb::testing {
namespace {

namespace fs = std::filesystem;

class CorruptionTest : public ::testing::Test {
 protected:
  // A spool with `n` records of one route; `clean` stops with SIGTERM (the
  // records end up in an SST), else SIGKILL (they stay in the WAL).
  void MakeSpool(bool clean, int n = 20000) {
    DaemonOptions o;
    o.grpc_port = FreePort();  // no server: the records stay spooled
    o.http_port = FreePort();
    daemon_ = std::make_unique<Daemon>(dir_.path(), o);
    ASSERT_TRUE(daemon_->Start()) << daemon_->log();
    WriteRecords(dir_.Sub("r.ndjson"), "r", n);
    ASSERT_EQ(SendFile(daemon_->socket(), "readings", dir_.Sub("r.ndjson")).exit_code, 0);
    if (clean) {
      ASSERT_EQ(daemon_->Terminate(std::chrono::seconds(10)), 0);
    } else {
      daemon_->Kill();
    }
  }

  std::string Spool() const { return dir_.Sub("spool"); }

  // The first file of the spool whose name ends with `suffix` (or starts
  // with it, for MANIFEST).
  std::string Find(const std::string& part) const {
    for (const auto& e : fs::directory_iterator(Spool())) {
      const std::string name = e.path().filename().string();
      if (name.find(part) != std::string::npos && e.file_size() > 0) return e.path().string();
    }
    return "";
  }

  static void FlipBytes(const std::string& path, double at_fraction, int count = 16) {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(0, std::ios::end);
    const auto size = static_cast<std::streamoff>(f.tellg());
    const std::streamoff pos = static_cast<std::streamoff>(size * at_fraction);
    for (int i = 0; i < count && pos + i < size; ++i) {
      f.seekg(pos + i);
      char c = 0;
      f.read(&c, 1);
      c = static_cast<char>(c ^ 0x5a);
      f.seekp(pos + i);
      f.write(&c, 1);
    }
  }

  // Names (and sizes) of the spool's files, but RocksDB's own text log.
  std::set<std::string> Files() const {
    std::set<std::string> out;
    for (const auto& e : fs::directory_iterator(Spool())) {
      const std::string name = e.path().filename().string();
      if (name.rfind("LOG", 0) == 0) continue;
      out.insert(absl::StrCat(name, ":", e.file_size()));
    }
    return out;
  }

  // Starts the daemon on the damaged spool: it must exit non-zero promptly
  // with a diagnostic that contains `what`, touching nothing.
  void ExpectRefusedAtStart(const std::string& what) {
    const std::set<std::string> before = Files();
    const size_t log_start = daemon_->log().size();
    daemon_->Launch();
    const int code = daemon_->process()->Wait(std::chrono::seconds(20));
    const std::string log = daemon_->log().substr(log_start);
    EXPECT_NE(code, 0) << log;
    EXPECT_NE(code, -1) << "still running: " << log;
    EXPECT_NE(log.find("spool at " + Spool()), std::string::npos) << log;
    EXPECT_NE(log.find(what), std::string::npos) << log;
    EXPECT_EQ(Files(), before) << "the damaged spool must be left exactly as it was";
    RunResult verify = RunCommand({BinDir() + "/zerobusctl", "spool", "verify", "--path", Spool()},
                           std::chrono::seconds(60));
    EXPECT_EQ(verify.exit_code, 1) << verify.output;
    std::printf("diagnostic: %s\n", log.substr(log.find("zerobusd: ")).c_str());
  }

  TempDir dir_;
  std::unique_ptr<Daemon> daemon_;
};

TEST_F(CorruptionTest, ASoundSpoolVerifiesClean) {
  MakeSpool(/*clean=*/true);
  RunResult verify = RunCommand({BinDir() + "/zerobusctl", "spool", "verify", "--path", Spool()}, std::chrono::seconds(60));
  EXPECT_EQ(verify.exit_code, 0) << verify.output;
  EXPECT_NE(verify.output.find("lane readings: 20000 records"), std::string::npos) << verify.output;
  EXPECT_NE(verify.output.find("OK (every checksum verified)"), std::string::npos) << verify.output;
}

TEST_F(CorruptionTest, EmptyCurrentFileIsRefused) {
  MakeSpool(true);
  fs::resize_file(Spool() + "/CURRENT", 0);
  ExpectRefusedAtStart("damaged");
}

TEST_F(CorruptionTest, MissingCurrentFileIsRefusedNotReplaced) {
  MakeSpool(true);
  fs::remove(Spool() + "/CURRENT");
  const size_t log_start = daemon_->log().size();
  daemon_->Launch();
  const int code = daemon_->process()->Wait(std::chrono::seconds(20));
  const std::string log = daemon_->log().substr(log_start);
  EXPECT_NE(code, 0) << log;
  EXPECT_NE(log.find("no CURRENT file"), std::string::npos) << log;
  EXPECT_FALSE(fs::exists(Spool() + "/CURRENT")) << "no new spool was started over the old one";
}

TEST_F(CorruptionTest, DamagedManifestIsRefused) {
  MakeSpool(true);
  const std::string manifest = Find("MANIFEST-");
  ASSERT_FALSE(manifest.empty());
  FlipBytes(manifest, 0.5);
  ExpectRefusedAtStart("damaged");
}

TEST_F(CorruptionTest, TruncatedManifestIsRefused) {
  MakeSpool(true);
  const std::string manifest = Find("MANIFEST-");
  ASSERT_FALSE(manifest.empty());
  fs::resize_file(manifest, fs::file_size(manifest) / 2);
  // Depending on where the cut falls, RocksDB refuses it (a write-ahead log
  // the shortened MANIFEST no longer names) or would open it as an empty
  // spool, and then the watermark notices the records that vanished
  // ("is damaged: it holds less than it did at ..."): refused either way.
  ExpectRefusedAtStart("damaged");
}

// A spool RocksDB opens without complaint but that holds less than it
// held: an older copy put back (a restored backup, a snapshot rolled back)
// under the newer watermark. The watermark notices the records that vanished.
TEST_F(CorruptionTest, AnOlderCopyOfTheSpoolIsRefusedByItsWatermark) {
  MakeSpool(true, 2000);
  const std::string older = dir_.Sub("older-spool");
  fs::copy(Spool(), older, fs::copy_options::recursive);
  ASSERT_TRUE(daemon_->Start()) << daemon_->log();
  WriteRecords(dir_.Sub("more.ndjson"), "m", 2000);
  ASSERT_EQ(SendFile(daemon_->socket(), "readings", dir_.Sub("more.ndjson")).exit_code, 0);
  ASSERT_EQ(daemon_->Terminate(std::chrono::seconds(10)), 0);
  const std::string watermark = Spool() + "/ZEROBUSD-WATERMARK";
  const std::string kept = dir_.Sub("watermark");
  fs::copy_file(watermark, kept);
  fs::remove_all(Spool());
  fs::rename(older, Spool());
  fs::copy_file(kept, watermark, fs::copy_options::overwrite_existing);
  ExpectRefusedAtStart("it holds less than it did at");
}

TEST_F(CorruptionTest, TruncatedSstIsRefused) {
  MakeSpool(true);
  const std::string sst = Find(".sst");
  ASSERT_FALSE(sst.empty());
  fs::resize_file(sst, fs::file_size(sst) / 2);
  ExpectRefusedAtStart("damaged");
}

TEST_F(CorruptionTest, DamagedWalRecordBeforeTheTailIsRefused) {
  MakeSpool(/*clean=*/false);
  const std::string wal = Find(".log");
  ASSERT_FALSE(wal.empty());
  FlipBytes(wal, 0.3);
  ExpectRefusedAtStart("damaged");
}

// RocksDB checks a data block when it reads it, not at open: the route that
// reads it parks with the diagnostic; the daemon keeps serving and never
// skips or drops the damaged records silently.
TEST_F(CorruptionTest, DamagedRecordBytesParkTheRouteThatReadsThem) {
  MakeSpool(true);
  const std::string sst = Find(".sst");
  ASSERT_FALSE(sst.empty());
  FlipBytes(sst, 0.2, 64);
  RunResult verify = RunCommand({BinDir() + "/zerobusctl", "spool", "verify", "--path", Spool()}, std::chrono::seconds(60));
  EXPECT_EQ(verify.exit_code, 1) << verify.output;
  EXPECT_NE(verify.output.find("PROBLEM"), std::string::npos) << verify.output;

  DevServer server(dir_.path());
  ASSERT_TRUE(server.Start()) << server.log();
  DaemonOptions o;
  o.grpc_port = server.grpc_port();
  o.http_port = server.http_port();
  Daemon daemon(dir_.path(), o);
  ASSERT_TRUE(daemon.Start()) << daemon.log();
  ASSERT_TRUE(WaitFor([&] { return daemon.Metric("zerobusd_lane_parked", "route=\"readings\"").value_or(0) == 1; },
                      std::chrono::seconds(30)))
      << daemon.log().substr(0, 4000);
  EXPECT_NE(daemon.log().find("the spool is damaged"), std::string::npos);
  EXPECT_TRUE(daemon.process()->Running()) << "no crash loop";
  EXPECT_GT(daemon.Metric("zerobusd_spool_records", "route=\"readings\"").value_or(0), 0)
      << "the damaged records are not dropped";
  EXPECT_EQ(daemon.Terminate(std::chrono::seconds(10)), 0);
}

}  // namespace
}  // namespace zb::testing
