// RocksDB spool. Layout (default column family):
//   "L" <lane> 0x00 <seq: 8 bytes big-endian>  ->  record envelope
//   "M" <lane>                                  ->  lane meta (fixed64 x4)
// Envelope: crc32c(time|payload) u32 LE, append time i64 LE (unix µs), payload.
// The lane meta (record count, bytes, next seq, deleted-up-to) is written in
// the same WriteBatch as the records or the delete it describes, so it is
// exact after any crash and start-up needs no scan of the backlog.

#include <endian.h>

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <filesystem>
#include <map>
#include <mutex>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/crc32c.h"
#include "rocksdb/convenience.h"
#include "rocksdb/db.h"
#include "rocksdb/options.h"
#include "rocksdb/table.h"
#include "rocksdb/write_batch.h"
#include "spool/spool.h"

namespace zb {
namespace {

constexpr size_t kEnvelopeHeader = 4 + 8;
constexpr size_t kMetaSize = 4 * 8;

std::string LanePrefix(const std::string& lane) { return absl::StrCat("L", lane, std::string(1, '\0')); }

std::string RecordKey(const std::string& lane, SeqNo seq) {
  std::string key = LanePrefix(lane);
  const uint64_t be = htobe64(seq);
  key.append(reinterpret_cast<const char*>(&be), 8);
  return key;
}

SeqNo SeqFromKey(const rocksdb::Slice& key) {
  uint64_t be = 0;
  std::memcpy(&be, key.data() + key.size() - 8, 8);
  return be64toh(be);
}

std::string MetaKey(const std::string& lane) { return absl::StrCat("M", lane); }

void PutFixed64(std::string* out, uint64_t v) {
  const uint64_t le = htole64(v);
  out->append(reinterpret_cast<const char*>(&le), 8);
}
uint64_t GetFixed64(const char* p) {
  uint64_t le = 0;
  std::memcpy(&le, p, 8);
  return le64toh(le);
}

std::string EncodeMeta(const LaneStats& s) {
  std::string v;
  PutFixed64(&v, s.records);
  PutFixed64(&v, s.bytes);
  PutFixed64(&v, s.next_seq);
  PutFixed64(&v, s.deleted_up_to);
  return v;
}

std::string EncodeEnvelope(int64_t time_us, const std::string& payload) {
  std::string v(kEnvelopeHeader, '\0');
  const uint64_t t = htole64(static_cast<uint64_t>(time_us));
  std::memcpy(v.data() + 4, &t, 8);
  v.append(payload);
  const uint32_t crc = htole32(Crc32c(v.data() + 4, v.size() - 4));
  std::memcpy(v.data(), &crc, 4);
  return v;
}

int64_t NowUs() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

absl::Status FromRocks(const rocksdb::Status& s, const std::string& what) {
  if (s.ok()) return absl::OkStatus();
  const std::string msg = absl::StrCat(what, ": ", s.ToString());
  if (s.IsCorruption()) return absl::DataLossError(msg);
  if (s.IsNoSpace()) return absl::ResourceExhaustedError(msg);
  if (s.IsIOError()) return absl::UnavailableError(msg);
  return absl::InternalError(msg);
}

class RocksDbSpool final : public Spool {
 public:
  RocksDbSpool(std::unique_ptr<rocksdb::DB> db, const SpoolOptions& options,
               std::map<std::string, LaneStats> lanes)
      : db_(std::move(db)), options_(options), lanes_(std::move(lanes)) {
    writer_ = std::thread([this] { WriterLoop(); });
    reader_ = std::thread([this] { ReaderLoop(); });
  }

  ~RocksDbSpool() override {
    {
      std::lock_guard<std::mutex> lock(read_mu_);
      read_stopping_ = true;
    }
    read_cv_.notify_all();
    reader_.join();
    {
      std::lock_guard<std::mutex> lock(queue_mu_);
      stopping_ = true;
    }
    queue_cv_.notify_all();
    writer_.join();
    db_->SyncWAL();
    db_->Close();
  }

  void AppendAsync(const std::string& lane, std::vector<std::string> records,
                   AppendCallback done) override {
    Op op;
    op.kind = Op::kAppend;
    op.lane = lane;
    op.records = std::move(records);
    op.append_done = std::move(done);
    Enqueue(std::move(op));
  }

