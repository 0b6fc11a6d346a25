#pragma once
// The dead-letter store's storage (the DeadLetters interface,
// spool/dead_letters.h, is its face): records the server refused, with its
// verdict, kept in the "dead_letters" column family until the operator
// replays or purges them (zerobusctl dlq). It shares the spool's writer: it
// only adds its changes to the batch the writer commits, so a record leaving
// its lane and entering the store is one atomic write, and learns of the
// commit after. Internal to the spool module.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "rocksdb/db.h"
#include "rocksdb/write_batch.h"
#include "spool/dead_letters.h"
#include "spool/spool.h"
#include "spool/spool_format.h"

namespace zb {

// Whether `filter` selects entry `id` of `lane`.
bool MatchesDeadLetterFilter(const DeadLetterFilter& filter, uint64_t id, const std::string& lane);

class DeadLetterStore {
 public:
  // `db` and `family` must outlive the store. `meta`: what LoadState read.
  DeadLetterStore(rocksdb::DB* db, rocksdb::ColumnFamilyHandle* family, DeadLetterMeta meta);

  // Any thread: entries with id >= `from_id` matching `filter`, in id
  // order, at most `limit`. An entry that does not parse is DataLossError.
  absl::StatusOr<std::vector<DeadLetter>> List(const DeadLetterFilter& filter, uint64_t from_id, size_t limit) const;
  // Any thread: what the last committed change left.
  DeadLetterMeta Committed() const;

  // Writer thread: changes put into a batch the writer commits, counted in
  // `meta` (start from Committed()); Published() once the batch is in.
  void Add(rocksdb::WriteBatch* batch, DeadLetterMeta* meta, const std::string& lane, SeqNo seq,
           const DeadLetterInfo& info, int64_t append_time_us, const std::string& payload, int64_t now_us) const;
  void Remove(rocksdb::WriteBatch* batch, DeadLetterMeta* meta, const DeadLetter& entry) const;
  void PutMeta(rocksdb::WriteBatch* batch, const DeadLetterMeta& meta) const;
  void Published(const DeadLetterMeta& meta);

 private:
  rocksdb::DB* const db_;
  rocksdb::ColumnFamilyHandle* const family_;
  mutable absl::Mutex mu_;
  DeadLetterMeta meta_ ABSL_GUARDED_BY(mu_);
};

}  // namespace zb
