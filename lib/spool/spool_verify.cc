// zerobusctl spool verify: the whole spool read back, read-only, safe while
// a daemon runs on it (spool.h, VerifyRocksDbSpool).

#include <filesystem>
#include <map>
#include <optional>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "spool.pb.h"
#include "spool/rocksdb_store.h"
#include "spool/spool.h"
#include "spool/spool_dir.h"
#include "spool/spool_format.h"
#include "spool/watermark.h"

namespace zb {

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
  SpoolReport report;
  auto state = LoadState(open, path);
  if (!state.ok()) {
    report.problems.push_back(std::string(state.status().message()));
  } else if (absl::Status mark = CheckWatermark(path, state->lanes, state->dead.next_id); !mark.ok()) {
    report.problems.push_back(std::string(mark.message()));
  }
  rocksdb::Status checksums = db->VerifyChecksum();
  if (!checksums.ok()) report.problems.push_back(absl::StrCat("block checksums: ", checksums.ToString()));
  {
    std::map<std::string, SpoolReport::Lane> lanes;
    // Lane metas: in the meta family, or in the records' one (older spools).
    for (rocksdb::ColumnFamilyHandle* family : {open.records(), open.meta()}) {
      if (family == nullptr) continue;
      rocksdb::ReadOptions ro;
      ro.verify_checksums = true;
      std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(ro, family));
      for (it->Seek("M"); it->Valid() && it->key().starts_with("M"); it->Next()) {
        const std::string name = it->key().ToString().substr(1);
        auto& lane = lanes[name];
        lane.name = name;
        std::optional<LaneStats> meta = DecodeLaneMeta(View(it->value()));
        if (!meta) {
          report.problems.push_back(absl::StrCat("lane ", name, ": metadata has a bad size"));
          continue;
        }
        lane.meta = *meta;
      }
      if (!it->status().ok()) report.problems.push_back(absl::StrCat("reading metas: ", it->status().ToString()));
    }
    rocksdb::ReadOptions ro;
    ro.verify_checksums = true;
    std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(ro, open.records()));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      const rocksdb::Slice key = it->key();
      if (key.size() == 0) continue;
      if (key[0] == 'M') {
        continue;  // read above
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
            DecodeRecordEnvelope(View(it->value()), name, seq, &time_us, &payload);
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
  if (open.dead() != nullptr) {
    rocksdb::ReadOptions ro;
    ro.verify_checksums = true;
    std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(ro, open.dead()));
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

}  // namespace zb