  void DeleteUpToAsync(const std::string& lane, SeqNo up_to, DeleteCallback done) override {
    Op op;
    op.kind = Op::kDelete;
    op.lane = lane;
    op.up_to = up_to;
    op.delete_done = std::move(done);
    Enqueue(std::move(op));
  }

  absl::StatusOr<std::vector<SpoolRecord>> ReadFrom(const std::string& lane, SeqNo from,
                                                    size_t max_records, size_t max_bytes) override {
    std::vector<SpoolRecord> out;
    const std::string upper = absl::StrCat("L", lane, std::string(1, '\1'));
    rocksdb::Slice upper_slice(upper);
    rocksdb::ReadOptions ro;
    ro.iterate_upper_bound = &upper_slice;
    ro.verify_checksums = true;
    size_t bytes = 0;
    {
      std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro));
      for (it->Seek(RecordKey(lane, from)); it->Valid() && out.size() < max_records; it->Next()) {
        const rocksdb::Slice value = it->value();
        const SeqNo seq = SeqFromKey(it->key());
        if (value.size() < kEnvelopeHeader) {
          return absl::DataLossError(absl::StrCat("spool lane ", lane, " seq ", seq, ": truncated record"));
        }
        uint32_t crc = 0;
        std::memcpy(&crc, value.data(), 4);
        if (le32toh(crc) != Crc32c(value.data() + 4, value.size() - 4)) {
          return absl::DataLossError(absl::StrCat("spool lane ", lane, " seq ", seq, ": checksum mismatch"));
        }
        const size_t payload_size = value.size() - kEnvelopeHeader;
        if (!out.empty() && bytes + payload_size > max_bytes) break;
        SpoolRecord rec;
        rec.seq = seq;
        rec.append_time_us = static_cast<int64_t>(GetFixed64(value.data() + 4));
        rec.payload.assign(value.data() + kEnvelopeHeader, payload_size);
        bytes += payload_size;
        out.push_back(std::move(rec));
      }
      if (!it->status().ok()) return FromRocks(it->status(), absl::StrCat("spool read lane ", lane));
    }
    return out;
  }

  void ReadFromAsync(const std::string& lane, SeqNo from, size_t max_records, size_t max_bytes,
                     ReadCallback done) override {
    {
      std::lock_guard<std::mutex> lock(read_mu_);
      reads_.push_back(ReadOp{lane, from, max_records, max_bytes, std::move(done)});
    }
    read_cv_.notify_one();
  }

  int64_t OldestAppendTimeUs(const std::string& lane) override {
    auto recs = ReadFrom(lane, Stats(lane).deleted_up_to + 1, 1, 1);
    if (!recs.ok() || recs->empty()) return 0;
    return recs->front().append_time_us;
  }

  LaneStats Stats(const std::string& lane) override {
    absl::MutexLock lock(&stats_mu_);
    auto it = lanes_.find(lane);
    return it == lanes_.end() ? LaneStats{} : it->second;
  }

  std::vector<std::string> Lanes() override {
    absl::MutexLock lock(&stats_mu_);
    std::vector<std::string> out;
    for (const auto& [name, _] : lanes_) out.push_back(name);
    return out;
  }

  uint64_t TotalBytes() override {
    absl::MutexLock lock(&stats_mu_);
    uint64_t total = 0;
    for (const auto& [_, s] : lanes_) total += s.bytes;
    return total;
  }

 private:
  struct Op {
    enum Kind { kAppend, kDelete } kind = kAppend;
    std::string lane;
    std::vector<std::string> records;
    SeqNo up_to = 0;
    AppendCallback append_done;
    DeleteCallback delete_done;
    AppendResult result;
  };

  struct ReadOp {
    std::string lane;
    SeqNo from;
    size_t max_records;
    size_t max_bytes;
    ReadCallback done;
  };

