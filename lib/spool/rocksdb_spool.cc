// RocksDB spool. Keys and values: spool/spool_format.h.
// Every meta value is written in the same WriteBatch as the change it
// describes, so it is exact after any crash and start-up needs no scan of
// the backlog.

#include <endian.h>
#include <sys/stat.h>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <fstream>
#include <sstream>
#include <deque>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include <pthread.h>

#include "absl/base/thread_annotations.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/crc32c.h"
#include "common/status.h"
#include "rocksdb/cache.h"
#include "rocksdb/convenience.h"
#include "rocksdb/db.h"
#include "rocksdb/iostats_context.h"
#include "rocksdb/options.h"
#include "rocksdb/perf_context.h"
#include "rocksdb/perf_level.h"
#include "rocksdb/slice_transform.h"
#include "rocksdb/table.h"
#include "rocksdb/write_batch.h"
#include "spdlog/spdlog.h"
#include "spool.pb.h"
#include "spool/space_guard.h"
#include "spool/spool.h"
#include "spool/spool_dir.h"
#include "spool/spool_format.h"

namespace zb {
namespace {

constexpr char kDeadLetterFamily[] = "dead_letters";
// Replay and purge commit in chunks of this many entries.
constexpr size_t kDeadLetterChunk = 10000;
constexpr char kWatermarkFile[] = "ZEROBUSD-WATERMARK";
// How often the watermark follows the spool while it changes.
constexpr std::chrono::seconds kWatermarkInterval{5};
// How often appends waiting for room, held deletes and a full spool look
// for room again when nothing else happens.
constexpr std::chrono::milliseconds kRoomPoll{100};
// How often the tidy thread looks for deleted records' disk to give back,
// at most.
constexpr std::chrono::seconds kTidyInterval{1};
// A lane whose deleted records take more than this much of the table files
// has that range compacted while it drains, and a drained spool holding
// more table files than this is compacted.
constexpr uint64_t kTidyDeletedBytes = 32u << 20;
constexpr uint64_t kTidyDrainedBytes = 4u << 20;

// What a WriteBatch grows by (tag, column family, length varints, key,
// value), with room to spare, so the space guard can decide per op.
uint64_t MetaBytes(const std::string& lane) { return lane.size() + 1 + kLaneMetaSize + 16; }
uint64_t DeleteBytes(const std::string& lane) { return 2 * (lane.size() + 10) + 16; }
std::string WatermarkPath(const std::string& spool) { return spool + "/" + kWatermarkFile; }

absl::string_view View(const rocksdb::Slice& s) { return absl::string_view(s.data(), s.size()); }

int64_t NowUs() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

absl::Status FromRocks(const rocksdb::Status& s, const std::string& what) {
  if (s.ok()) return absl::OkStatus();
  const std::string msg = absl::StrCat(what, ": ", s.ToString());
  if (s.IsCorruption()) return absl::DataLossError(msg);
  if (s.IsNoSpace()) return absl::ResourceExhaustedError(absl::StrCat("spool full (disk full): ", msg));
  if (s.IsIOError()) return absl::UnavailableError(msg);
  return absl::InternalError(msg);
}

bool Matches(const DeadLetterFilter& filter, uint64_t id, const std::string& lane) {
  if (!filter.lane.empty() && filter.lane != lane) return false;
  if (filter.ids.empty()) return true;
  for (uint64_t want : filter.ids) {
    if (want == id) return true;
  }
  return false;
}

class RocksDbSpool final : public Spool {
 public:
  // `reserve_bytes`: free space RocksDB must always keep (SpaceGuard).
  RocksDbSpool(std::unique_ptr<SpoolClaim> claim, std::unique_ptr<rocksdb::DB> db,
               std::vector<rocksdb::ColumnFamilyHandle*> handles, const SpoolOptions& options, uint64_t reserve_bytes,
               uint64_t drained_flush_bytes, std::map<std::string, LaneStats> lanes,
               std::map<std::string, std::string> destinations, DeadLetterMeta dead)
      : claim_(std::move(claim)),
        db_(std::move(db)),
        default_cf_(handles[0]),
        dead_cf_(handles[1]),
        options_(options),
        guard_(options.path, options.min_free_bytes, reserve_bytes, options.free_bytes_probe),
        drained_flush_bytes_(drained_flush_bytes),
        lanes_(std::move(lanes)),
        destinations_(std::move(destinations)),
        dead_(dead) {
    writer_ = std::thread([this] {
      pthread_setname_np(pthread_self(), "zb-spool-write");
      WriterLoop();
    });
    reader_ = std::thread([this] {
      pthread_setname_np(pthread_self(), "zb-spool-read");
      ReaderLoop();
    });
    tidy_ = std::thread([this] {
      pthread_setname_np(pthread_self(), "zb-spool-tidy");
      TidyLoop();
    });
    RequestTidy();  // a spool that stopped before its drained compaction gives its disk back now
  }

  ~RocksDbSpool() override {
    {
      std::lock_guard<std::mutex> lock(tidy_mu_);
      tidy_stopping_ = true;
    }
    tidy_cv_.notify_all();
    db_->DisableManualCompaction();  // a compaction under way ends now
    tidy_.join();
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
    // A clean stop leaves nothing to replay: the next start is quick. Not
    // when the flush would not fit in the reserve, nor after RocksDB met a
    // failed write (a WAL sync then may abort it): the WAL replays instead.
    if (latched_error_.ok() && (!guard_.enabled() || guard_.FreeBytes() >= guard_.reserve_bytes())) {
      rocksdb::FlushOptions flush;
      flush.wait = true;
      db_->Flush(flush, {default_cf_, dead_cf_});
      db_->SyncWAL();
    }
    MaybeWriteWatermark(/*force=*/true);
    db_->DestroyColumnFamilyHandle(dead_cf_);
    db_->DestroyColumnFamilyHandle(default_cf_);
    db_->Close();
  }

  void AppendAsync(const std::string& lane, Records records, AppendCallback done) override {
    Op op;
    op.kind = Op::kAppend;
    op.lane = lane;
    op.records = std::move(records);
    op.append_done = std::move(done);
    Enqueue(std::move(op));
  }

  void AppendWhenRoomAsync(const std::string& lane, Records records, AppendCallback done) override {
    Op op;
    op.kind = Op::kAppend;
    op.lane = lane;
    op.records = std::move(records);
    op.append_done = std::move(done);
    op.wait_for_room = true;
    Enqueue(std::move(op));
  }

  void AbortWaitingAppends(const std::string& reason) override {
    Op op;
    op.kind = Op::kAbortWaiting;
    op.destination = reason;
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

  void SetLaneDestinationAsync(const std::string& lane, std::string destination, DeleteCallback done) override {
    Op op;
    op.kind = Op::kDestination;
    op.lane = lane;
    op.destination = std::move(destination);
    op.delete_done = std::move(done);
    Enqueue(std::move(op));
  }

  std::string LaneDestination(const std::string& lane) override {
    absl::MutexLock lock(&stats_mu_);
    auto it = destinations_.find(lane);
    return it == destinations_.end() ? "" : it->second;
  }

  void MoveToDeadLettersAsync(const std::string& lane, SeqNo seq, DeadLetterInfo info, DeleteCallback done) override {
    Op op;
    op.kind = Op::kDeadLetter;
    op.lane = lane;
    op.up_to = seq;
    op.info = std::move(info);
    op.delete_done = std::move(done);
    Enqueue(std::move(op));
  }

  void ReplayDeadLettersAsync(const DeadLetterFilter& filter, ReplayCallback done) override {
    Op op;
    op.kind = Op::kReplay;
    op.filter = filter;
    op.replay_done = std::move(done);
    Enqueue(std::move(op));
  }

  void PurgeDeadLettersAsync(const DeadLetterFilter& filter, CountCallback done) override {
    Op op;
    op.kind = Op::kPurge;
    op.filter = filter;
    op.count_done = std::move(done);
    Enqueue(std::move(op));
  }

  using Spool::ReadFrom;
  absl::StatusOr<std::vector<SpoolRecord>> ReadFrom(const std::string& lane, SeqNo from, size_t max_records,
                                                    size_t max_bytes, size_t per_record_bytes) override {
    std::vector<SpoolRecord> out;
    const std::string upper = absl::StrCat("L", lane, std::string(1, '\1'));
    rocksdb::Slice upper_slice(upper);
    rocksdb::ReadOptions ro;
    ro.iterate_upper_bound = &upper_slice;
    ro.verify_checksums = true;
    size_t bytes = 0;
    {
      std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, default_cf_));
      for (it->Seek(RecordKey(lane, from)); it->Valid() && out.size() < max_records; it->Next()) {
        const rocksdb::Slice value = it->value();
        const size_t payload_size = EnvelopePayloadSize(value.size());
        const size_t counted = payload_size + per_record_bytes;
        if (!out.empty() && bytes + counted > max_bytes) break;
        SpoolRecord rec;
        rec.seq = SeqFromKey(View(it->key()));
        ZB_RETURN_IF_ERROR(
            DecodeEnvelope(View(value), absl::StrCat("lane ", lane, " seq ", rec.seq), &rec.append_time_us, &rec.payload));
        bytes += counted;
        out.push_back(std::move(rec));
      }
      if (!it->status().ok()) return FromRocks(it->status(), absl::StrCat("spool read lane ", lane));
    }
    return out;
  }

