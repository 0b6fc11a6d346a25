// The daemon's log lines (daemon/logging.h): JSON lines that stay valid JSON
// whatever a message holds, syslog priorities for the journal, no timestamp
// of our own there, and the journal recognised only when stdout is its
// stream.

#include "daemon/logging.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <memory>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "rapidjson/document.h"
#include "spdlog/sinks/ostream_sink.h"
#include "spdlog/spdlog.h"

namespace zb {
namespace {

// Logs through spdlog's default logger into a string.
class LoggingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_st>(out_);
    previous_ = spdlog::default_logger();
    spdlog::set_default_logger(std::make_shared<spdlog::logger>("test", sink));
    spdlog::set_level(spdlog::level::debug);
  }
  void TearDown() override { spdlog::set_default_logger(previous_); }
  std::string Lines() { return out_.str(); }

  std::ostringstream out_;
  std::shared_ptr<spdlog::logger> previous_;
};

TEST_F(LoggingTest, JsonLinesAreValidJsonWhateverTheMessageHolds) {
  ConfigureLogging(LogFormat::kJson, /*journal=*/false);
  spdlog::warn("route \"a\": bad \\ byte \xff, tab\t, bell\x07, é and 😀");
  const std::string line = Lines();
  ASSERT_FALSE(line.empty());
  EXPECT_EQ(line.back(), '\n');
  rapidjson::Document d;
  d.Parse(line.c_str(), line.size() - 1);
  ASSERT_FALSE(d.HasParseError()) << line;
  EXPECT_STREQ(d["level"].GetString(), "warning");
  EXPECT_EQ(std::string(d["message"].GetString()), "route \"a\": bad \\ byte \xef\xbf\xbd, tab\t, bell\x07, é and 😀");
  const std::string time = d["time"].GetString();
  EXPECT_EQ(time.size(), std::string("2026-12-01T10:00:00.123456Z").size()) << time;
  EXPECT_EQ(time.back(), 'Z');
}

TEST_F(LoggingTest, TheJournalGetsPrioritiesAndNoTimestampOfOurs) {
  ConfigureLogging(LogFormat::kText, /*journal=*/true);
  spdlog::debug("d");
  spdlog::info("i");
  spdlog::warn("w");
  spdlog::error("e");
  spdlog::critical("c");
  EXPECT_EQ(Lines(), "<7>debug d\n<6>info i\n<4>warning w\n<3>error e\n<2>critical c\n");
  out_.str("");
  ConfigureLogging(LogFormat::kJson, /*journal=*/true);
  spdlog::error("x");
  EXPECT_EQ(Lines().rfind("<3>{\"time\":", 0), 0u) << Lines();
}

TEST_F(LoggingTest, TextOutsideTheJournalKeepsItsTimestamp) {
  ConfigureLogging(LogFormat::kText, /*journal=*/false);
  spdlog::info("hello");
  const std::string line = Lines();
  EXPECT_NE(line.find(" info hello\n"), std::string::npos) << line;
  EXPECT_EQ(line[4], '-') << line;
}

TEST(JournalStreamTest, OnlyStdoutsOwnDeviceAndInodeCount) {
  struct stat st {};
  ASSERT_EQ(fstat(1, &st), 0);
  const std::string mine = absl::StrCat(st.st_dev, ":", st.st_ino);
  for (const std::string& value : {std::string(""), std::string("garbage"), absl::StrCat(st.st_dev, ":", st.st_ino + 1)}) {
    setenv("JOURNAL_STREAM", value.c_str(), 1);
    EXPECT_FALSE(LogStreamIsJournal()) << value;
  }
  setenv("JOURNAL_STREAM", mine.c_str(), 1);
  EXPECT_TRUE(LogStreamIsJournal());
  unsetenv("JOURNAL_STREAM");
  EXPECT_FALSE(LogStreamIsJournal());
}

}  // namespace
}  // namespace zb
