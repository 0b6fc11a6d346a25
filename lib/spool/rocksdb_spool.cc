// RocksDB spool. Keys and values: spool/spool_format.h.
// Every meta value is written in the same WriteBatch as the change it
// describes, so it is exact after any crash and start-up needs no scan of
// the backlog.

#include <endian.h>


#include <algorithm>
#include <chrono>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <optional>
#include <variant>

#include <pthread.h>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/crc32c.h"
#include "common/serial_worker.h"
#include "common/status.h"
#include "rocksdb/db.h"
#include "rocksdb/iostats_context.h"
#include "rocksdb/options.h"
#include "rocksdb/perf_context.h"
#include "rocksdb/perf_level.h"
#include "rocksdb/write_batch.h"
#include "spdlog/spdlog.h"
#include "spool/full_state.h"
#include "spool/space_guard.h"
#include "spool/spool.h"
#include "spool/spool_dir.h"
#include "spool/spool_format.h"
#include "spool/spool_tidy.h"
#include "spool/rocksdb_store.h"
#include "spool/seq_ranges.h"
#include "spool/watermark.h"
#include "spool/write_queue.h"
#include "spool/write_requests.h"
#include "spool/dead_letter_store.h"
#include "spool/dead_letters.h"
#include "spool/size_ledger.h"

namespace zb {
namespace {

// Replay and purge commit in chunks of this many entries.
constexpr size_t kDeadLetterChunk = 10000;
// How often the watermark follows the spool while it changes.
constexpr std::chrono::seconds kWatermarkInterval{5};
// How often appends waiting for room, held deletes and a full spool look
// for room again when nothing else happens.
constexpr std::chrono::milliseconds kRoomPoll{100};

// What a WriteBatch grows by (tag, column family, length varints, key,
// value), with room to spare, so the space guard can decide per op.
uint64_t MetaBytes(const std::string& lane) { return lane.size() + 1 + kLaneMetaSize + 16; }
uint64_t DeleteBytes(const std::string& lane) { return 2 * (lane.size() + 10) + 16; }

int64_t NowUs() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
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
        meta_cf_(handles[2]),
        dead_store_(db_.get(), dead_cf_, dead),
        dead_letters_(*this),
        options_(options),
        guard_(options.path, options.min_free_bytes, reserve_bytes, options.free_bytes_probe),
        lanes_(std::move(lanes)),
        destinations_(std::move(destinations)),
        full_state_(options.path, FullState::Room{.max_bytes = options.max_bytes,
                                                  .drop_oldest = options.drop_oldest,
                                                  .total_bytes = [this] { return TotalBytes(); },
                                                  .free_bytes = [this] { return guard_.FreeBytes(); }}),
        tidier_(db_.get(), default_cf_, dead_cf_, meta_cf_, &guard_, [this] { return LanesSnapshot(); },
                options.path, SpoolTidier::Options{.drained_flush_bytes = drained_flush_bytes}) {
    writer_ = std::thread([this] {
      pthread_setname_np(pthread_self(), "zb-spool-write");
      WriterLoop();
    });
    tidier_.Request();  // a spool that stopped before its drained compaction gives its disk back now
  }

  ~RocksDbSpool() override {
    tidier_.Stop();  // first: a compaction under way ends now
    reader_.Stop();  // reads still queued are answered "spool closed"
    queue_.Close();
    writer_.join();
    // A clean stop leaves nothing to replay: the next start is quick. Not
    // when the flush would not fit in the reserve, nor after RocksDB met a
    // failed write (a WAL sync then may abort it): the WAL replays instead.
    if (latched_error_.ok() && guard_.ReserveFree()) {
      rocksdb::FlushOptions flush;
      flush.wait = true;
      db_->Flush(flush, {default_cf_, dead_cf_, meta_cf_});
      db_->SyncWAL();
    }
    MaybeWriteWatermark(/*force=*/true);
    db_->DestroyColumnFamilyHandle(meta_cf_);
    db_->DestroyColumnFamilyHandle(dead_cf_);
    db_->DestroyColumnFamilyHandle(default_cf_);
    db_->Close();
  }

  void AppendAsync(const std::string& lane, Records records, AppendCallback done) override {
    AppendRequest append;
    append.lane = lane;
    append.records = std::move(records);
    append.done = std::move(done);
    Enqueue(std::move(append));
  }

  void AppendWhenRoomAsync(const std::string& lane, Records records, AppendCallback done) override {
    AppendRequest append;
    append.lane = lane;
    append.records = std::move(records);
    append.done = std::move(done);
    append.wait_for_room = true;
    Enqueue(std::move(append));
  }

  void AbortWaitingAppends(const std::string& reason) override { Enqueue(AbortWaitingRequest{reason}); }