  void ReadFromAsync(const std::string& lane, SeqNo from, size_t max_records, size_t max_bytes,
                     size_t per_record_bytes, ReadCallback done) override {
    RunOnReader([this, lane, from, max_records, max_bytes, per_record_bytes,
                 done = std::move(done)](bool cancelled) {
      if (cancelled) {
        done(absl::CancelledError("spool closed"));
        return;
      }
      done(ReadFrom(lane, from, max_records, max_bytes, per_record_bytes));
    });
  }

  void ListDeadLettersAsync(const DeadLetterFilter& filter, uint64_t from_id, size_t limit,
                            DeadLettersCallback done) override {
    RunOnReader([this, filter, from_id, limit, done = std::move(done)](bool cancelled) {
      if (cancelled) {
        done(absl::CancelledError("spool closed"));
        return;
      }
      done(ListDeadLetters(filter, from_id, limit));
    });
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
    return TotalBytesLocked();
  }

  DeadLetterStats DeadLetterTotals() override {
    absl::MutexLock lock(&stats_mu_);
    return DeadLetterStats{dead_.records, dead_.bytes};
  }

  bool full() override { return full_.load(); }

  SpoolWriterTimes WriterTimes() override {
    const auto seconds = [](const std::atomic<uint64_t>& ns) { return static_cast<double>(ns.load()) / 1e9; };
    SpoolWriterTimes t;
    t.idle = seconds(times_.idle);
    t.logging = seconds(times_.logging);
    t.syncing = seconds(times_.syncing);
    t.memtable = seconds(times_.memtable);
    t.stalled = seconds(times_.stalled);
    t.answering = seconds(times_.answering);
    const double alive = std::chrono::duration<double>(std::chrono::steady_clock::now() - opened_).count();
    t.building = std::max(0.0, alive - t.idle - t.logging - t.syncing - t.memtable - t.stalled - t.answering);
    t.commits = times_.commits.load();
    return t;
  }

 private:
  // Writer thread. Records what the spool now holds durably, at most every
  // kWatermarkInterval (or now, when `force`), replacing the file atomically.
  void MaybeWriteWatermark(bool force) {
    const auto now = std::chrono::steady_clock::now();
    if (!force && (!watermark_dirty_ || now - watermark_written_ < kWatermarkInterval)) return;
    ::zerobusd::spool::Watermark mark;
    {
      absl::MutexLock lock(&stats_mu_);
      for (const auto& [name, st] : lanes_) (*mark.mutable_lane_next_seq())[name] = st.next_seq;
      mark.set_dead_letter_next_id(dead_.next_id);
    }
    mark.set_written_us(NowUs());
    // Name only what is on disk (and never sync a WAL after a failed write).
    if (!options_.sync && (!latched_error_.ok() || !db_->SyncWAL().ok())) return;
    const std::string final_path = WatermarkPath(options_.path);
    const std::string tmp = final_path + ".tmp";
    const std::string bytes = mark.SerializeAsString();
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, kSpoolFileMode);
    if (fd < 0) return;
    const bool written = ::fchmod(fd, kSpoolFileMode) == 0 &&  // a leftover tmp keeps its mode
                         ::write(fd, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size()) &&
                         ::fsync(fd) == 0;
    ::close(fd);
    if (!written || ::rename(tmp.c_str(), final_path.c_str()) != 0) return;
    const int dir = ::open(options_.path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir >= 0) {
      ::fsync(dir);
      ::close(dir);
    }
    watermark_written_ = now;
    watermark_dirty_ = false;
  }

  struct Op {
    enum Kind { kAppend, kDelete, kDestination, kDeadLetter, kReplay, kPurge, kAbortWaiting } kind = kAppend;
    bool wait_for_room = false;  // a full spool parks it (in order) instead of refusing it
    bool parked = false;         // set by the commit that parked it
    bool was_parked = false;     // it waited for room, and is tried again
    bool held = false;           // a delete the commit held for lack of space
    std::string lane;
    Records records;
    std::string destination;
    SeqNo up_to = 0;
    DeadLetterInfo info;
    DeadLetterFilter filter;
    AppendCallback append_done;
    DeleteCallback delete_done;
    ReplayCallback replay_done;
    CountCallback count_done;
    // Outcome, filled by the commit.
    absl::Status status;
    AppendResult result;
  };

  uint64_t TotalBytesLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(stats_mu_) {
    uint64_t total = dead_.bytes;
    for (const auto& [_, s] : lanes_) total += s.bytes;
    return total;
  }

  void Enqueue(Op op) {
    {
      std::lock_guard<std::mutex> lock(queue_mu_);
      queue_.push_back(std::move(op));
    }
    queue_cv_.notify_one();
  }

  // ---------------------------------------------------------------- reader

  // `task(cancelled)` runs on the reader thread, in order; at destruction
  // the tasks still queued run with cancelled = true.
  void RunOnReader(std::function<void(bool cancelled)> task) {
    {
      std::lock_guard<std::mutex> lock(read_mu_);
      reads_.push_back(std::move(task));
    }
    read_cv_.notify_one();
  }

  void ReaderLoop() {
    while (true) {
      std::function<void(bool)> task;
      {
        std::unique_lock<std::mutex> lock(read_mu_);
        read_cv_.wait(lock, [this] { return read_stopping_ || !reads_.empty(); });
        if (read_stopping_) break;
        task = std::move(reads_.front());
        reads_.pop_front();
      }
      task(false);
    }
    std::deque<std::function<void(bool)>> cancelled;
    {
      std::lock_guard<std::mutex> lock(read_mu_);
      cancelled.swap(reads_);
    }
    for (auto& task : cancelled) task(true);
  }