  // Reader thread: one read at a time, in request order. Reads pending at
  // destruction are answered with CancelledError.
  void ReaderLoop() {
    while (true) {
      ReadOp op;
      {
        std::unique_lock<std::mutex> lock(read_mu_);
        read_cv_.wait(lock, [this] { return read_stopping_ || !reads_.empty(); });
        if (read_stopping_) break;
        op = std::move(reads_.front());
        reads_.pop_front();
      }
      op.done(ReadFrom(op.lane, op.from, op.max_records, op.max_bytes));
    }
    std::deque<ReadOp> cancelled;
    {
      std::lock_guard<std::mutex> lock(read_mu_);
      cancelled.swap(reads_);
    }
    for (auto& op : cancelled) op.done(absl::CancelledError("spool closed"));
  }

  void Enqueue(Op op) {
    {
      std::lock_guard<std::mutex> lock(queue_mu_);
      queue_.push_back(std::move(op));
    }
    queue_cv_.notify_one();
  }

  // Writer thread: takes every queued op (up to max_group_bytes of appends),
  // writes them as one WriteBatch with one fsync, then runs their callbacks.
  void WriterLoop() {
    while (true) {
      std::vector<Op> group;
      {
        std::unique_lock<std::mutex> lock(queue_mu_);
        queue_cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
        if (queue_.empty() && stopping_) return;
        size_t bytes = 0;
        while (!queue_.empty() && (group.empty() || bytes < options_.max_group_bytes)) {
          for (const auto& r : queue_.front().records) bytes += r.size();
          group.push_back(std::move(queue_.front()));
          queue_.pop_front();
        }
      }
      CommitGroup(group);
    }
  }

  void CommitGroup(std::vector<Op>& group) {
    std::map<std::string, LaneStats> touched;
    {
      absl::MutexLock lock(&stats_mu_);
      for (const auto& op : group) {
        auto it = lanes_.find(op.lane);
        touched[op.lane] = it == lanes_.end() ? LaneStats{} : it->second;
      }
    }
    absl::Status status = latched_error_;
    rocksdb::WriteBatch batch;
    bool any_append = false;
    const int64_t now = NowUs();
    for (auto& op : group) {
      if (!status.ok()) break;
      LaneStats& lane = touched[op.lane];
      if (op.kind == Op::kAppend) {
        if (op.records.empty()) continue;
        any_append = true;
        op.result.first_seq = lane.next_seq;
        for (const auto& rec : op.records) {
          batch.Put(RecordKey(op.lane, lane.next_seq++), EncodeEnvelope(now, rec));
          lane.records++;
          lane.bytes += rec.size();
        }
        op.result.last_seq = lane.next_seq - 1;
      } else {
        status = AddDelete(op.lane, op.up_to, &lane, &batch);
      }
    }
    if (status.ok()) {
      for (const auto& [name, s] : touched) batch.Put(MetaKey(name), EncodeMeta(s));
      rocksdb::WriteOptions wo;
      wo.sync = any_append && options_.sync;
      status = FromRocks(db_->Write(wo, &batch), "spool write");
      if (!status.ok()) latched_error_ = status;  // RocksDB stops accepting writes after a failed sync
    }
    if (status.ok()) {
      absl::MutexLock lock(&stats_mu_);
      for (auto& [name, s] : touched) lanes_[name] = s;
    }
    for (auto& op : group) {
      if (op.kind == Op::kAppend) {
        if (!op.append_done) continue;
        if (status.ok()) op.append_done(op.result);
        else op.append_done(status);
      } else if (op.delete_done) {
        op.delete_done(status);
      }
    }
  }

