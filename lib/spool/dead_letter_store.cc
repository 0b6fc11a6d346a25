#include "spool/dead_letter_store.h"

#include <algorithm>
#include <memory>

#include "absl/strings/str_cat.h"
#include "spool.pb.h"
#include "spool/rocksdb_store.h"

namespace zb {

bool MatchesDeadLetterFilter(const DeadLetterFilter& filter, uint64_t id, const std::string& lane) {
  if (!filter.lane.empty() && filter.lane != lane) return false;
  return filter.ids.empty() || std::find(filter.ids.begin(), filter.ids.end(), id) != filter.ids.end();
}

DeadLetterStore::DeadLetterStore(rocksdb::DB* db, rocksdb::ColumnFamilyHandle* family, DeadLetterMeta meta)
    : db_(db), family_(family), meta_(meta) {}

absl::StatusOr<std::vector<DeadLetter>> DeadLetterStore::List(const DeadLetterFilter& filter, uint64_t from_id,
                                                              size_t limit) const {
  std::vector<DeadLetter> out;
  const std::string upper = "F";
  rocksdb::Slice upper_slice(upper);
  rocksdb::ReadOptions ro;
  ro.iterate_upper_bound = &upper_slice;
  ro.verify_checksums = true;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, family_));
  for (it->Seek(DeadLetterKey(from_id)); it->Valid() && out.size() < limit; it->Next()) {
    const uint64_t id = SeqFromKey(View(it->key()));
    ::zerobusd::spool::DeadLetter entry;
    if (!entry.ParseFromArray(it->value().data(), static_cast<int>(it->value().size()))) {
      return absl::DataLossError(absl::StrCat("spool dead-letter store: entry ", id, " does not parse"));
    }
    if (!MatchesDeadLetterFilter(filter, id, entry.lane())) continue;
    DeadLetter d;
    d.id = id;
    d.lane = entry.lane();
    d.seq = entry.seq();
    d.info.table = entry.table();
    d.info.code = entry.code();
    d.info.message = entry.message();
    d.info.reason = entry.reason();
    d.info.attempts = entry.attempts();
    d.info.first_failure_us = entry.first_failure_us();
    d.append_time_us = entry.append_time_us();
    d.dead_lettered_us = entry.dead_lettered_us();
    d.payload = entry.payload();
    out.push_back(std::move(d));
  }
  if (!it->status().ok()) return FromRocks(it->status(), "spool dead-letter store read");
  return out;
}

DeadLetterMeta DeadLetterStore::Committed() const {
  absl::MutexLock lock(&mu_);
  return meta_;
}

void DeadLetterStore::Add(rocksdb::WriteBatch* batch, DeadLetterMeta* meta, const std::string& lane, SeqNo seq,
                          const DeadLetterInfo& info, int64_t append_time_us, const std::string& payload,
                          int64_t now_us) const {
  ::zerobusd::spool::DeadLetter entry;
  entry.set_lane(lane);
  entry.set_seq(seq);
  entry.set_table(info.table);
  entry.set_code(info.code);
  entry.set_message(info.message);
  entry.set_reason(info.reason);
  entry.set_attempts(info.attempts);
  entry.set_append_time_us(append_time_us);
  entry.set_first_failure_us(info.first_failure_us);
  entry.set_dead_lettered_us(now_us);
  entry.set_payload(payload);
  batch->Put(family_, DeadLetterKey(meta->next_id++), entry.SerializeAsString());
  meta->records++;
  meta->bytes += payload.size();
}

void DeadLetterStore::Remove(rocksdb::WriteBatch* batch, DeadLetterMeta* meta, const DeadLetter& entry) const {
  batch->Delete(family_, DeadLetterKey(entry.id));
  meta->records -= std::min<uint64_t>(meta->records, 1);
  meta->bytes -= std::min<uint64_t>(meta->bytes, entry.payload.size());
}

void DeadLetterStore::PutMeta(rocksdb::WriteBatch* batch, const DeadLetterMeta& meta) const {
  batch->Put(family_, kDeadLetterMetaKey, EncodeDeadLetterMeta(meta));
}

void DeadLetterStore::Published(const DeadLetterMeta& meta) {
  absl::MutexLock lock(&mu_);
  meta_ = meta;
}

}  // namespace zb