  absl::StatusOr<std::vector<DeadLetter>> ListDeadLetters(const DeadLetterFilter& filter, uint64_t from_id,
                                                          size_t limit) {
    std::vector<DeadLetter> out;
    const std::string upper = "F";
    rocksdb::Slice upper_slice(upper);
    rocksdb::ReadOptions ro;
    ro.iterate_upper_bound = &upper_slice;
    ro.verify_checksums = true;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, dead_cf_));
    for (it->Seek(DeadLetterKey(from_id)); it->Valid() && out.size() < limit; it->Next()) {
      const uint64_t id = SeqFromKey(View(it->key()));
      ::zerobusd::spool::DeadLetter entry;
      if (!entry.ParseFromArray(it->value().data(), static_cast<int>(it->value().size()))) {
        return absl::DataLossError(absl::StrCat("spool dead-letter store: entry ", id, " does not parse"));
      }
      if (!Matches(filter, id, entry.lane())) continue;
      DeadLetter d;
      d.id = id;
      d.lane = entry.lane();
      d.seq = entry.seq();
      d.info.table = entry.table();
      d.info.code = entry.code();
      d.info.message = entry.message();
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

  // ---------------------------------------------------------------- writer

  // Writer thread: takes queued appends and deletes (up to max_group_bytes
  // of appends) and commits them as one WriteBatch with one fsync, then runs
  // their callbacks. Other operations commit on their own. Every write is
  // checked by the space guard first (GuardedWrite).
  void WriterLoop() {
    // RocksDB's per-thread timers tell where a write's time goes (log,
    // fsync, memtable, stalls): WriterTimes().
    rocksdb::SetPerfLevel(rocksdb::PerfLevel::kEnableTimeExceptForMutex);
    while (true) {
      std::vector<Op> group;
      {
        const PhaseTimer idle(&times_.idle);
        std::unique_lock<std::mutex> lock(queue_mu_);
        if (waiting_.empty() && held_deletes_.empty() && !full_.load()) {
          queue_cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
        } else {
          // Appends wait for room, deletes for space, and a full spool watches
          // for room: look again now and then even when nothing comes (space
          // may be freed by someone else).
          queue_cv_.wait_for(lock, kRoomPoll, [this] { return stopping_ || !queue_.empty(); });
        }
        if (queue_.empty() && stopping_) break;
        size_t bytes = 0;
        while (!queue_.empty() && (group.empty() || bytes < options_.max_group_bytes)) {
          const bool single = queue_.front().kind != Op::kAppend && queue_.front().kind != Op::kDelete;
          if (single && !group.empty()) break;
          if (queue_.front().records) {
            for (const auto& r : *queue_.front().records) bytes += r.size();
          }
          group.push_back(std::move(queue_.front()));
          queue_.pop_front();
          if (single) break;
        }
      }
      RetryParked();
      if (group.empty()) {
        WatchForRoom();
        continue;
      }
      switch (group.front().kind) {
        case Op::kDestination: SetDestination(group.front()); break;
        case Op::kDeadLetter: MoveToDeadLetters(group.front()); break;
        case Op::kReplay: Replay(group.front()); break;
        case Op::kPurge: Purge(group.front()); break;
        case Op::kAbortWaiting: FailWaiting(absl::UnavailableError(group.front().destination)); break;
        default: CommitGroup(group);
      }
      if (group.front().kind != Op::kAppend && group.front().kind != Op::kDelete) MaybeLeaveFull(false);
    }
    RetryParked();  // a last chance for held deletes
    FailWaiting(absl::UnavailableError("the spool closed while the records waited for room"));
    FailHeldDeletes(absl::UnavailableError("the spool closed before there was room for the delete"));
  }

  // Appends parked for room, in arrival order, and held deletes: try them
  // again (the deletes first: they free space).
  void RetryParked() {
    if (waiting_.empty() && held_deletes_.empty()) return;
    std::vector<Op> retry;
    for (auto& [lane, held] : held_deletes_) {
      Op op;
      op.kind = Op::kDelete;
      op.lane = lane;
      op.up_to = held.up_to;
      op.delete_done = std::move(held.done);
      retry.push_back(std::move(op));
    }
    held_deletes_.clear();
    for (auto& op : waiting_) {
      op.parked = false;
      op.was_parked = true;
      retry.push_back(std::move(op));
    }
    waiting_.clear();
    CommitGroup(retry);  // what still does not fit parks (or is held) again, in order
  }

  void FailWaiting(const absl::Status& why) {
    std::deque<Op> waiting;
    waiting.swap(waiting_);
    for (auto& op : waiting) {
      if (op.append_done) op.append_done(why);
    }
  }

  // Keeps a delete that found no room, to commit it by itself once there is:
  // one per lane, the one that reaches further, so they take no memory
  // beyond the lanes. The other one is covered by it and answered now.
  void HoldDelete(Op& op) {
    auto [it, fresh] = held_deletes_.try_emplace(op.lane);
    HeldDelete& held = it->second;
    if (fresh) {
      held.up_to = op.up_to;
      held.done = std::move(op.delete_done);
      return;
    }
    DeleteCallback covered;
    if (op.up_to > held.up_to) {
      covered = std::move(held.done);
      held.up_to = op.up_to;
      held.done = std::move(op.delete_done);
    } else {
      covered = std::move(op.delete_done);
    }
    if (covered) covered(absl::OkStatus());
  }

  void FailHeldDeletes(const absl::Status& why) {
    std::map<std::string, HeldDelete> held;
    held.swap(held_deletes_);
    for (auto& [_, h] : held) {
      if (h.done) h.done(why);
    }
  }

  // ------------------------------------------------------------ full state

  // Writer thread. A write refused for room (`why`) makes the spool full:
  // the first refusal logs one line; later ones only widen what must come
  // back before it is not full again (`need`: payload bytes for max_bytes,
  // free bytes for the disk).
  void NoteRefusal(const absl::Status& why, bool disk, uint64_t need) {
    if (!full_.load()) {
      full_state_ = FullState{};
      full_state_.since = std::chrono::steady_clock::now();
      full_ = true;
      std::string reason(why.message());
      for (const char* prefix : {"spool full (disk full): ", "spool full: "}) {
        if (absl::StartsWith(reason, prefix)) reason.erase(0, std::strlen(prefix));
      }
      spdlog::warn("spool {} is full: {}. Records that do not fit wait (when_full: block) or are refused until there "
                   "is room",
                   options_.path, reason);
    }
    full_state_.left = false;
    full_state_.fit = false;
    if (disk) {
      full_state_.by_disk = true;
      full_state_.disk_need = std::max(full_state_.disk_need, need);
      RequestFlushForSpace();
    } else {
      full_state_.by_cap = true;
      full_state_.cap_need = std::max(full_state_.cap_need, need);
    }
  }

  // Writer thread. The spool stops being full once nothing waits for room
  // (appends, deletes) and since the last refusal either what waited went
  // in (`parked_went_in`), or an append as large as the largest one refused
  // went in, or records left and the largest write refused would fit now.
  // (Space RocksDB gives back by itself, e.g. a flush, does not count: the
  // state does not flap while producers are refused.) Logs one line.
  void MaybeLeaveFull(bool parked_went_in) {
    if (!full_.load() || !waiting_.empty() || !held_deletes_.empty() || !latched_error_.ok()) return;
    if (!parked_went_in && !full_state_.fit) {
      if (!full_state_.left) return;
      if (full_state_.by_cap && options_.max_bytes > 0 && !options_.drop_oldest &&
          TotalBytes() + full_state_.cap_need > options_.max_bytes) {
        return;
      }
      if (full_state_.by_disk && guard_.FreeBytes() < full_state_.disk_need) return;
    }
    full_ = false;
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - full_state_.since).count();
    spdlog::info("spool {} has room again after {:.1f} s: records are taken again", options_.path, seconds);
  }

  // Writer thread, when nothing else happened for a while.
  void WatchForRoom() {
    if (!full_.load()) return;
    if (full_state_.by_disk) RequestFlushForSpace();
    MaybeLeaveFull(false);
  }

  // Acked records leave the disk only when their memtable is flushed
  // (dropping them) and its WAL deleted: ask for that (at most every
  // second), so space comes back as the drain catches up. Only while the
  // flush itself fits in the reserve.
  void RequestFlushForSpace() {
    const auto now = std::chrono::steady_clock::now();
    if (!latched_error_.ok() || now - last_flush_request_ < std::chrono::seconds(1)) return;
    if (guard_.enabled() && guard_.FreeBytes() < guard_.reserve_bytes()) return;
    last_flush_request_ = now;
    rocksdb::FlushOptions flush;
    flush.wait = false;
    flush.allow_write_stall = true;
    db_->Flush(flush, default_cf_);
  }

  // Writer thread, when a delete left every lane empty. Acked records leave
  // by range deletes, but their bytes stay in the memtable until it fills
  // (the default 64 MiB write buffer is 75-88 MiB of memory when it
  // flushes, and the next one fills while it does), so what a drained
  // daemon held depended on where the load left RocksDB's flush cycle: in
  // bench/route_soak.sh (200 routes, issue 8) malloc's use after a drain
  // swung between 67 and 127 MiB with it. A memtable of drained_flush_bytes_
  // or more is flushed now instead: the flush drops every record the range
  // deletes cover and writes a table of a few KiB (lane metas, tombstones),
  // and the memtable's memory goes back (daemon/main.cc); use after a drain
  // then stays at 65-75 MiB. At most one such flush per 8 MiB appended, in
  // the background, and only while it fits in the reserve.
  void MaybeFlushDrained() {
    uint64_t active = 0;
    if (!latched_error_.ok() ||
        !db_->GetIntProperty(default_cf_, rocksdb::DB::Properties::kCurSizeActiveMemTable, &active) ||
        active < drained_flush_bytes_) {
      return;
    }
    if (guard_.enabled() && guard_.FreeBytes() < guard_.reserve_bytes()) return;
    rocksdb::FlushOptions flush;
    flush.wait = false;
    flush.allow_write_stall = true;
    db_->Flush(flush, default_cf_);
  }

  // ------------------------------------------------------------------ tidy

  // Any thread. Asks the tidy thread to look for deleted records' disk.
  void RequestTidy() {
    {
      std::lock_guard<std::mutex> lock(tidy_mu_);
      tidy_requested_ = true;
    }
    tidy_cv_.notify_one();
  }

  // Tidy thread. A range delete only hides records: their bytes stay in
  // the table files (and the write-ahead log) until a flush or compaction
  // rewrites them, which RocksDB does only as later writes push it to, so a
  // drained backlog kept hundreds of MB for minutes. This gives them back,
  // at most every kTidyInterval:
  //  - a lane whose deleted records hold more than kTidyDeletedBytes of
  //    table files has that range compacted while the rest still drains;
  //  - a drained spool (no records in any lane) holding more than
  //    kTidyDrainedBytes of table files is flushed and compacted whole,
  //    which drops every deleted record: it comes back to a few KiB.
  // Compaction reads what it drops and writes only what still lives, and
  // runs only while the reserve is free (SpaceGuard).
  void TidyLoop() {
    std::unique_lock<std::mutex> lock(tidy_mu_);
    while (true) {
      tidy_cv_.wait(lock, [this] { return tidy_stopping_ || tidy_requested_; });
      if (tidy_stopping_) return;
      tidy_requested_ = false;
      lock.unlock();
      Tidy();
      lock.lock();
      // At most every kTidyInterval: requests in between are merged.
      tidy_cv_.wait_for(lock, kTidyInterval, [this] { return tidy_stopping_; });
      if (tidy_stopping_) return;
    }
  }

  void Tidy() {
    if (guard_.enabled() && guard_.FreeBytes() < guard_.reserve_bytes()) return;
    std::map<std::string, LaneStats> lanes;
    {
      absl::MutexLock lock(&stats_mu_);
      lanes = lanes_;
    }
    const bool drained =
        std::all_of(lanes.begin(), lanes.end(), [](const auto& lane) { return lane.second.records == 0; });
    rocksdb::CompactRangeOptions compact;
    compact.exclusive_manual_compaction = false;  // RocksDB's own compactions go on
    compact.bottommost_level_compaction = rocksdb::BottommostLevelCompaction::kForceOptimized;
    uint64_t files = 0;
    if (drained) {
      if (!db_->GetIntProperty(default_cf_, rocksdb::DB::Properties::kLiveSstFilesSize, &files) ||
          files <= kTidyDrainedBytes) {
        return;
      }
      rocksdb::FlushOptions flush;
      flush.allow_write_stall = true;
      if (!db_->Flush(flush, {default_cf_, dead_cf_}).ok()) return;
      rocksdb::Status s = db_->CompactRange(compact, default_cf_, nullptr, nullptr);
      uint64_t after = 0;
      db_->GetIntProperty(default_cf_, rocksdb::DB::Properties::kLiveSstFilesSize, &after);
      if (s.ok()) {
        spdlog::info("spool {} drained: its table files went from {} to {} bytes", options_.path, files, after);
      } else if (!s.IsIncomplete()) {  // Incomplete: stopped for shutdown
        spdlog::warn("spool {}: compacting the drained spool failed: {}", options_.path, s.ToString());
      }
      return;
    }
    for (const auto& [name, lane] : lanes) {
      if (lane.deleted_up_to == 0) continue;
      const std::string begin = RecordKey(name, 0);
      const std::string end = RecordKey(name, lane.deleted_up_to + 1);
      rocksdb::Range range(begin, end);
      uint64_t deleted_bytes = 0;
      if (!db_->GetApproximateSizes(rocksdb::SizeApproximationOptions{}, default_cf_, &range, 1, &deleted_bytes)
               .ok() ||
          deleted_bytes <= kTidyDeletedBytes) {
        continue;
      }
      const rocksdb::Slice b(begin), e(end);
      rocksdb::Status s = db_->CompactRange(compact, default_cf_, &b, &e);
      if (!s.ok() && !s.IsIncomplete()) {
        spdlog::warn("spool {}: compacting the deleted records of lane {} failed: {}", options_.path, name,
                     s.ToString());
      }
    }
  }

  // ----------------------------------------------------------------- writes

  // Writer thread. Every RocksDB write goes through here: the space guard
  // reads the free space and refuses a batch that would not leave what
  // `kind` must leave, so RocksDB never meets a full disk.
  absl::Status GuardedWrite(rocksdb::WriteBatch* batch, SpaceGuard::Write kind, bool sync) {
    if (guard_.enabled()) {
      const uint64_t bytes = batch->GetDataSize();
      absl::Status room = guard_.Check(kind, guard_.FreeBytes(), bytes);
      if (!room.ok()) {
        NoteRefusal(room, /*disk=*/true, guard_.Need(kind, bytes));
        return room;
      }
    }
    rocksdb::WriteOptions wo;
    wo.sync = sync;
    rocksdb::get_perf_context()->Reset();
    rocksdb::get_iostats_context()->Reset();
    absl::Status s = FromRocks(db_->Write(wo, batch), "spool write");
    {
      const rocksdb::PerfContext& perf = *rocksdb::get_perf_context();
      const uint64_t fsync = rocksdb::get_iostats_context()->fsync_nanos;
      times_.syncing += fsync;
      times_.logging += perf.write_wal_time > fsync ? perf.write_wal_time - fsync : 0;
      times_.memtable += perf.write_memtable_time;
      times_.stalled += perf.write_delay_time + perf.write_thread_wait_nanos;
      times_.commits += 1;
    }
    if (!s.ok()) {
      // RocksDB stops accepting writes after a failed write or sync.
      latched_error_ = s;
      if (absl::IsResourceExhausted(s)) NoteRefusal(s, /*disk=*/true, guard_.Need(SpaceGuard::Write::kGrow, 0));
    }
    return s;
  }

  // After ENOSPC RocksDB stops writing until Resume(); try that once space
  // is back above the guard (at most every second).
  absl::Status RecoverFromLatchedError() {
    if (latched_error_.ok()) return absl::OkStatus();
    if (!absl::IsResourceExhausted(latched_error_)) return latched_error_;
    const auto now = std::chrono::steady_clock::now();
    if (now - last_resume_ < std::chrono::seconds(1)) return latched_error_;
    last_resume_ = now;
    if (guard_.FreeBytes() < std::max<uint64_t>(options_.min_free_bytes, 1u << 20)) return latched_error_;
    rocksdb::Status s = db_->Resume();
    if (!s.ok()) return latched_error_;
    latched_error_ = absl::OkStatus();
    return absl::OkStatus();
  }

  // Decides whether `bytes` more may be appended under max_bytes, given the
  // totals of this group so far; under drop_oldest it makes room by
  // deleting the oldest records into `batch`.
  absl::Status MakeRoom(uint64_t bytes, uint64_t* total, std::map<std::string, LaneStats>* touched,
                        rocksdb::WriteBatch* batch, std::map<std::string, std::pair<uint64_t, uint64_t>>* drops,
                        std::set<std::string>* changed) {
    if (options_.max_bytes == 0 || *total + bytes <= options_.max_bytes) return absl::OkStatus();
    if (!options_.drop_oldest || bytes > options_.max_bytes) {
      return absl::ResourceExhaustedError(absl::StrCat("spool full: ", *total, " of spool.max_bytes (",
                                                       options_.max_bytes, ") in use, ", bytes, " more asked"));
    }
    while (*total + bytes > options_.max_bytes) {
      // The lane whose oldest committed record is oldest loses records first.
      std::string victim;
      int64_t victim_time = 0;
      for (auto& [name, stats] : *touched) {
        SeqNo committed_end = 0;
        {
          absl::MutexLock lock(&stats_mu_);
          auto it = lanes_.find(name);
          committed_end = it == lanes_.end() ? 0 : it->second.next_seq;
        }
        if (stats.deleted_up_to + 1 >= committed_end) continue;  // nothing committed left to drop
        auto head = ReadFrom(name, stats.deleted_up_to + 1, 1, 1);
        if (!head.ok() || head->empty() || head->front().seq >= committed_end) continue;
        if (victim.empty() || head->front().append_time_us < victim_time) {
          victim = name;
          victim_time = head->front().append_time_us;
        }
      }
      if (victim.empty()) {
        // Aborted: the caller may commit what it has and ask again.
        if (*total > 0) return absl::AbortedError("room needs records of this very batch");
        return absl::ResourceExhaustedError(absl::StrCat("spool full: ", *total, " of spool.max_bytes (",
                                                         options_.max_bytes, ") in use and nothing left to drop"));
      }
      LaneStats& lane = (*touched)[victim];
      changed->insert(victim);
      const uint64_t need = *total + bytes - options_.max_bytes;
      uint64_t freed = 0, records = 0;
      SeqNo last = lane.deleted_up_to;
      {
        const std::string upper = RecordKey(victim, lane.next_seq);
        rocksdb::Slice upper_slice(upper);
        rocksdb::ReadOptions ro;
        ro.iterate_upper_bound = &upper_slice;
        std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, default_cf_));
        for (it->Seek(RecordKey(victim, lane.deleted_up_to + 1)); it->Valid() && freed < need; it->Next()) {
          freed += it->value().size() - kEnvelopeHeader;
          ++records;
          last = SeqFromKey(View(it->key()));
        }
        if (!it->status().ok()) return FromRocks(it->status(), "spool drop scan");
      }
      if (records == 0) return absl::ResourceExhaustedError("spool full: nothing left to drop");
      batch->DeleteRange(default_cf_, KeyAfterRecord(victim, lane.deleted_up_to), RecordKey(victim, last + 1));
      lane.records -= std::min(lane.records, records);
      lane.bytes -= std::min(lane.bytes, freed);
      lane.deleted_up_to = last;
      *total -= std::min(*total, freed);
      (*drops)[victim].first += records;
      (*drops)[victim].second += freed;
    }
    return absl::OkStatus();
  }

  void CommitGroup(std::vector<Op>& group) {
    // drop_oldest may need records that this group appended before being
    // committed; then the group commits in parts.
    size_t start = 0;
    while (start < group.size()) start = CommitPart(group, start);
  }

  // About what the WriteBatch of ops [start, ...) of `group` will hold, so
  // that it is allocated once: grown by doubling, a 16 MiB group commit
  // allocates 1, 2, ... 32 MiB in turn, copying and faulting in about twice
  // its size, each buffer of 1 MiB or more a mapping of its own
  // (daemon/main.cc). Reserved, the daemon faults in 137k pages instead of
  // 215k per million records (bench/route_soak.sh), and spends 9 % less CPU.
  // Appends count as the space guard counts them. At most twice
  // max_group_bytes (appends that waited for room retry all at once).
  size_t BatchBytesBound(const std::vector<Op>& group, size_t start) const {
    const size_t cap = 2 * options_.max_group_bytes;
    size_t bytes = 64;
    for (size_t i = start; i < group.size() && bytes < cap; ++i) {
      const Op& op = group[i];
      bytes += MetaBytes(op.lane) + DeleteBytes(op.lane);
      if (op.records == nullptr) continue;
      for (const auto& rec : *op.records) bytes += rec.size() + op.lane.size() + kEnvelopeHeader + 32;
    }
    return std::min(bytes, cap);
  }

  // Commits ops [start, end) of `group` in one WriteBatch, answers them and
  // returns `end`. The space guard decides per op on one look at the free
  // space (appends must leave min_free_bytes, deletes the reserve), then
  // again on the whole batch in GuardedWrite.
  size_t CommitPart(std::vector<Op>& group, size_t start) {
    std::map<std::string, LaneStats> touched;
    uint64_t total = 0;
    {
      absl::MutexLock lock(&stats_mu_);
      for (const auto& [name, stats] : lanes_) touched[name] = stats;
      total = TotalBytesLocked();
    }
    for (size_t i = start; i < group.size(); ++i) touched.try_emplace(group[i].lane);
    const absl::Status latched = RecoverFromLatchedError();
    // RocksDB met a full disk (filled between the guard's look and a
    // write): it takes nothing until Resume, and what may wait, waits.
    const bool latched_full = absl::IsResourceExhausted(latched);
    absl::Status write_status = latched_full ? absl::OkStatus() : latched;
    const uint64_t free = guard_.enabled() ? guard_.FreeBytes() : 0;
    // The writer's one batch, kept between commits: a fresh multi-MiB
    // buffer per commit is a fresh mapping whose pages fault in each time.
    const size_t bound = BatchBytesBound(group, start);
    if (bound > batch_capacity_) {
      batch_ = rocksdb::WriteBatch(bound);
      batch_capacity_ = bound;
    } else {
      batch_.Clear();
    }
    rocksdb::WriteBatch& batch = batch_;
    std::map<std::string, std::pair<uint64_t, uint64_t>> drops;
    std::set<std::string> changed;  // lanes whose meta this commit rewrites
    // Bytes the batch will hold with `more` bytes of `lane` added (its metas
    // included), as the guard counts them.
    auto planned = [&](const std::string& lane, uint64_t more) {
      uint64_t metas = changed.count(lane) > 0 ? 0 : MetaBytes(lane);
      for (const auto& name : changed) metas += MetaBytes(name);
      return batch.GetDataSize() + metas + more;
    };
    bool any_append = false;
    bool freed_any = false;
    bool fit = false;  // an append as large as the largest one refused while full
    bool refused = false;
    bool parked_went_in = false;
    bool parking = false;  // an append of this part parked: later waiting appends park behind it
    const int64_t now = NowUs();
    size_t end = start;
    for (; end < group.size(); ++end) {
      Op& op = group[end];
      if (!write_status.ok()) break;
      LaneStats& lane = touched[op.lane];
      if (op.kind == Op::kDelete) {
        if (op.up_to > lane.deleted_up_to) {
          const uint64_t planned_bytes = planned(op.lane, DeleteBytes(op.lane));
          absl::Status room = latched_full ? latched : guard_.Check(SpaceGuard::Write::kKeep, free, planned_bytes);
          if (!room.ok()) {
            op.held = true;  // committed by itself once it fits
            fit = false;     // what went in before does not answer this
            NoteRefusal(room, /*disk=*/true, guard_.Need(SpaceGuard::Write::kKeep, planned_bytes));
            continue;
          }
        }
        const uint64_t before = total;
        op.status = AddDelete(op.lane, op.up_to, &lane, &batch, &total);
        if (op.status.ok()) changed.insert(op.lane);
        if (total < before) freed_any = true;
        continue;
      }
      if (op.records == nullptr || op.records->empty()) continue;
      if (op.wait_for_room && (parking || !waiting_.empty())) {
        op.parked = true;  // behind appends that already wait: order is kept
        continue;
      }
      uint64_t bytes = 0;  // payload
      for (const auto& rec : *op.records) bytes += rec.size();
      // Each record adds its key, envelope and WriteBatch framing.
      const uint64_t planned_bytes =
          planned(op.lane, bytes + op.records->size() * (op.lane.size() + kEnvelopeHeader + 32));
      op.status = latched_full ? latched : guard_.Check(SpaceGuard::Write::kGrow, free, planned_bytes);
      const bool disk_refusal = !op.status.ok();
      if (op.status.ok()) op.status = MakeRoom(bytes, &total, &touched, &batch, &drops, &changed);
      if (absl::IsAborted(op.status)) {
        if (any_append) {
          op.status = absl::OkStatus();
          break;  // room must come from this batch's own appends: commit it first
        }
        op.status = absl::ResourceExhaustedError(absl::StrCat("spool full: ", total, " of spool.max_bytes (",
                                                              options_.max_bytes, ") in use and nothing left to drop"));
      }
      if (!op.status.ok()) {
        refused = true;
        fit = false;
        if (absl::IsResourceExhausted(op.status)) {
          if (disk_refusal) {
            NoteRefusal(op.status, /*disk=*/true, guard_.Need(SpaceGuard::Write::kGrow, planned_bytes));
          } else {
            // A record larger than the cap never fits: it asks for nothing.
            NoteRefusal(op.status, /*disk=*/false, options_.drop_oldest || bytes > options_.max_bytes ? 0 : bytes);
          }
          if (op.wait_for_room) {
            op.parked = true;
            parking = true;
          }
        }
        continue;
      }
      LaneStats& l = touched[op.lane];
      changed.insert(op.lane);
      any_append = true;
      if (op.was_parked) parked_went_in = true;
      if (full_.load() && bytes >= full_state_.cap_need &&
          guard_.Need(SpaceGuard::Write::kGrow, planned_bytes) >= full_state_.disk_need) {
        fit = true;
      }
      op.result.first_seq = l.next_seq;
      std::string key = RecordKey(op.lane, 0);
      char header[kEnvelopeHeader];
      for (const auto& rec : *op.records) {
        SetRecordKeySeq(&key, l.next_seq++);
        EncodeEnvelopeHeader(now, rec, header);
        const rocksdb::Slice key_part(key), value_parts[2] = {rocksdb::Slice(header, kEnvelopeHeader), rec};
        batch.Put(default_cf_, rocksdb::SliceParts(&key_part, 1), rocksdb::SliceParts(value_parts, 2));
        l.records++;
        l.bytes += rec.size();
      }
      op.result.last_seq = l.next_seq - 1;
      total += bytes;
    }
    if (write_status.ok() && batch.Count() > 0) {
      for (const auto& name : changed) batch.Put(default_cf_, MetaKey(name), EncodeLaneMeta(touched[name]));
      // Appends were held to min_free_bytes above; the batch as a whole
      // must leave the reserve.
      write_status = GuardedWrite(&batch, SpaceGuard::Write::kKeep, any_append && options_.sync);
    }
    if (write_status.ok() && freed_any) {
      if (std::all_of(touched.begin(), touched.end(), [](const auto& lane) { return lane.second.records == 0; })) {
        MaybeFlushDrained();
      }
      RequestTidy();
    }
    if (write_status.ok()) {
      absl::MutexLock lock(&stats_mu_);
      for (const auto& name : changed) lanes_[name] = touched[name];
    }
    if (write_status.ok()) {
      if (any_append) watermark_dirty_ = true;
      if (freed_any) full_state_.left = true;
      if (fit) full_state_.fit = true;
      MaybeWriteWatermark(false);
    }
    if (write_status.ok() && options_.on_drop) {
      for (const auto& [lane, d] : drops) options_.on_drop(lane, d.first, d.second);
    }
    const PhaseTimer answering(&times_.answering);
    // Nothing of the batch was stored for lack of room: what may wait, waits.
    const bool no_room = absl::IsResourceExhausted(write_status);
    if (!write_status.ok()) end = group.size();  // every remaining op fails with it
    for (size_t i = start; i < end; ++i) {
      Op& op = group[i];
      if (write_status.ok() ? op.parked : no_room && op.kind == Op::kAppend && op.wait_for_room) {
        op.parked = true;
        waiting_.push_back(std::move(op));  // answered once it fits, or on abort
        continue;
      }
      if (write_status.ok() ? op.held : no_room && op.kind == Op::kDelete) {
        HoldDelete(op);
        continue;
      }
      const absl::Status& s = write_status.ok() ? op.status : write_status;
      if (op.kind == Op::kAppend) {
        if (!op.append_done) continue;
        if (s.ok()) op.append_done(op.result);
        else op.append_done(s);
      } else if (op.delete_done) {
        op.delete_done(s);
      }
    }
    MaybeLeaveFull(parked_went_in && !refused && write_status.ok());
    return end;
  }

  // Adds a range delete of (lane.deleted_up_to, up_to] and updates `lane`'s
  // counters by the records it removes (they were read recently: cache hits).
  absl::Status AddDelete(const std::string& lane_name, SeqNo up_to, LaneStats* lane, rocksdb::WriteBatch* batch,
                         uint64_t* total) {
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
      std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, default_cf_));
      for (it->Seek(begin); it->Valid(); it->Next()) {
        records++;
        bytes += it->value().size() - kEnvelopeHeader;
      }
      if (!it->status().ok()) return FromRocks(it->status(), "spool delete scan");
    }
    batch->DeleteRange(default_cf_, KeyAfterRecord(lane_name, lane->deleted_up_to), end);
    lane->records -= std::min(lane->records, records);
    lane->bytes -= std::min(lane->bytes, bytes);
    lane->deleted_up_to = up_to;
    *total -= std::min(*total, bytes);
    return absl::OkStatus();
  }

  // Commits `batch` (with the given lane and dead-letter metas), if the
  // space guard lets a write of `kind` through, and publishes the new stats.
  absl::Status CommitSingle(rocksdb::WriteBatch* batch, const std::map<std::string, LaneStats>& lanes,
                            const DeadLetterMeta& dead, SpaceGuard::Write kind) {
    for (const auto& [name, s] : lanes) batch->Put(default_cf_, MetaKey(name), EncodeLaneMeta(s));
    batch->Put(dead_cf_, kDeadLetterMetaKey, EncodeDeadLetterMeta(dead));
    const uint64_t total_before = TotalBytes();
    ZB_RETURN_IF_ERROR(GuardedWrite(batch, kind, options_.sync));
    {
      absl::MutexLock lock(&stats_mu_);
      for (const auto& [name, st] : lanes) lanes_[name] = st;
      dead_ = dead;
    }
    if (TotalBytes() < total_before) full_state_.left = true;
    watermark_dirty_ = true;
    MaybeWriteWatermark(false);
    return absl::OkStatus();
  }

  void SetDestination(Op& op) {
    absl::Status status = RecoverFromLatchedError();
    if (status.ok()) {
      // A few bytes that grow nothing: held to the reserve, not to
      // min_free_bytes, so a daemon can start on a disk short of it.
      rocksdb::WriteBatch batch;
      batch.Put(default_cf_, DestinationKey(op.lane), op.destination);
      status = GuardedWrite(&batch, SpaceGuard::Write::kKeep, options_.sync);
      if (status.ok()) {
        absl::MutexLock lock(&stats_mu_);
        destinations_[op.lane] = op.destination;
      }
    }
    if (op.delete_done) op.delete_done(status);
  }

  void MoveToDeadLetters(Op& op) {
    absl::Status status = RecoverFromLatchedError();
    if (status.ok()) status = MoveToDeadLettersLocked(op);
    if (op.delete_done) op.delete_done(status);
  }

  absl::Status MoveToDeadLettersLocked(const Op& op) {
    LaneStats lane;
    DeadLetterMeta dead;
    {
      absl::MutexLock lock(&stats_mu_);
      auto it = lanes_.find(op.lane);
      if (it != lanes_.end()) lane = it->second;
      dead = dead_;
    }
    const SeqNo seq = op.up_to;
    if (seq <= lane.deleted_up_to) {
      return absl::NotFoundError(absl::StrCat("spool lane ", op.lane, ": seq ", seq, " already left the lane"));
    }
    if (seq != lane.deleted_up_to + 1 || seq >= lane.next_seq) {
      return absl::InternalError(absl::StrCat("spool lane ", op.lane, ": seq ", seq,
                                              " is not the oldest record (", lane.deleted_up_to + 1, ")"));
    }
    std::string value;
    rocksdb::Status get = db_->Get(rocksdb::ReadOptions(), default_cf_, RecordKey(op.lane, seq), &value);
    if (!get.ok()) return FromRocks(get, absl::StrCat("spool read lane ", op.lane, " seq ", seq));
    ::zerobusd::spool::DeadLetter entry;
    int64_t append_time = 0;
    std::string payload;
    ZB_RETURN_IF_ERROR(DecodeEnvelope(value, absl::StrCat("lane ", op.lane, " seq ", seq), &append_time, &payload));
    entry.set_lane(op.lane);
    entry.set_seq(seq);
    entry.set_table(op.info.table);
    entry.set_code(op.info.code);
    entry.set_message(op.info.message);
    entry.set_attempts(op.info.attempts);
    entry.set_append_time_us(append_time);
    entry.set_first_failure_us(op.info.first_failure_us);
    entry.set_dead_lettered_us(NowUs());
    entry.set_payload(payload);
    rocksdb::WriteBatch batch;
    batch.Put(dead_cf_, DeadLetterKey(dead.next_id++), entry.SerializeAsString());
    batch.Delete(default_cf_, RecordKey(op.lane, seq));
    dead.records++;
    dead.bytes += payload.size();
    lane.records -= std::min<uint64_t>(lane.records, 1);
    lane.bytes -= std::min<uint64_t>(lane.bytes, payload.size());
    lane.deleted_up_to = seq;
    // The record leaves the lane as it enters the store: no growth.
    return CommitSingle(&batch, {{op.lane, lane}}, dead, SpaceGuard::Write::kKeep);
  }

  void Replay(Op& op) {
    std::map<std::string, AppendResult> appended;
    absl::Status status = RecoverFromLatchedError();
    while (status.ok()) {
      auto entries = ListDeadLetters(op.filter, 0, kDeadLetterChunk);
      if (!entries.ok()) {
        status = entries.status();
        break;
      }
      if (entries->empty()) break;
      std::map<std::string, LaneStats> lanes;
      DeadLetterMeta dead;
      {
        absl::MutexLock lock(&stats_mu_);
        for (const auto& e : *entries) lanes[e.lane] = lanes_.count(e.lane) ? lanes_[e.lane] : LaneStats{};
        dead = dead_;
      }
      rocksdb::WriteBatch batch;
      const int64_t now = NowUs();
      for (const auto& e : *entries) {
        LaneStats& lane = lanes[e.lane];
        AppendResult& r = appended[e.lane];
        if (r.first_seq == 0) r.first_seq = lane.next_seq;
        r.last_seq = lane.next_seq;
        batch.Put(default_cf_, RecordKey(e.lane, lane.next_seq++), EncodeEnvelope(now, e.payload));
        lane.records++;
        lane.bytes += e.payload.size();
        batch.Delete(dead_cf_, DeadLetterKey(e.id));
        dead.records -= std::min<uint64_t>(dead.records, 1);
        dead.bytes -= std::min<uint64_t>(dead.bytes, e.payload.size());
      }
      status = CommitSingle(&batch, lanes, dead, SpaceGuard::Write::kGrow);
    }
    if (!op.replay_done) return;
    if (status.ok()) op.replay_done(std::move(appended));
    else op.replay_done(status);
  }

  void Purge(Op& op) {
    uint64_t purged = 0;
    absl::Status status = RecoverFromLatchedError();
    while (status.ok()) {
      auto entries = ListDeadLetters(op.filter, 0, kDeadLetterChunk);
      if (!entries.ok()) {
        status = entries.status();
        break;
      }
      if (entries->empty()) break;
      DeadLetterMeta dead;
      {
        absl::MutexLock lock(&stats_mu_);
        dead = dead_;
      }
      rocksdb::WriteBatch batch;
      for (const auto& e : *entries) {
        batch.Delete(dead_cf_, DeadLetterKey(e.id));
        dead.records -= std::min<uint64_t>(dead.records, 1);
        dead.bytes -= std::min<uint64_t>(dead.bytes, e.payload.size());
      }
      status = CommitSingle(&batch, {}, dead, SpaceGuard::Write::kKeep);
      if (status.ok()) purged += entries->size();
    }
    if (!op.count_done) return;
    if (status.ok()) op.count_done(purged);
    else op.count_done(status);
  }

  // Declared first: released last, after RocksDB closed.
  std::unique_ptr<SpoolClaim> claim_;
  std::unique_ptr<rocksdb::DB> db_;
  rocksdb::ColumnFamilyHandle* default_cf_;
  rocksdb::ColumnFamilyHandle* dead_cf_;
  const SpoolOptions options_;
  const SpaceGuard guard_;
  const uint64_t drained_flush_bytes_;  // MaybeFlushDrained
  std::thread writer_;

  std::mutex queue_mu_;
  std::condition_variable queue_cv_;
  std::deque<Op> queue_;   // guarded by queue_mu_
  bool stopping_ = false;  // guarded by queue_mu_

  absl::Mutex stats_mu_;
  std::map<std::string, LaneStats> lanes_ ABSL_GUARDED_BY(stats_mu_);
  std::map<std::string, std::string> destinations_ ABSL_GUARDED_BY(stats_mu_);
  DeadLetterMeta dead_ ABSL_GUARDED_BY(stats_mu_);
  std::atomic<bool> full_{false};

  // Nanoseconds the writer spent per phase: written by the writer thread,
  // read by WriterTimes on any.
  struct WriterNanos {
    std::atomic<uint64_t> idle{0}, logging{0}, syncing{0}, memtable{0}, stalled{0}, answering{0}, commits{0};
  };
  WriterNanos times_;
  const std::chrono::steady_clock::time_point opened_ = std::chrono::steady_clock::now();
  // Adds the time of its scope to a WriterNanos counter.
  class PhaseTimer {
   public:
    explicit PhaseTimer(std::atomic<uint64_t>* sink) : sink_(sink), start_(std::chrono::steady_clock::now()) {}
    ~PhaseTimer() {
      *sink_ += std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start_).count();
    }
    PhaseTimer(const PhaseTimer&) = delete;
    PhaseTimer& operator=(const PhaseTimer&) = delete;

   private:
    std::atomic<uint64_t>* sink_;
    std::chrono::steady_clock::time_point start_;
  };

  // Writer thread only.
  rocksdb::WriteBatch batch_;  // CommitPart's, reused
  size_t batch_capacity_ = 0;
  std::deque<Op> waiting_;  // appends waiting for room, in arrival order
  struct HeldDelete {
    SeqNo up_to = 0;
    DeleteCallback done;
  };
  std::map<std::string, HeldDelete> held_deletes_;  // by lane: deletes waiting for space
  // Why the spool is full (while full_), and what must come back.
  struct FullState {
    bool by_cap = false;     // an append was refused for spool.max_bytes
    uint64_t cap_need = 0;   // payload bytes of the largest one
    bool by_disk = false;    // a write was refused by the space guard
    uint64_t disk_need = 0;  // free bytes the largest one needed
    bool left = false;       // records left since the last refusal
    bool fit = false;        // an append as large as the largest one refused went in since
    std::chrono::steady_clock::time_point since;
  };
  FullState full_state_;
  absl::Status latched_error_;
  std::chrono::steady_clock::time_point last_resume_;
  std::chrono::steady_clock::time_point last_flush_request_;
  std::chrono::steady_clock::time_point watermark_written_;
  bool watermark_dirty_ = true;

  std::thread tidy_;
  std::mutex tidy_mu_;
  std::condition_variable tidy_cv_;
  bool tidy_requested_ = false;  // guarded by tidy_mu_
  bool tidy_stopping_ = false;   // guarded by tidy_mu_

  std::thread reader_;
  std::mutex read_mu_;
  std::condition_variable read_cv_;
  std::deque<std::function<void(bool)>> reads_;  // guarded by read_mu_
  bool read_stopping_ = false;                   // guarded by read_mu_
};

