#pragma once
// Routes whose schema is their table (schema.from_table): Unity Catalog's
// answer about the table, read off the event loop, made into the route's
// codec (uc_convert.h). The answer comes from an injected reader (the
// daemon's is FetchUcTableJson; tests read files), so this module does no
// I/O of its own.

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/post_fn.h"
#include "schema/record_codec.h"
#include "schema/uc_schema.h"

namespace zb {

// One reading of a table. Immutable once made; shared freely.
struct TableSchema {
  UcTable table;
  std::string table_json;                    // Unity Catalog's answer, as read
  std::shared_ptr<const RecordCodec> codec;  // MakeTableCodec(table)
};

// Parses `table_json` and builds the codec (CPU only). An answer about
// another table than `full_name`, or with a column no stream can carry, is
// an InvalidArgumentError saying so.
// `on_unknown_column` as MakeTableCodec's, told the table's name.
using UnknownColumnHook = std::function<void(const std::string& full_name)>;
absl::StatusOr<std::shared_ptr<const TableSchema>> MakeTableSchema(const std::string& full_name,
                                                                   std::string table_json, int max_json_depth,
                                                                   const UnknownColumnHook& on_unknown_column = nullptr);

// Unity Catalog's JSON answer about a table. Blocking; called on the
// reader's threads, never on the caller's.
using UcTableFetch = std::function<absl::StatusOr<std::string>(const std::string& full_name)>;

// Thread-safe. A read runs on a thread of its own, so a slow Unity Catalog
// never holds the event loop or shutdown: at most one read per table is
// under way at a time, and a Read() of a table being read gets that read's
// answer. A read still under way when the reader is destroyed finishes on
// its thread and its answer is dropped (the callers' PostFn decides whether
// their executor still exists).
class TableSchemaReader {
 public:
  using Done = std::function<void(absl::StatusOr<std::shared_ptr<const TableSchema>>)>;

  // The codecs it makes call `on_unknown_column` (optional) as
  // MakeTableCodec says.
  TableSchemaReader(UcTableFetch fetch, int max_json_depth, UnknownColumnHook on_unknown_column = nullptr);
  ~TableSchemaReader();

  // Blocking, for start-up: reads every table at once (concurrently) and
  // waits for all of them.
  std::map<std::string, absl::StatusOr<std::shared_ptr<const TableSchema>>> ReadNow(
      const std::set<std::string>& tables);

  // Reads `full_name` again; `done` runs through `on` (never inline).
  void Read(const std::string& full_name, const PostFn& on, Done done);

 private:
  struct Shared;
  std::shared_ptr<Shared> shared_;
};

}  // namespace zb