  void DeleteRangeAsync(const std::string& lane, SeqNo first, SeqNo last, DeleteCallback done) override {
    DeleteRequest del;
    del.lane = lane;
    del.first = std::max<SeqNo>(first, 1);
    del.last = last;
    del.done = std::move(done);
    Enqueue(std::move(del));
  }

  std::unique_ptr<DurableWatch> WatchDurable(const std::string& lane, Post post,
                                             std::function<void(SeqNo)> on_durable) override {
    auto watcher = std::make_shared<Watcher>();
    watcher->lane = lane;
    watcher->post = std::move(post);
    watcher->on_durable = std::move(on_durable);
    {
      absl::MutexLock lock(&watch_mu_);
      watchers_.emplace(lane, watcher);
    }
    return std::make_unique<WatchHandle>(this, std::move(watcher));
  }

  void SetLaneDestinationAsync(const std::string& lane, std::string destination, DeleteCallback done) override {
    Enqueue(DestinationRequest{lane, std::move(destination), std::move(done)});
  }

  std::string LaneDestination(const std::string& lane) override {
    absl::MutexLock lock(&stats_mu_);
    auto it = destinations_.find(lane);
    return it == destinations_.end() ? "" : it->second;
  }

  std::map<std::string, std::string> LaneDestinations() override {
    absl::MutexLock lock(&stats_mu_);
    return destinations_;
  }

  DeadLetters& dead_letters() override { return dead_letters_; }

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
            DecodeRecordEnvelope(View(value), lane, rec.seq, &rec.append_time_us, &rec.payload));
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

  bool full() override { return full_state_.full(); }

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
  // The DeadLetters face of dead_store_: it asks this spool's writer and
  // reader threads, as the lanes' calls do, so a move or a replay commits
  // in one batch with the lane's change (CommitAlone). Lives and dies with
  // the spool.
  class RocksDbDeadLetters final : public DeadLetters {
   public:
    explicit RocksDbDeadLetters(RocksDbSpool& spool) : spool_(spool) {}

    void MoveAsync(const std::string& lane, SeqNo seq, DeadLetterInfo info, MoveCallback done) override {
      spool_.Enqueue(DeadLetterMoveRequest{lane, seq, std::move(info), std::move(done)});
    }

    void ListAsync(const DeadLetterFilter& filter, uint64_t from_id, size_t limit, ListCallback done) override {
      spool_.RunOnReader([this, filter, from_id, limit, done = std::move(done)](bool cancelled) {
        if (cancelled) {
          done(absl::CancelledError("spool closed"));
          return;
        }
        done(spool_.dead_store_.List(filter, from_id, limit));
      });
    }

    void ReplayAsync(const DeadLetterFilter& filter, ReplayCallback done) override {
      spool_.Enqueue(DeadLetterReplayRequest{filter, std::move(done)});
    }

    void PurgeAsync(const DeadLetterFilter& filter, PurgeCallback done) override {
      spool_.Enqueue(DeadLetterPurgeRequest{filter, std::move(done)});
    }

    DeadLetterStats Totals() override {
      const DeadLetterMeta dead = spool_.dead_store_.Committed();
      return DeadLetterStats{dead.records, dead.bytes};
    }

   private:
    RocksDbSpool& spool_;
  };

  // Writer thread. Records what the spool now holds durably, at most every
  // kWatermarkInterval (or now, when `force`), replacing the file atomically.
  void MaybeWriteWatermark(bool force) {
    const auto now = std::chrono::steady_clock::now();
    if (!force && (!watermark_dirty_ || now - watermark_written_ < kWatermarkInterval)) return;
    std::map<std::string, SeqNo> lane_next_seq;
    uint64_t dead_next_id = 0;
    {
      absl::MutexLock lock(&stats_mu_);
      for (const auto& [name, st] : lanes_) lane_next_seq[name] = st.next_seq;
      dead_next_id = dead_store_.Committed().next_id;
    }
    // Name only what is on disk (and never sync a WAL after a failed write).
    if (!options_.sync && (!latched_error_.ok() || !db_->SyncWAL().ok())) return;
    if (!WriteWatermark(options_.path, lane_next_seq, dead_next_id, NowUs())) return;
    watermark_written_ = now;
    watermark_dirty_ = false;
  }

  // One WatchDurable. `latest` and `queued` are shared by the writer
  // thread (Publish) and the executor; `alive` and `on_durable` belong to
  // the executor's thread.
  struct Watcher {
    std::string lane;
    Post post;
    std::function<void(SeqNo)> on_durable;
    std::atomic<SeqNo> latest{0};
    std::atomic<bool> queued{false};
    bool alive = true;
  };

  class WatchHandle final : public DurableWatch {
   public:
    WatchHandle(RocksDbSpool* spool, std::shared_ptr<Watcher> watcher)
        : spool_(spool), watcher_(std::move(watcher)) {}
    ~WatchHandle() override {
      watcher_->alive = false;  // a notification still queued does nothing
      absl::MutexLock lock(&spool_->watch_mu_);
      auto [begin, end] = spool_->watchers_.equal_range(watcher_->lane);
      for (auto it = begin; it != end; ++it) {
        if (it->second == watcher_) {
          spool_->watchers_.erase(it);
          break;
        }
      }
    }

