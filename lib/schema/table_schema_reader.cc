#include "schema/table_schema_reader.h"

#include <future>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "schema/uc_convert.h"

namespace zb {

absl::StatusOr<std::shared_ptr<const TableSchema>> MakeTableSchema(const std::string& full_name,
                                                                   std::string table_json, int max_json_depth,
                                                                   const UnknownColumnHook& on_unknown_column) {
  absl::StatusOr<UcTable> table = ParseUcTable(table_json);
  if (!table.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("Unity Catalog's answer about ", full_name, " is not a table description: ",
                     table.status().message()));
  }
  // Unity Catalog's names are case-insensitive (it answers in lower case).
  if (!absl::EqualsIgnoreCase(table->full_name, full_name)) {
    return absl::InvalidArgumentError(
        absl::StrCat("Unity Catalog's answer about ", full_name, " describes ", table->full_name));
  }
  std::function<void()> hook;
  if (on_unknown_column) hook = [on_unknown_column, full_name] { on_unknown_column(full_name); };
  absl::StatusOr<std::unique_ptr<RecordCodec>> codec = MakeTableCodec(*table, max_json_depth, std::move(hook));
  if (!codec.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the columns of ", full_name, " cannot be sent: ", codec.status().message()));
  }
  auto schema = std::make_shared<TableSchema>();
  schema->table = std::move(*table);
  schema->table_json = std::move(table_json);
  schema->codec = std::move(*codec);
  return std::shared_ptr<const TableSchema>(std::move(schema));
}

struct TableSchemaReader::Shared {
  UcTableFetch fetch;
  int max_json_depth;
  UnknownColumnHook on_unknown_column;
  std::mutex mu;
  // Tables being read, and who waits for each answer. Guarded by mu.
  std::map<std::string, std::vector<Done>> waiting;

  absl::StatusOr<std::shared_ptr<const TableSchema>> ReadOne(const std::string& full_name) const {
    absl::StatusOr<std::string> json = fetch(full_name);
    if (!json.ok()) return json.status();
    return MakeTableSchema(full_name, std::move(*json), max_json_depth, on_unknown_column);
  }
};

TableSchemaReader::TableSchemaReader(UcTableFetch fetch, int max_json_depth, UnknownColumnHook on_unknown_column)
    : shared_(std::make_shared<Shared>()) {
  shared_->fetch = std::move(fetch);
  shared_->max_json_depth = max_json_depth;
  shared_->on_unknown_column = std::move(on_unknown_column);
}

// The threads under way hold `shared_` (and so the fetch function) until
// they end; their answers go to PostFns that know whether their executor
// is gone.
TableSchemaReader::~TableSchemaReader() = default;

std::map<std::string, absl::StatusOr<std::shared_ptr<const TableSchema>>> TableSchemaReader::ReadNow(
    const std::set<std::string>& tables) {
  std::map<std::string, std::future<absl::StatusOr<std::shared_ptr<const TableSchema>>>> reads;
  for (const std::string& table : tables) {
    reads.emplace(table, std::async(std::launch::async, [shared = shared_, table] { return shared->ReadOne(table); }));
  }
  std::map<std::string, absl::StatusOr<std::shared_ptr<const TableSchema>>> out;
  for (auto& [table, read] : reads) out.emplace(table, read.get());
  return out;
}

void TableSchemaReader::Read(const std::string& full_name, const PostFn& on, Done done) {
  Done deliver = DeliverVia(on, std::move(done));
  {
    std::lock_guard<std::mutex> lock(shared_->mu);
    auto [it, first] = shared_->waiting.try_emplace(full_name);
    it->second.push_back(std::move(deliver));
    if (!first) return;  // the read under way answers this one too
  }
  // Detached: a read blocked on a slow Unity Catalog must not hold up the
  // daemon's shutdown. At most one per table.
  std::thread([shared = shared_, full_name] {
    absl::StatusOr<std::shared_ptr<const TableSchema>> result = shared->ReadOne(full_name);
    std::vector<Done> waiting;
    {
      std::lock_guard<std::mutex> lock(shared->mu);
      waiting = std::move(shared->waiting[full_name]);
      shared->waiting.erase(full_name);
    }
    for (Done& d : waiting) d(result);
  }).detach();
}

}  // namespace zb