// A folder that holds anything but no CURRENT file is not a spool we may
// initialize: it is damaged, or something else.
absl::Status CheckNotDamagedOrForeign(const std::string& path, bool* empty) {
  namespace fs = std::filesystem;
  std::error_code ec;
  *empty = true;
  if (!fs::exists(path, ec)) return absl::OkStatus();
  if (!fs::is_directory(path, ec)) {
    return absl::FailedPreconditionError(absl::StrCat("spool.path ", path, " exists and is not a folder"));
  }
  bool has_current = false;
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(path, ec)) {
    const std::string name = entry.path().filename().string();
    names.push_back(name);
    if (name == "CURRENT") has_current = true;
  }
  if (ec) return absl::UnavailableError(absl::StrCat("cannot list spool folder ", path, ": ", ec.message()));
  *empty = names.empty();
  if (!names.empty() && !has_current) {
    return absl::DataLossError(absl::StrCat(
        "spool at ", path, " holds ", names.size(), " file(s) (e.g. ", names.front(),
        ") but no CURRENT file: it is damaged or not a spool. It was left untouched; zerobusd never starts a new "
        "spool over existing data. Inspect it with `zerobusctl spool verify --path ", path,
        "`, or move it away to start empty"));
  }
  return absl::OkStatus();
}

}  // namespace