   private:
    RocksDbSpool* spool_;
    std::shared_ptr<Watcher> watcher_;
  };

  // Writer thread, after a commit made records of `lane` up to `last_seq`
  // durable: tells the lane's watchers, one queued notification each.
  void PublishDurable(const std::string& lane, SeqNo last_seq) {
    absl::MutexLock lock(&watch_mu_);
    auto [begin, end] = watchers_.equal_range(lane);
    for (auto it = begin; it != end; ++it) {
      std::shared_ptr<Watcher> w = it->second;
      SeqNo seen = w->latest.load();
      while (seen < last_seq && !w->latest.compare_exchange_weak(seen, last_seq)) {
      }
      if (w->queued.exchange(true)) continue;  // the queued one will carry it
      w->post([w] {
        w->queued = false;  // before reading latest: a later publish queues again
        if (w->alive) w->on_durable(w->latest.load());
      });
    }
  }

  // Any thread: every lane's stats as last published (what the tidier
  // reads).
  std::map<std::string, LaneStats> LanesSnapshot() {
    absl::MutexLock lock(&stats_mu_);
    return lanes_;
  }

  uint64_t TotalBytesLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(stats_mu_) {
    uint64_t total = dead_store_.Committed().bytes;
    for (const auto& [_, s] : lanes_) total += s.bytes;
    return total;
  }

  void Enqueue(WriteRequest request) { queue_.Push(std::move(request)); }