  // Adds a range delete of (lane.deleted_up_to, up_to] and updates `lane`'s
  // counters by the records it removes (they were read recently: cache hits).
  absl::Status AddDelete(const std::string& lane_name, SeqNo up_to, LaneStats* lane,
                         rocksdb::WriteBatch* batch) {
    if (up_to <= lane->deleted_up_to) return absl::OkStatus();
    if (up_to >= lane->next_seq) {
      return absl::InternalError(absl::StrCat("spool delete beyond end of lane ", lane_name, ": ", up_to,
                                              " >= next seq ", lane->next_seq));
    }
    const std::string begin = RecordKey(lane_name, lane->deleted_up_to + 1);
    const std::string end = RecordKey(lane_name, up_to + 1);
    rocksdb::Slice end_slice(end);
    rocksdb::ReadOptions ro;
    ro.iterate_upper_bound = &end_slice;
    uint64_t records = 0, bytes = 0;
    {
      std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro));
      for (it->Seek(begin); it->Valid(); it->Next()) {
        records++;
        bytes += it->value().size() - kEnvelopeHeader;
      }
      if (!it->status().ok()) return FromRocks(it->status(), "spool delete scan");
    }
    batch->DeleteRange(begin, end);
    lane->records -= std::min(lane->records, records);
    lane->bytes -= std::min(lane->bytes, bytes);
    lane->deleted_up_to = up_to;
    return absl::OkStatus();
  }

  std::unique_ptr<rocksdb::DB> db_;
  const SpoolOptions options_;
  std::thread writer_;

  std::mutex queue_mu_;
  std::condition_variable queue_cv_;
  std::deque<Op> queue_;  // guarded by queue_mu_
  bool stopping_ = false; // guarded by queue_mu_

  absl::Mutex stats_mu_;
  std::map<std::string, LaneStats> lanes_ ABSL_GUARDED_BY(stats_mu_);

  absl::Status latched_error_;  // writer thread only

  std::thread reader_;
  std::mutex read_mu_;
  std::condition_variable read_cv_;
  std::deque<ReadOp> reads_;    // guarded by read_mu_
  bool read_stopping_ = false;  // guarded by read_mu_
};

}  // namespace

absl::StatusOr<std::unique_ptr<Spool>> OpenRocksDbSpool(const SpoolOptions& options) {
  rocksdb::Options db_options;
  db_options.create_if_missing = true;
  db_options.paranoid_checks = true;
  // A torn last WAL record (an append whose fsync never finished, so nobody
  // was told "accepted") is dropped; corruption anywhere else fails the open.
  db_options.wal_recovery_mode = rocksdb::WALRecoveryMode::kTolerateCorruptedTailRecords;
  db_options.write_buffer_size = 64u << 20;
  db_options.max_background_jobs = 2;
  db_options.compression = rocksdb::kNoCompression;
  for (auto c : rocksdb::GetSupportedCompressions()) {
    if (c == rocksdb::kLZ4Compression) db_options.compression = c;
  }
  rocksdb::BlockBasedTableOptions table;
  table.block_size = 64 << 10;
  db_options.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));

  std::error_code mkdir_error;
  std::filesystem::create_directories(options.path, mkdir_error);
  if (mkdir_error) {
    return absl::UnavailableError(
        absl::StrCat("cannot create spool folder ", options.path, ": ", mkdir_error.message()));
  }
  rocksdb::DB* raw = nullptr;
  rocksdb::Status s = rocksdb::DB::Open(db_options, options.path, &raw);
  if (!s.ok()) {
    return absl::Status(FromRocks(s, absl::StrCat("cannot open spool at ", options.path)).code(),
                        absl::StrCat("cannot open spool at ", options.path, ": ", s.ToString(),
                                     s.IsCorruption() ? " (the spool is damaged; it was left untouched)" : ""));
  }
  std::unique_ptr<rocksdb::DB> db(raw);

  std::map<std::string, LaneStats> lanes;
  {
    const std::string upper = "N";
    rocksdb::Slice upper_slice(upper);
    rocksdb::ReadOptions ro;
    ro.iterate_upper_bound = &upper_slice;
    std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(ro));
    for (it->Seek("M"); it->Valid(); it->Next()) {
      const rocksdb::Slice v = it->value();
      const std::string lane = it->key().ToString().substr(1);
      if (v.size() != kMetaSize) {
        return absl::DataLossError(absl::StrCat("spool at ", options.path, ": bad meta for lane ", lane));
      }
      LaneStats st;
      st.records = GetFixed64(v.data());
      st.bytes = GetFixed64(v.data() + 8);
      st.next_seq = GetFixed64(v.data() + 16);
      st.deleted_up_to = GetFixed64(v.data() + 24);
      lanes[lane] = st;
    }
    if (!it->status().ok()) return FromRocks(it->status(), absl::StrCat("spool at ", options.path));
  }
  return std::unique_ptr<Spool>(new RocksDbSpool(std::move(db), options, std::move(lanes)));
}

}  // namespace zb