namespace {

// ----------------------------------------------------------- open & check

// A record key's lane prefix ("L" <lane> 0x00): RocksDB keeps an insert
// hint per prefix, so appending a lane's next record (its keys only grow)
// costs O(1) in the memtable's skip list instead of a search from the top.
class LanePrefixTransform final : public rocksdb::SliceTransform {
 public:
  const char* Name() const override { return "zerobusd.LanePrefix"; }
  rocksdb::Slice Transform(const rocksdb::Slice& key) const override {
    return rocksdb::Slice(key.data(), LanePrefixSize(View(key)));
  }
  bool InDomain(const rocksdb::Slice& key) const override { return LanePrefixSize(View(key)) > 0; }
};

// What RocksDB may hold in memory, carved out of SpoolOptions::memory_budget
// (and clipped by the free-space guard), so the daemon's memory is set by
// configuration whatever the load.
struct Tuning {
  size_t memtable_bytes = 8u << 20;      // one write buffer of the records; two may exist (one flushing)
  size_t dead_memtable_bytes = 1u << 20;  // the dead-letter store's write buffer
  size_t block_cache_bytes = 4u << 20;    // table blocks, index and filter blocks included
};

Tuning TuningFor(uint64_t memory_budget) {
  Tuning t;
  const uint64_t budget = std::max<uint64_t>(memory_budget, kMinSpoolMemoryBudget);
  // Half for the two write buffers of the records, an eighth for the block
  // cache; the rest is the group commit's batch (max_group_bytes) and slack.
  t.memtable_bytes = budget / 4;
  t.dead_memtable_bytes = std::clamp<uint64_t>(budget / 32, 256u << 10, 4u << 20);
  t.block_cache_bytes = budget / 8;
  return t;
}

rocksdb::DBOptions MakeDbOptions(bool create, const Tuning& tuning) {
  rocksdb::DBOptions db_options;
  db_options.create_if_missing = create;
  db_options.create_missing_column_families = true;
  db_options.paranoid_checks = true;
  // A torn last WAL record (an append whose fsync never finished, so nobody
  // was told "accepted") is dropped; corruption anywhere else fails the open.
  db_options.wal_recovery_mode = rocksdb::WALRecoveryMode::kTolerateCorruptedTailRecords;
  // Synced WALs that later shrink or vanish fail the open.
  db_options.track_and_verify_wals_in_manifest = true;
  db_options.max_background_jobs = 2;
  // One writer thread: the memtable's insert hints need this off.
  db_options.allow_concurrent_memtable_write = false;
  // Table files kept open at once (more are opened on demand): the spool's
  // share of the descriptors the daemon reserves beside intake's
  // connections (CheckRuntimeConfig), whatever the backlog's size.
  db_options.max_open_files = 256;
  // A write-ahead log file lives until every family's memtable holding its
  // writes is flushed: a dead letter written once would keep every later
  // log. Past this total the oldest family is flushed and the logs go.
  db_options.max_total_wal_size = 4 * (tuning.memtable_bytes + tuning.dead_memtable_bytes);
  return db_options;
}

// `insert_hints`: see LanePrefixTransform; never while a write-ahead log
// that an older zerobusd wrote may be replayed (OpenRocksDbSpool).
std::vector<rocksdb::ColumnFamilyDescriptor> MakeFamilies(const Tuning& tuning, bool insert_hints) {
  rocksdb::ColumnFamilyOptions cf_options;
  cf_options.write_buffer_size = tuning.memtable_bytes;
  cf_options.max_write_buffer_number = 2;
  if (insert_hints) cf_options.memtable_insert_with_hint_prefix_extractor = std::make_shared<LanePrefixTransform>();
  // Smaller table files than RocksDB's 64 MiB, so a drained range covers
  // whole files more often and they are dropped without a rewrite
  // (ReclaimDeleted).
  cf_options.target_file_size_base = std::max<uint64_t>(tuning.memtable_bytes, 2u << 20);
  cf_options.max_bytes_for_level_base = 4 * cf_options.target_file_size_base;
  cf_options.compression = rocksdb::kNoCompression;
  for (auto c : rocksdb::GetSupportedCompressions()) {
    if (c == rocksdb::kLZ4Compression) cf_options.compression = c;
  }
  rocksdb::BlockBasedTableOptions table;
  table.block_size = 64 << 10;
  // One cache for both families, index and filter blocks inside it: what
  // reading a backlog holds stays within the budget.
  table.block_cache = rocksdb::NewLRUCache(tuning.block_cache_bytes);
  table.cache_index_and_filter_blocks = true;
  cf_options.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  rocksdb::ColumnFamilyOptions dead_options = cf_options;
  dead_options.write_buffer_size = tuning.dead_memtable_bytes;
  return {{rocksdb::kDefaultColumnFamilyName, cf_options}, {kDeadLetterFamily, dead_options}};
}

absl::Status OpenError(const rocksdb::Status& s, const std::string& path) {
  if (s.IsNoSpace()) {
    return absl::ResourceExhaustedError(absl::StrCat("cannot open spool at ", path, ": ", s.ToString(),
                                                     " (its filesystem is full: free space on it and start again; "
                                                     "the spool was left as it was)"));
  }
  const bool damaged = s.IsCorruption() || s.IsIOError() || s.IsNotFound();
  return absl::Status(damaged ? absl::StatusCode::kDataLoss : FromRocks(s, "").code(),
                      absl::StrCat("cannot open spool at ", path, ": ", s.ToString(),
                                   damaged ? absl::StrCat(" (the spool looks damaged; it was left untouched: check it "
                                                          "with `zerobusctl spool verify --path ",
                                                          path, "`)")
                                           : ""));
}

// An open RocksDB with its column family handles; closes on destruction.
struct OpenDb {
  std::unique_ptr<rocksdb::DB> db;
  std::vector<rocksdb::ColumnFamilyHandle*> handles;  // default; dead letters (may be absent read-only)
  ~OpenDb() { Close(); }
  void Close() {
    if (!db) return;
    for (auto* h : handles) db->DestroyColumnFamilyHandle(h);
    handles.clear();
    db->Close();
    db.reset();
  }
  rocksdb::ColumnFamilyHandle* dead() const { return handles.size() > 1 ? handles[1] : nullptr; }
};

absl::Status Open(const std::string& path, bool read_only, bool create, OpenDb* out,
                  const Tuning& tuning = Tuning{}, bool insert_hints = false) {
  rocksdb::DBOptions db_options = MakeDbOptions(create, tuning);
  std::vector<rocksdb::ColumnFamilyDescriptor> families = MakeFamilies(tuning, insert_hints);
  if (read_only) {
    // A spool from before the dead-letter store has only the default family.
    std::vector<std::string> existing;
    if (rocksdb::DB::ListColumnFamilies(db_options, path, &existing).ok() && existing.size() == 1) families.pop_back();
  }
  rocksdb::DB* raw = nullptr;
  rocksdb::Status s = read_only ? rocksdb::DB::OpenForReadOnly(db_options, path, families, &out->handles, &raw)
                                : rocksdb::DB::Open(db_options, path, families, &out->handles, &raw);
  if (!s.ok()) return OpenError(s, path);
  out->db.reset(raw);
  return absl::OkStatus();
}

struct SpoolState {
  std::map<std::string, LaneStats> lanes;
  std::map<std::string, std::string> destinations;
  DeadLetterMeta dead;
};

absl::StatusOr<SpoolState> LoadState(const OpenDb& open, const std::string& path) {
  SpoolState state;
  rocksdb::DB* db = open.db.get();
  {
    const std::string dest_upper = "E";
    rocksdb::Slice dest_upper_slice(dest_upper);
    rocksdb::ReadOptions dest_ro;
    dest_ro.iterate_upper_bound = &dest_upper_slice;
    std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(dest_ro, open.handles[0]));
    for (it->Seek("D"); it->Valid(); it->Next()) {
      state.destinations[it->key().ToString().substr(1)] = it->value().ToString();
    }
    ZB_RETURN_IF_ERROR(FromRocks(it->status(), absl::StrCat("spool at ", path)));
  }
  {
    const std::string upper = "N";
    rocksdb::Slice upper_slice(upper);
    rocksdb::ReadOptions ro;
    ro.iterate_upper_bound = &upper_slice;
    std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(ro, open.handles[0]));
    for (it->Seek("M"); it->Valid(); it->Next()) {
      const std::string lane = it->key().ToString().substr(1);
      std::optional<LaneStats> st = DecodeLaneMeta(View(it->value()));
      if (!st) return absl::DataLossError(absl::StrCat("spool at ", path, ": bad meta for lane ", lane));
      state.lanes[lane] = *st;
    }
    ZB_RETURN_IF_ERROR(FromRocks(it->status(), absl::StrCat("spool at ", path)));
  }
  if (open.dead() != nullptr) {
    std::string value;
    rocksdb::Status get = db->Get(rocksdb::ReadOptions(), open.dead(), kDeadLetterMetaKey, &value);
    if (get.ok()) {
      std::optional<DeadLetterMeta> dead = DecodeDeadLetterMeta(value);
      if (!dead) return absl::DataLossError(absl::StrCat("spool at ", path, ": bad dead-letter store meta"));
      state.dead = *dead;
    } else if (!get.IsNotFound()) {
      return FromRocks(get, absl::StrCat("spool at ", path));
    }
  }
  return state;
}