  // `task(cancelled)` runs on the reader thread, in order; at destruction
  // the tasks still queued run with cancelled = true.
  void RunOnReader(SerialWorker::Task task) { reader_.Post(std::move(task)); }

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
      WriteQueue::Next next;
      {
        const PhaseTimer idle(&times_.idle);
        // Appends wait for room, deletes for space, and a full spool watches
        // for room: look again now and then even when nothing comes (space
        // may be freed by someone else).
        const bool watching = !waiting_.empty() || !held_deletes_.empty() || full_state_.full();
        next = queue_.Take(watching ? std::optional(kRoomPoll) : std::nullopt);
      }
      if (next.closed) break;
      RetryParked();
      if (next.alone) {
        std::visit([this](auto& request) { CommitAlone(request); }, *next.alone);
        MaybeLeaveFull(false);
      } else if (!next.group.empty()) {
        CommitGroup(next.group);
      } else {
        WatchForRoom();
      }
    }
    RetryParked();  // a last chance for held deletes
    FailWaiting(absl::UnavailableError("the spool closed while the records waited for room"));
    FailHeldDeletes(absl::UnavailableError("the spool closed before there was room for the delete"));
  }

  // Appends parked for room, in arrival order, and held deletes: try them
  // again (the deletes first: they free space).
  void RetryParked() {
    if (waiting_.empty() && held_deletes_.empty()) return;
    std::vector<GroupRequest> retry;
    for (auto& [lane, ranges] : held_deletes_) {
      for (auto& [first, held] : ranges) {
        DeleteRequest del;
        del.lane = lane;
        del.first = first;
        del.last = held.last;
        del.done = std::move(held.done);
        retry.emplace_back(std::move(del));
      }
    }
    held_deletes_.clear();
    for (auto& append : waiting_) {
      append.parked = false;
      append.was_parked = true;
      retry.emplace_back(std::move(append));
    }
    waiting_.clear();
    CommitGroup(retry);  // what still does not fit parks (or is held) again, in order
  }

  void FailWaiting(const absl::Status& why) {
    std::deque<AppendRequest> waiting;
    waiting.swap(waiting_);
    for (auto& append : waiting) {
      if (append.done) append.done(why);
    }
  }

  // Keeps a delete that found no room, to commit it by itself once there is.
  // Held ranges of a lane that overlap or touch merge into one, which keeps
  // the newest `done`; the others are covered by the union and answered
  // now, so what is held stays within the lane's disjoint ranges.
  void HoldDelete(DeleteRequest& del) {
    std::map<SeqNo, HeldDelete>& ranges = held_deletes_[del.lane];
    SeqNo first = del.first, last = del.last;
    std::vector<DeleteCallback> covered;
    auto it = ranges.upper_bound(last == ~SeqNo{0} ? last : last + 1);
    while (it != ranges.begin()) {
      auto prev = std::prev(it);
      if (first > 0 && prev->second.last < first - 1) break;  // ends before the new range (not touching)
      first = std::min(first, prev->first);
      last = std::max(last, prev->second.last);
      covered.push_back(std::move(prev->second.done));
      it = ranges.erase(prev);
    }
    ranges[first] = HeldDelete{last, std::move(del.done)};
    for (auto& done : covered) {
      if (done) done(absl::OkStatus());
    }
  }

  void FailHeldDeletes(const absl::Status& why) {
    std::map<std::string, std::map<SeqNo, HeldDelete>> held;
    held.swap(held_deletes_);
    for (auto& [_, ranges] : held) {
      for (auto& [first, h] : ranges) {
        if (h.done) h.done(why);
      }
    }
  }

  // ------------------------------------------------------------ full state

  // Writer thread. A write refused for room (`why`) makes the spool full
  // (full_state_, spool/full_state.h: the first refusal logs one line;
  // later ones only widen what must come back before it is not full
  // again); one refused by the disk also asks for a flush.
  void NoteRefusal(const absl::Status& why, bool disk, uint64_t need) {
    full_state_.NoteRefusal(why, disk, need);
    if (disk) RequestFlushForSpace();
  }

  // Writer thread. The spool stops being full once nothing waits for room
  // (appends, deletes), no error is latched, and full_state_ says what
  // must come back has (FullState::MaybeLeave: what waited went in, or an
  // append as large as the largest one refused, or records left and the
  // largest write refused would fit now). Logs one line.
  void MaybeLeaveFull(bool parked_went_in) {
    if (!full_state_.full() || !waiting_.empty() || !held_deletes_.empty() || !latched_error_.ok()) return;
    full_state_.MaybeLeave(parked_went_in);
  }

  // Writer thread, when nothing else happened for a while.
  void WatchForRoom() {
    if (!full_state_.full()) return;
    if (full_state_.by_disk()) RequestFlushForSpace();
    MaybeLeaveFull(false);
  }

  // Acked records leave the disk only when their memtable is flushed
  // (dropping them) and its WAL deleted: ask for that (at most every
  // second), so space comes back as the drain catches up. Only while the
  // flush itself fits in the reserve.
  void RequestFlushForSpace() {
    const auto now = std::chrono::steady_clock::now();
    if (!latched_error_.ok() || now - last_flush_request_ < std::chrono::seconds(1)) return;
    if (!guard_.ReserveFree()) return;
    last_flush_request_ = now;
    rocksdb::FlushOptions flush;
    flush.wait = false;
    flush.allow_write_stall = true;
    db_->Flush(flush, default_cf_);
  }

  // ----------------------------------------------------------------- writes

  // Writer thread. Every RocksDB write goes through here (but the tidier's
  // one range delete before it drops files, made only while the reserve is
  // free): the space guard reads the free space and refuses a batch that
  // would not leave what `kind` must leave, so RocksDB never meets a full
  // disk.
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
                        std::set<std::string>* changed, std::map<std::string, SeqRanges>* in_batch) {
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
      SeqRanges& victim_ranges = (*in_batch)[victim];
      changed->insert(victim);
      const uint64_t need = *total + bytes - options_.max_bytes;
      uint64_t freed = 0, records = 0;
      SeqNo last = lane.deleted_up_to;
      SeqNo committed_end = 0;
      {
        absl::MutexLock lock(&stats_mu_);
        committed_end = lanes_[victim].next_seq;
      }
      {
        const std::string upper = RecordKey(victim, committed_end);
        rocksdb::Slice upper_slice(upper);
        rocksdb::ReadOptions ro;
        ro.iterate_upper_bound = &upper_slice;
        std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, default_cf_));
        for (it->Seek(RecordKey(victim, lane.deleted_up_to + 1)); it->Valid() && freed < need; it->Next()) {
          const SeqNo seq = SeqFromKey(View(it->key()));
          last = seq;
          if (victim_ranges.Contains(seq)) continue;  // deleted earlier in this batch
          freed += it->value().size() - kEnvelopeHeader;
          ++records;
        }
        if (!it->status().ok()) return FromRocks(it->status(), "spool drop scan");
      }
      if (records == 0) return absl::ResourceExhaustedError("spool full: nothing left to drop");
      batch->DeleteRange(default_cf_, KeyAfterRecord(victim, lane.deleted_up_to), RecordKey(victim, last + 1));
      victim_ranges.Add(lane.deleted_up_to + 1, last);
      lane.records -= std::min(lane.records, records);
      lane.bytes -= std::min(lane.bytes, freed);
      ZB_ASSIGN_OR_RETURN(const SeqNo next_live, NextLive(victim, last, committed_end, victim_ranges));
      lane.deleted_up_to = next_live - 1;
      *total -= std::min(*total, freed);
      (*drops)[victim].first += records;
      (*drops)[victim].second += freed;
    }
    return absl::OkStatus();
  }

  void CommitGroup(std::vector<GroupRequest>& group) {
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
  size_t BatchBytesBound(const std::vector<GroupRequest>& group, size_t start) const {
    const size_t cap = 2 * options_.max_group_bytes;
    size_t bytes = 64;
    for (size_t i = start; i < group.size() && bytes < cap; ++i) {
      const std::string& lane = LaneOf(group[i]);
      bytes += MetaBytes(lane) + DeleteBytes(lane);
      const auto* append = std::get_if<AppendRequest>(&group[i]);
      if (append == nullptr || append->records == nullptr) continue;
      for (const auto& rec : *append->records) bytes += rec.size() + lane.size() + kEnvelopeHeader + 32;
    }
    return std::min(bytes, cap);
  }

  // Commits ops [start, end) of `group` in one WriteBatch, answers them and
  // returns `end`. The space guard decides per op on one look at the free
  // space (appends must leave min_free_bytes, deletes the reserve), then
  // again on the whole batch in GuardedWrite.
  size_t CommitPart(std::vector<GroupRequest>& group, size_t start) {
    std::map<std::string, LaneStats> touched;
    uint64_t total = 0;
    {
      absl::MutexLock lock(&stats_mu_);
      for (const auto& [name, stats] : lanes_) touched[name] = stats;
      total = TotalBytesLocked();
    }
    for (size_t i = start; i < group.size(); ++i) touched.try_emplace(LaneOf(group[i]));
    std::map<std::string, SeqNo> committed_next;  // each lane's next seq before this batch
    for (const auto& [name, stats] : touched) committed_next[name] = stats.next_seq;
    std::map<std::string, SeqRanges> in_batch;  // ranges this batch deletes, by lane
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
      if (!write_status.ok()) break;
      LaneStats& lane = touched[LaneOf(group[end])];
      if (auto* del = std::get_if<DeleteRequest>(&group[end])) {
        if (del->last >= std::max(del->first, lane.deleted_up_to + 1)) {
          const uint64_t planned_bytes = planned(del->lane, DeleteBytes(del->lane));
          absl::Status room = latched_full ? latched : guard_.Check(SpaceGuard::Write::kKeep, free, planned_bytes);
          if (!room.ok()) {
            del->held = true;  // committed by itself once it fits
            fit = false;       // what went in before does not answer this
            NoteRefusal(room, /*disk=*/true, guard_.Need(SpaceGuard::Write::kKeep, planned_bytes));
            continue;
          }
        }
        const uint64_t before = total;
        del->status = AddDelete(del->lane, del->first, del->last, committed_next[del->lane], &lane, &batch, &total,
                                &in_batch[del->lane]);
        if (del->status.ok()) changed.insert(del->lane);
        if (total < before) freed_any = true;
        continue;
      }
      AppendRequest& op = std::get<AppendRequest>(group[end]);
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
      if (op.status.ok()) op.status = MakeRoom(bytes, &total, &touched, &batch, &drops, &changed, &in_batch);
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
      if (full_state_.Fits(bytes, guard_.Need(SpaceGuard::Write::kGrow, planned_bytes))) fit = true;
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
      for (const auto& name : changed) batch.Put(meta_cf_, MetaKey(name), EncodeLaneMeta(touched[name]));
      // Appends were held to min_free_bytes above; the batch as a whole
      // must leave the reserve.
      write_status = GuardedWrite(&batch, SpaceGuard::Write::kKeep, any_append && options_.sync);
    }
    if (write_status.ok()) {
      {
        absl::MutexLock lock(&stats_mu_);
        for (const auto& name : changed) lanes_[name] = touched[name];
      }
      if (any_append) {
        for (const auto& name : changed) {
          if (touched[name].next_seq > committed_next[name]) PublishDurable(name, touched[name].next_seq - 1);
        }
      }
      // The ledgers learn what the batch did, now that it is in.
      for (const auto& [name, ranges] : in_batch) {
        for (const auto& [a, b] : ranges.ranges()) ledgers_[name].Gone(a, b);
      }
      for (size_t i = start; i < end; ++i) {
        const auto* append = std::get_if<AppendRequest>(&group[i]);
        if (append == nullptr || append->parked || !append->status.ok() || append->result.first_seq == 0) continue;
        SizeLedger& ledger = ledgers_[append->lane];
        SeqNo seq = append->result.first_seq;
        for (const auto& rec : *append->records) ledger.Appended(seq++, static_cast<uint32_t>(rec.size()));
      }
      BoundLedgers();
    }
    if (write_status.ok() && freed_any) {
      tidier_.Request();  // after the stats it reads are published (a drained spool is flushed there)
    }
    if (write_status.ok()) {
      if (any_append) watermark_dirty_ = true;
      if (freed_any) full_state_.NoteRecordsLeft();
      if (fit) full_state_.NoteFitWentIn();
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
      if (auto* del = std::get_if<DeleteRequest>(&group[i])) {
        if (write_status.ok() ? del->held : no_room) {
          HoldDelete(*del);
        } else if (del->done) {
          del->done(write_status.ok() ? del->status : write_status);
        }
        continue;
      }
      AppendRequest& append = std::get<AppendRequest>(group[i]);
      if (write_status.ok() ? append.parked : no_room && append.wait_for_room) {
        append.parked = true;
        waiting_.push_back(std::move(append));  // answered once it fits, or on abort
        continue;
      }
      if (!append.done) continue;
      const absl::Status& s = write_status.ok() ? append.status : write_status;
      if (s.ok()) append.done(append.result);
      else append.done(s);
    }
    MaybeLeaveFull(parked_went_in && !refused && write_status.ok());
    return end;
  }

  // The first record of `lane` after `after` that is still there (neither
  // deleted by a commit nor by `in_batch`), or `committed_next` when none
  // below it is.
  absl::StatusOr<SeqNo> NextLive(const std::string& lane, SeqNo after, SeqNo committed_next,
                                 const SeqRanges& in_batch) {
    SeqNo from = after + 1;
    const std::string upper = RecordKey(lane, committed_next);
    rocksdb::Slice upper_slice(upper);
    rocksdb::ReadOptions ro;
    ro.iterate_upper_bound = &upper_slice;
    while (from < committed_next) {
      std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, default_cf_));
      it->Seek(RecordKey(lane, from));
      if (!it->Valid()) {
        if (!it->status().ok()) return FromRocks(it->status(), absl::StrCat("spool lane ", lane));
        return committed_next;
      }
      const SeqNo seq = SeqFromKey(View(it->key()));
      const std::optional<SeqNo> deleted_to = in_batch.EndOfRangeHolding(seq);
      if (!deleted_to) return seq;
      from = *deleted_to + 1;
    }
    return committed_next;
  }

  // Writer thread. Keeps the ledgers within ledger_cap_ records in all: the
  // largest starts afresh (its older records are then counted by reading).
  void BoundLedgers() {
    size_t total = 0;
    for (const auto& [_, ledger] : ledgers_) total += ledger.entries();
    while (total > ledger_cap_) {
      auto largest = std::max_element(ledgers_.begin(), ledgers_.end(), [](const auto& a, const auto& b) {
        return a.second.entries() < b.second.entries();
      });
      total -= largest->second.entries();
      largest->second.Clear();
    }
  }

  // Counts the records of `lane` in [first, last] and their payload bytes
  // by reading them (what the ledger does not cover).
  absl::Status CountRecords(const std::string& lane, SeqNo first, SeqNo last, uint64_t* records, uint64_t* bytes) {
    const std::string end = RecordKey(lane, last + 1);
    rocksdb::Slice end_slice(end);
    rocksdb::ReadOptions ro;
    ro.iterate_upper_bound = &end_slice;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, default_cf_));
    for (it->Seek(RecordKey(lane, first)); it->Valid(); it->Next()) {
      ++*records;
      *bytes += it->value().size() - kEnvelopeHeader;
    }
    return it->status().ok() ? absl::OkStatus() : FromRocks(it->status(), "spool delete scan");
  }

  // Adds range deletes of what is left of [first, last] of `lane_name`
  // (records gone before, or earlier in this batch, are skipped) and
  // updates `lane`'s counters by the records they remove. `committed_next`:
  // the lane's next seq before this batch (records at or past it are this
  // batch's own appends, not visible yet: deleting them is refused).
  absl::Status AddDelete(const std::string& lane_name, SeqNo first, SeqNo last, SeqNo committed_next,
                         LaneStats* lane, rocksdb::WriteBatch* batch, uint64_t* total, SeqRanges* in_batch) {
    first = std::max(first, lane->deleted_up_to + 1);
    if (last < first) return absl::OkStatus();
    if (last >= committed_next) {
      return absl::InternalError(absl::StrCat("spool delete beyond the durable end of lane ", lane_name, ": ", last,
                                              " >= next seq ", committed_next));
    }
    uint64_t records = 0, bytes = 0;
    SizeLedger& ledger = ledgers_[lane_name];
    for (const auto& [a, b] : in_batch->Uncovered(first, last)) {
      if (!ledger.Count(a, b, &records, &bytes)) ZB_RETURN_IF_ERROR(CountRecords(lane_name, a, b, &records, &bytes));
      batch->DeleteRange(default_cf_, KeyAfterRecord(lane_name, a - 1), RecordKey(lane_name, b + 1));
    }
    in_batch->Add(first, last);
    lane->records -= std::min(lane->records, records);
    lane->bytes -= std::min(lane->bytes, bytes);
    *total -= std::min(*total, bytes);
    if (first == lane->deleted_up_to + 1) {
      // The lane's oldest records went: deleted_up_to passes over the gaps
      // earlier ranges left too.
      ZB_ASSIGN_OR_RETURN(const SeqNo next_live, NextLive(lane_name, last, committed_next, *in_batch));
      lane->deleted_up_to = next_live - 1;
    }
    return absl::OkStatus();
  }

  // Commits `batch` (with the given lane and dead-letter metas), if the
  // space guard lets a write of `kind` through, and publishes the new stats.
  absl::Status CommitSingle(rocksdb::WriteBatch* batch, const std::map<std::string, LaneStats>& lanes,
                            const DeadLetterMeta& dead, SpaceGuard::Write kind) {
    for (const auto& [name, s] : lanes) batch->Put(meta_cf_, MetaKey(name), EncodeLaneMeta(s));
    dead_store_.PutMeta(batch, dead);
    const uint64_t total_before = TotalBytes();
    ZB_RETURN_IF_ERROR(GuardedWrite(batch, kind, options_.sync));
    {
      absl::MutexLock lock(&stats_mu_);
      for (const auto& [name, st] : lanes) lanes_[name] = st;
      dead_store_.Published(dead);
    }
    if (TotalBytes() < total_before) {
      full_state_.NoteRecordsLeft();
      tidier_.Request();
    }
    watermark_dirty_ = true;
    MaybeWriteWatermark(false);
    return absl::OkStatus();
  }

  // Appends and deletes always go into a group (WriterLoop): reaching
  // these would drop a callback unanswered.
  void CommitAlone(AppendRequest&) { ZB_CHECK(!"an append committed alone"); }
  void CommitAlone(DeleteRequest&) { ZB_CHECK(!"a delete committed alone"); }
  void CommitAlone(AbortWaitingRequest& abort) { FailWaiting(absl::UnavailableError(abort.reason)); }

  void CommitAlone(DestinationRequest& op) {
    absl::Status status = RecoverFromLatchedError();
    if (status.ok()) {
      // A few bytes that grow nothing: held to the reserve, not to
      // min_free_bytes, so a daemon can start on a disk short of it.
      rocksdb::WriteBatch batch;
      batch.Put(meta_cf_, DestinationKey(op.lane), op.destination);
      status = GuardedWrite(&batch, SpaceGuard::Write::kKeep, options_.sync);
      if (status.ok()) {
        absl::MutexLock lock(&stats_mu_);
        destinations_[op.lane] = op.destination;
      }
    }
    if (op.done) op.done(status);
  }

  void CommitAlone(DeadLetterMoveRequest& op) {
    absl::Status status = RecoverFromLatchedError();
    if (status.ok()) status = CommitMoveToDeadLetters(op);
    if (op.done) op.done(status);
  }

  absl::Status CommitMoveToDeadLetters(const DeadLetterMoveRequest& op) {
    LaneStats lane;
    DeadLetterMeta dead;
    {
      absl::MutexLock lock(&stats_mu_);
      auto it = lanes_.find(op.lane);
      if (it != lanes_.end()) lane = it->second;
    }
    dead = dead_store_.Committed();
    const SeqNo seq = op.seq;
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
    int64_t append_time = 0;
    std::string payload;
    ZB_RETURN_IF_ERROR(DecodeRecordEnvelope(value, op.lane, seq, &append_time, &payload));
    rocksdb::WriteBatch batch;
    dead_store_.Add(&batch, &dead, op.lane, seq, op.info, append_time, payload, NowUs());
    batch.Delete(default_cf_, RecordKey(op.lane, seq));
    lane.records -= std::min<uint64_t>(lane.records, 1);
    lane.bytes -= std::min<uint64_t>(lane.bytes, payload.size());
    // Past the gaps later ranges may have left.
    ZB_ASSIGN_OR_RETURN(const SeqNo next_live, NextLive(op.lane, seq, lane.next_seq, {}));
    lane.deleted_up_to = next_live - 1;
    // The record leaves the lane as it enters the store: no growth.
    ZB_RETURN_IF_ERROR(CommitSingle(&batch, {{op.lane, lane}}, dead, SpaceGuard::Write::kKeep));
    ledgers_[op.lane].Gone(seq, seq);
    return absl::OkStatus();
  }

  void CommitAlone(DeadLetterReplayRequest& op) {
    std::map<std::string, AppendResult> appended;
    absl::Status status = RecoverFromLatchedError();
    while (status.ok()) {
      auto entries = dead_store_.List(op.filter, 0, kDeadLetterChunk);
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
      }
      dead = dead_store_.Committed();
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
        dead_store_.Remove(&batch, &dead, e);
      }
      status = CommitSingle(&batch, lanes, dead, SpaceGuard::Write::kGrow);
      if (status.ok()) {
        for (const auto& [lane, stats] : lanes) {
          ledgers_[lane].Clear();  // replays are rare: their records are counted by reading
          PublishDurable(lane, stats.next_seq - 1);
        }
      }
    }
    if (!op.done) return;
    if (status.ok()) op.done(std::move(appended));
    else op.done(status);
  }

  void CommitAlone(DeadLetterPurgeRequest& op) {
    uint64_t purged = 0;
    absl::Status status = RecoverFromLatchedError();
    while (status.ok()) {
      auto entries = dead_store_.List(op.filter, 0, kDeadLetterChunk);
      if (!entries.ok()) {
        status = entries.status();
        break;
      }
      if (entries->empty()) break;
      DeadLetterMeta dead = dead_store_.Committed();
      rocksdb::WriteBatch batch;
      for (const auto& e : *entries) dead_store_.Remove(&batch, &dead, e);
      status = CommitSingle(&batch, {}, dead, SpaceGuard::Write::kKeep);
      if (status.ok()) purged += entries->size();
    }
    if (!op.done) return;
    if (status.ok()) op.done(purged);
    else op.done(status);
  }

  // Declared first: released last, after RocksDB closed.
  std::unique_ptr<SpoolClaim> claim_;
  std::unique_ptr<rocksdb::DB> db_;
  rocksdb::ColumnFamilyHandle* default_cf_;
  rocksdb::ColumnFamilyHandle* dead_cf_;
  rocksdb::ColumnFamilyHandle* meta_cf_;  // lane metas and destinations
  DeadLetterStore dead_store_;  // shares this writer: its changes go into its batches
  RocksDbDeadLetters dead_letters_;  // dead_letters(): the interface to dead_store_
  const SpoolOptions options_;
  const SpaceGuard guard_;
  WriteQueue queue_{options_.max_group_bytes};  // the writer's inbox
  std::thread writer_;

  absl::Mutex watch_mu_;
  std::multimap<std::string, std::shared_ptr<Watcher>> watchers_ ABSL_GUARDED_BY(watch_mu_);

  absl::Mutex stats_mu_;
  std::map<std::string, LaneStats> lanes_ ABSL_GUARDED_BY(stats_mu_);
  std::map<std::string, std::string> destinations_ ABSL_GUARDED_BY(stats_mu_);
  // Whether the spool is full: the writer thread drives it, full() reads
  // it on any.
  FullState full_state_;

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
  std::map<std::string, SizeLedger> ledgers_;  // by lane: sizes of the newest records
  // At most a 64th of the memory budget in records, 4 bytes each: a
  // sixteenth of the budget in bytes (SpoolOptions::memory_budget).
  const size_t ledger_cap_ = std::max<uint64_t>(options_.memory_budget / 64, 4096);
  size_t batch_capacity_ = 0;
  std::deque<AppendRequest> waiting_;  // appends waiting for room, in arrival order
  struct HeldDelete {
    SeqNo last = 0;
    DeleteCallback done;
  };
  // Deletes waiting for space: by lane, disjoint ranges by first seq.
  std::map<std::string, std::map<SeqNo, HeldDelete>> held_deletes_;
  absl::Status latched_error_;
  std::chrono::steady_clock::time_point last_resume_;
  std::chrono::steady_clock::time_point last_flush_request_;
  std::chrono::steady_clock::time_point watermark_written_;
  bool watermark_dirty_ = true;

  // Gives deleted records' disk back on its own thread (spool/spool_tidy.h);
  // stopped first at close.
  SpoolTidier tidier_;

  // Serves ReadFromAsync and dead-letter lists; stopped before the writer.
  SerialWorker reader_{"zb-spool-read"};
};

}  // namespace

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
  const uint64_t reserve_bytes = 2 * tuning.memtable_bytes + 2 * tuning.dead_memtable_bytes + (1u << 20);
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
    ZB_RETURN_IF_ERROR(CheckWatermark(options.path, state.lanes, state.dead.next_id));
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
  ZB_RETURN_IF_ERROR(CheckWatermark(options.path, state.lanes, state.dead.next_id));
  if (state.metas_in_records) {
    // An older spool: its metas and destinations move to the meta family,
    // in one atomic write.
    rocksdb::WriteBatch move;
    for (const auto& [lane, stats] : state.lanes) move.Put(open.meta(), MetaKey(lane), EncodeLaneMeta(stats));
    for (const auto& [lane, dest] : state.destinations) move.Put(open.meta(), DestinationKey(lane), dest);
    move.DeleteRange(open.records(), "D", "E");
    move.DeleteRange(open.records(), "M", "N");
    rocksdb::WriteOptions sync;
    sync.sync = true;
    ZB_RETURN_IF_ERROR(FromRocks(open.db->Write(sync, &move), absl::StrCat("spool at ", options.path)));
    spdlog::info("spool {}: lane metadata moved to its own column family", options.path);
  }
  std::vector<rocksdb::ColumnFamilyHandle*> handles = open.Release();
  return std::unique_ptr<Spool>(new RocksDbSpool(std::move(claim), std::move(open.db), handles, options,
                                                 reserve_bytes, std::max<uint64_t>(tuning.memtable_bytes / 4, 1u << 20),
                                                 std::move(state.lanes),
                                                 std::move(state.destinations), state.dead));
}

}  // namespace zb
