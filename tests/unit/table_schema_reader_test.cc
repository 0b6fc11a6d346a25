// Tables of from_table routes read off the caller's thread
// (schema/table_schema_reader.h): start-up reads run at once, a table is
// never read twice at a time, answers come through the caller's executor,
// and answers about the wrong table or with columns no stream can carry
// are refused with the reason.

#include "schema/table_schema_reader.h"

#include <atomic>
#include <condition_variable>
#include <mutex>

#include "../fakes/loop_executor.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testutil.h"

namespace zb {
namespace {

using ::testing::HasSubstr;
using Result = absl::StatusOr<std::shared_ptr<const TableSchema>>;

std::string TableJson(const std::string& full_name, const std::string& second_type = "timestamp") {
  return absl::StrCat(R"({"full_name":")", full_name, R"(","columns":[)",
                      R"({"name":"id","type_text":"string","nullable":false},)", R"({"name":"at","type_text":")",
                      second_type, R"(","nullable":true}]})");
}

// Holds every fetch until Release(); counts them.
class GatedFetch {
 public:
  UcTableFetch fetch() {
    return [this](const std::string& table) -> absl::StatusOr<std::string> {
      std::unique_lock<std::mutex> lock(mu_);
      ++calls_;
      ++waiting_;
      cv_.notify_all();
      cv_.wait(lock, [this] { return released_; });
      --waiting_;
      if (table == "main.edge.missing") return absl::NotFoundError("no table main.edge.missing");
      if (table == "main.edge.liar") return TableJson("main.edge.other");
      if (table == "main.edge.odd") return TableJson(table, "interval day");
      return TableJson(table);
    };
  }
  // Waits (5 s at most) until `n` fetches are under way at once.
  bool WaitForWaiting(int n) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(5), [&] { return waiting_ >= n; });
  }
  void Release() {
    std::lock_guard<std::mutex> lock(mu_);
    released_ = true;
    cv_.notify_all();
  }
  int calls() {
    std::lock_guard<std::mutex> lock(mu_);
    return calls_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int calls_ = 0, waiting_ = 0;
  bool released_ = false;
};

TEST(TableSchemaReaderTest, StartUpReadsEveryTableAtOnceAndSaysWhatWentWrong) {
  GatedFetch gate;
  TableSchemaReader reader(gate.fetch(), 64);
  bool concurrent = false;
  std::thread release([&] {
    // Each read is held until all four wait: only concurrent reads all get
    // there. Released either way, so a failure fails rather than hangs.
    concurrent = gate.WaitForWaiting(4);
    gate.Release();
  });
  auto results = reader.ReadNow({"main.edge.a", "main.edge.missing", "main.edge.liar", "main.edge.odd"});
  release.join();
  EXPECT_TRUE(concurrent) << "the four tables were not read at once";
  ASSERT_EQ(results.size(), 4u);
  ASSERT_TRUE(results.at("main.edge.a").ok()) << results.at("main.edge.a").status();
  const TableSchema& a = **results.at("main.edge.a");
  EXPECT_EQ(a.table.columns.size(), 2u);
  EXPECT_EQ(a.table_json, TableJson("main.edge.a"));
  ASSERT_NE(a.codec, nullptr);
  EXPECT_TRUE(a.codec->FromJson(R"({"id":"x","at":"2026-12-01T10:00:00Z"})").ok());
  EXPECT_TRUE(absl::IsNotFound(results.at("main.edge.missing").status()));
  EXPECT_THAT(results.at("main.edge.liar").status().message(),
              HasSubstr("Unity Catalog's answer about main.edge.liar describes main.edge.other"));
  EXPECT_THAT(results.at("main.edge.odd").status().message(),
              HasSubstr("the columns of main.edge.odd cannot be sent"));
  EXPECT_THAT(results.at("main.edge.odd").status().message(), HasSubstr("at"));
}

TEST(TableSchemaReaderTest, NamesDifferOnlyInCaseAndGarbageIsRefused) {
  TableSchemaReader reader([](const std::string&) -> absl::StatusOr<std::string> { return TableJson("main.edge.t"); },
                           64);
  auto results = reader.ReadNow({"Main.Edge.T"});
  EXPECT_TRUE(results.at("Main.Edge.T").ok()) << results.at("Main.Edge.T").status();
  for (const char* garbage : {"", "[]", "{\"full_name\":\"main.edge.t\"}", "{\"columns\":7}", "<html>"}) {
    SCOPED_TRACE(garbage);
    auto schema = MakeTableSchema("main.edge.t", garbage, 64);
    ASSERT_FALSE(schema.ok());
    EXPECT_THAT(schema.status().message(), HasSubstr("Unity Catalog's answer about main.edge.t is not a table"));
  }
}

TEST(TableSchemaReaderTest, ATableIsReadOnceAtATimeAndEveryCallerHearsThroughItsExecutor) {
  GatedFetch gate;
  testing::LoopExecutor executor;
  std::mutex mu;
  std::condition_variable cv;
  std::vector<Result> answers;
  std::vector<bool> on_executor;
  {
    TableSchemaReader reader(gate.fetch(), 64);
    for (int i = 0; i < 3; ++i) {
      reader.Read("main.edge.a", executor.post(), [&](Result r) {
        std::lock_guard<std::mutex> lock(mu);
        on_executor.push_back(std::this_thread::get_id() == executor.id());
        answers.push_back(std::move(r));
        cv.notify_all();
      });
    }
    const bool under_way = gate.WaitForWaiting(1);
    if (!under_way) gate.Release();  // the detached read must not outlive `gate` blocked
    ASSERT_TRUE(under_way);
    // The reader goes away with its read under way: the read still ends
    // and answers (the executor decides whether that still matters).
  }
  gate.Release();
  std::unique_lock<std::mutex> lock(mu);
  ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(10), [&] { return answers.size() == 3; }));
  EXPECT_EQ(gate.calls(), 1) << "three callers, one read";
  for (size_t i = 0; i < answers.size(); ++i) {
    EXPECT_TRUE(on_executor[i]);
    ASSERT_TRUE(answers[i].ok()) << answers[i].status();
    EXPECT_EQ((*answers[i])->table.full_name, "main.edge.a");
  }
}

TEST(TableSchemaReaderTest, ALaterReadReadsAgain) {
  std::atomic<int> calls{0};
  TableSchemaReader reader(
      [&](const std::string& table) -> absl::StatusOr<std::string> {
        return TableJson(table, ++calls == 1 ? "timestamp" : "date");
      },
      64);
  testing::LoopExecutor executor;
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::string> types;
  for (int i = 0; i < 2; ++i) {
    reader.Read("main.edge.a", executor.post(), [&](Result r) {
      std::lock_guard<std::mutex> lock(mu);
      types.push_back(r.ok() ? (*r)->table.columns[1].type_text : std::string(r.status().message()));
      cv.notify_all();
    });
    std::unique_lock<std::mutex> lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(10), [&] { return types.size() == size_t(i + 1); }));
  }
  EXPECT_EQ(types, (std::vector<std::string>{"timestamp", "date"}));
}

}  // namespace
}  // namespace zb