// The spool must hold at least what its last watermark says it held.
absl::Status CheckWatermark(const std::string& path, const SpoolState& state) {
  std::ifstream in(WatermarkPath(path), std::ios::binary);
  if (!in) return absl::OkStatus();  // a new spool, or one from before watermarks
  std::stringstream ss;
  ss << in.rdbuf();
  ::zerobusd::spool::Watermark mark;
  const std::string hint = absl::StrCat(
      " The spool was left untouched: restore it from a backup, or move it away to start empty (`zerobusctl spool "
      "verify --path ",
      path, "` shows what it holds).");
  if (!mark.ParseFromString(ss.str())) {
    return absl::DataLossError(absl::StrCat("spool at ", path, ": its watermark file ", kWatermarkFile,
                                            " is damaged, so the spool cannot be checked for lost data.", hint));
  }
  std::vector<std::string> lost;
  for (const auto& [lane, next_seq] : mark.lane_next_seq()) {
    auto it = state.lanes.find(lane);
    const SeqNo have = it == state.lanes.end() ? 1 : it->second.next_seq;
    if (have < next_seq) {
      lost.push_back(absl::StrCat("lane ", lane, " had records up to seq ", next_seq - 1, " but its metadata ends at ",
                                  have - 1));
    }
  }
  if (state.dead.next_id < mark.dead_letter_next_id()) {
    lost.push_back(absl::StrCat("the dead-letter store had entries up to ", mark.dead_letter_next_id() - 1,
                                " but ends at ", state.dead.next_id - 1));
  }
  if (lost.empty()) return absl::OkStatus();
  return absl::DataLossError(absl::StrCat("spool at ", path, " is damaged: it holds less than it did at ",
                                          absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::FromUnixMicros(mark.written_us()), absl::UTCTimeZone()), " (", absl::StrJoin(lost, "; "),
                                          "): RocksDB's MANIFEST or files lost committed data.", hint));
}

}  // namespace

