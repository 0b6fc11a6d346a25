#pragma once
// The spool's on-disk format: keys and values, encoded and decoded in one
// place (as leveldb's dbformat does), independent of the store under them.
//
//  default column family
//   "L" <lane> 0x00 <seq: 8 bytes big-endian>  ->  record envelope
//   "M" <lane>                                  ->  lane meta (fixed64 LE x4)
//   "D" <lane>                                  ->  lane destination (opaque)
//  "dead_letters" column family
//   "E" <id: 8 bytes big-endian>                ->  zerobusd.spool.DeadLetter
//   "N"                                         ->  store meta (fixed64 LE x3)
// Envelope: crc32c(time|payload) u32 LE, append time i64 LE (unix µs), payload.
// Big-endian sequence numbers keep a lane's records in seq order under the
// store's bytewise key order. Pure functions; any thread.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "spool/spool.h"

namespace zb {

inline constexpr size_t kEnvelopeHeader = 4 + 8;
inline constexpr size_t kLaneMetaSize = 4 * 8;
inline constexpr size_t kDeadLetterMetaSize = 3 * 8;
inline constexpr char kDeadLetterMetaKey[] = "N";

// "L" <lane> 0x00: every record key of `lane` starts with it.
std::string LanePrefix(absl::string_view lane);
std::string RecordKey(absl::string_view lane, SeqNo seq);
// Makes `record_key` (a RecordKey) the key of `seq` of the same lane.
void SetRecordKeySeq(std::string* record_key, SeqNo seq);
// The length of `key`'s LanePrefix when it is a record key, else 0. A key
// is a record key when its first 0x00 (lane names hold none) is followed by
// exactly 8 bytes.
size_t LanePrefixSize(absl::string_view key);
// RecordKey(lane, seq) + 0x00: sorts after record `seq` and before record
// seq + 1, and is not a record key. A range delete of records (a, b] spans
// [KeyAfterRecord(a), RecordKey(b + 1)): its start key must lie outside
// LanePrefixSize's domain, since RocksDB 7.8 shares a prefix's memtable
// insert hint between point keys and range tombstones, and a range
// tombstone inside the domain corrupts the hint (rocksdb_spool.cc).
std::string KeyAfterRecord(absl::string_view lane, SeqNo seq);
// The sequence number (or dead-letter id) in the last 8 bytes of a record
// or dead-letter key. `key` must be at least 8 bytes long.
SeqNo SeqFromKey(absl::string_view key);
std::string MetaKey(absl::string_view lane);
std::string DestinationKey(absl::string_view lane);
std::string DeadLetterKey(uint64_t id);

std::string EncodeEnvelope(int64_t time_us, absl::string_view payload);
// The envelope's header alone (EncodeEnvelope = header + payload), for a
// writer that puts the two pieces into its batch without joining them.
void EncodeEnvelopeHeader(int64_t time_us, absl::string_view payload, char (&header)[kEnvelopeHeader]);
// Checks the checksum and unpacks; DataLossError naming `where` (e.g.
// "lane readings seq 12") when the envelope is truncated or damaged.
absl::Status DecodeEnvelope(absl::string_view value, absl::string_view where, int64_t* time_us, std::string* payload);
// DecodeEnvelope of record `seq` of `lane`, the error naming "lane <lane>
// seq <seq>": that text is made only for an error (the reader decodes every
// record it sends).
absl::Status DecodeRecordEnvelope(absl::string_view value, absl::string_view lane, SeqNo seq, int64_t* time_us,
                                  std::string* payload);
// The payload's size as the envelope holds it (0 for a truncated one).
inline size_t EnvelopePayloadSize(size_t value_size) {
  return value_size >= kEnvelopeHeader ? value_size - kEnvelopeHeader : 0;
}

std::string EncodeLaneMeta(const LaneStats& stats);
// nullopt when `value` is not a lane meta (wrong size).
std::optional<LaneStats> DecodeLaneMeta(absl::string_view value);

// The dead-letter store's totals and next id.
struct DeadLetterMeta {
  uint64_t records = 0;
  uint64_t bytes = 0;
  uint64_t next_id = 1;
};
std::string EncodeDeadLetterMeta(const DeadLetterMeta& meta);
std::optional<DeadLetterMeta> DecodeDeadLetterMeta(absl::string_view value);

}  // namespace zb
