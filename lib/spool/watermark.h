#pragma once
// The watermark: a small file beside the spool naming how far each lane
// (and the dead-letter store) had durably reached. An open that finds the
// spool holding less than its watermark says fails closed: RocksDB's
// MANIFEST or files lost committed data. RocksDB-free.

#include <cstdint>
#include <map>
#include <string>

#include "absl/status/status.h"
#include "spool/spool.h"

namespace zb {

inline constexpr char kWatermarkFile[] = "ZEROBUSD-WATERMARK";

// Replaces <spool_path>/ZEROBUSD-WATERMARK atomically (written, fsync'd,
// renamed, folder fsync'd), mode 0600. False when any step failed (the old
// file then stays).
bool WriteWatermark(const std::string& spool_path, const std::map<std::string, SeqNo>& lane_next_seq,
                    uint64_t dead_letter_next_id, int64_t written_us);

// Ok when the spool (its lanes' next seqs and the dead-letter store's next
// id) holds at least what the watermark says, or there is no watermark; a
// DataLossError naming what was lost otherwise.
absl::Status CheckWatermark(const std::string& spool_path, const std::map<std::string, LaneStats>& lanes,
                            uint64_t dead_letter_next_id);

}  // namespace zb