absl::StatusOr<SpoolReport> VerifyRocksDbSpool(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::exists(fs::path(path) / "CURRENT", ec)) {
    bool empty = true;
    ZB_RETURN_IF_ERROR(CheckNotDamagedOrForeign(path, &empty));
    return absl::NotFoundError(absl::StrCat("no spool at ", path));
  }
  OpenDb open;
  ZB_RETURN_IF_ERROR(Open(path, /*read_only=*/true, false, &open));
  rocksdb::DB* db = open.db.get();
  const std::vector<rocksdb::ColumnFamilyHandle*>& handles = open.handles;
  SpoolReport report;
  auto state = LoadState(open, path);
  if (!state.ok()) {
    report.problems.push_back(std::string(state.status().message()));
  } else if (absl::Status mark = CheckWatermark(path, *state); !mark.ok()) {
    report.problems.push_back(std::string(mark.message()));
  }
  rocksdb::Status checksums = db->VerifyChecksum();
  if (!checksums.ok()) report.problems.push_back(absl::StrCat("block checksums: ", checksums.ToString()));
  {
    rocksdb::ReadOptions ro;
    ro.verify_checksums = true;
    std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(ro, handles[0]));
    std::map<std::string, SpoolReport::Lane> lanes;
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      const rocksdb::Slice key = it->key();
      if (key.size() == 0) continue;
      if (key[0] == 'M') {
        const std::string name = key.ToString().substr(1);
        auto& lane = lanes[name];
        lane.name = name;
        std::optional<LaneStats> meta = DecodeLaneMeta(View(it->value()));
        if (!meta) {
          report.problems.push_back(absl::StrCat("lane ", name, ": metadata has a bad size"));
          continue;
        }
        lane.meta = *meta;
      } else if (key[0] == 'L') {
        const std::string k = key.ToString();
        const size_t zero = k.find('\0');
        if (zero == std::string::npos || k.size() != zero + 9) {
          report.problems.push_back("a record key is malformed");
          continue;
        }
        const std::string name = k.substr(1, zero - 1);
        const SeqNo seq = SeqFromKey(View(key));
        int64_t time_us = 0;
        std::string payload;
        absl::Status envelope =
            DecodeEnvelope(View(it->value()), absl::StrCat("lane ", name, " seq ", seq), &time_us, &payload);
        if (!envelope.ok()) report.problems.push_back(std::string(envelope.message()));
        auto& lane = lanes[name];
        lane.name = name;
        lane.records++;
        lane.bytes += payload.size();
      }
    }
    if (!it->status().ok()) report.problems.push_back(absl::StrCat("reading records: ", it->status().ToString()));
    it.reset();
    for (auto& [name, lane] : lanes) {
      if (lane.records != lane.meta.records || lane.bytes != lane.meta.bytes) {
        report.problems.push_back(absl::StrCat("lane ", name, ": metadata says ", lane.meta.records, " records (",
                                               lane.meta.bytes, " bytes), found ", lane.records, " (", lane.bytes,
                                               " bytes)"));
      }
      report.lanes.push_back(lane);
    }
  }
  if (handles.size() > 1) {
    rocksdb::ReadOptions ro;
    ro.verify_checksums = true;
    std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(ro, handles[1]));
    for (it->Seek("E"); it->Valid() && it->key().starts_with("E"); it->Next()) {
      ::zerobusd::spool::DeadLetter entry;
      if (!entry.ParseFromArray(it->value().data(), static_cast<int>(it->value().size()))) {
        report.problems.push_back(absl::StrCat("dead letter ", SeqFromKey(View(it->key())), " does not parse"));
      }
      report.dead_letters++;
    }
    if (!it->status().ok()) report.problems.push_back(absl::StrCat("reading dead letters: ", it->status().ToString()));
  }
  return report;
}

absl::StatusOr<std::unique_ptr<Spool>> OpenRocksDbSpool(const SpoolOptions& requested) {
  SpoolOptions options = requested;
  Tuning tuning = TuningFor(options.memory_budget);
  // The group commit's batch is part of the budget too.
  options.max_group_bytes = std::min<size_t>(options.max_group_bytes,
                                             std::max<uint64_t>(1u << 20, tuning.memtable_bytes / 2));
  if (options.min_free_bytes > 0) {
    // Whatever RocksDB writes next (a group commit, a memtable flush) must
    // fit inside the guard, so the disk never fills under it.
    tuning.memtable_bytes = std::clamp<uint64_t>(options.min_free_bytes / 4, 1u << 20, tuning.memtable_bytes);
    options.max_group_bytes = std::min<size_t>(options.max_group_bytes,
                                               std::max<uint64_t>(1u << 20, options.min_free_bytes / 8));
  }
  // What RocksDB must always find free: a flush of both memtables, and the
  // WAL, MANIFEST and info log around it.
  const uint64_t reserve_bytes = 2 * tuning.memtable_bytes + tuning.dead_memtable_bytes + (1u << 20);
  // Before anything reads the folder: a spool in use is not damaged.
  ZB_ASSIGN_OR_RETURN(std::unique_ptr<SpoolClaim> claim, ClaimSpool(options.path));
  bool empty = true;
  ZB_RETURN_IF_ERROR(CheckNotDamagedOrForeign(options.path, &empty));
  if (!empty) {
    // Check read-only first: a read-write open "repairs" a damaged MANIFEST
    // by deleting the files it no longer names, and the evidence with them.
    OpenDb check;
    ZB_RETURN_IF_ERROR(Open(options.path, /*read_only=*/true, false, &check));
    ZB_ASSIGN_OR_RETURN(SpoolState state, LoadState(check, options.path));
    ZB_RETURN_IF_ERROR(CheckWatermark(options.path, state));
  }
  ZB_RETURN_IF_ERROR(MakePrivateDir(options.path));
  OpenDb open;
  if (!empty) {
    // The write-ahead log is replayed without the memtable's insert hints
    // (a log an older zerobusd wrote holds range tombstones inside their
    // domain) and flushed by RocksDB as it recovers; the spool then opens
    // again with them, on an empty log.
    if (absl::Status opened = Open(options.path, /*read_only=*/false, /*create=*/false, &open, tuning);
        !opened.ok()) {
      // Another process may have taken the spool since the claim looked.
      ZB_RETURN_IF_ERROR(CheckNotLockedByAnother(options.path));
      return opened;
    }
    open.Close();
  }
  if (absl::Status opened =
          Open(options.path, /*read_only=*/false, /*create=*/empty, &open, tuning, /*insert_hints=*/true);
      !opened.ok()) {
    ZB_RETURN_IF_ERROR(CheckNotLockedByAnother(options.path));
    return opened;
  }
  ZB_ASSIGN_OR_RETURN(SpoolState state, LoadState(open, options.path));
  ZB_RETURN_IF_ERROR(CheckWatermark(options.path, state));
  std::vector<rocksdb::ColumnFamilyHandle*> handles = std::move(open.handles);
  open.handles.clear();
  return std::unique_ptr<Spool>(new RocksDbSpool(std::move(claim), std::move(open.db), handles, options,
                                                 reserve_bytes, std::max<uint64_t>(tuning.memtable_bytes / 4, 1u << 20),
                                                 std::move(state.lanes),
                                                 std::move(state.destinations), state.dead));
}

}  // namespace zb
