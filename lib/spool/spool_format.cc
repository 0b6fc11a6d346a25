#include "spool/spool_format.h"

#include <endian.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/crc32c.h"

namespace zb {
namespace {

void PutFixed64(std::string* out, uint64_t v) {
  const uint64_t le = htole64(v);
  out->append(reinterpret_cast<const char*>(&le), 8);
}

uint64_t GetFixed64(const char* p) {
  uint64_t le = 0;
  std::memcpy(&le, p, 8);
  return le64toh(le);
}

void PutBigEndian64(std::string* out, uint64_t v) {
  const uint64_t be = htobe64(v);
  out->append(reinterpret_cast<const char*>(&be), 8);
}

}  // namespace

std::string LanePrefix(absl::string_view lane) { return absl::StrCat("L", lane, std::string(1, '\0')); }

std::string RecordKey(absl::string_view lane, SeqNo seq) {
  std::string key = LanePrefix(lane);
  PutBigEndian64(&key, seq);
  return key;
}

void SetRecordKeySeq(std::string* record_key, SeqNo seq) {
  const uint64_t big = htobe64(seq);
  std::memcpy(record_key->data() + record_key->size() - 8, &big, 8);
}

size_t LanePrefixSize(absl::string_view key) {
  if (key.size() < 2 + 8 || key[0] != 'L') return 0;
  const size_t zero = key.find('\0');
  return zero == key.size() - 8 - 1 ? zero + 1 : 0;
}

std::string KeyAfterRecord(absl::string_view lane, SeqNo seq) {
  std::string key = RecordKey(lane, seq);
  key.push_back('\0');
  return key;
}

SeqNo SeqFromKey(absl::string_view key) {
  uint64_t be = 0;
  std::memcpy(&be, key.data() + key.size() - 8, 8);
  return be64toh(be);
}

std::string MetaKey(absl::string_view lane) { return absl::StrCat("M", lane); }

std::string DestinationKey(absl::string_view lane) { return absl::StrCat("D", lane); }

std::string DeadLetterKey(uint64_t id) {
  std::string key = "E";
  PutBigEndian64(&key, id);
  return key;
}

void EncodeEnvelopeHeader(int64_t time_us, absl::string_view payload, char (&header)[kEnvelopeHeader]) {
  const uint64_t t = htole64(static_cast<uint64_t>(time_us));
  std::memcpy(header + 4, &t, 8);
  const uint32_t crc = htole32(Crc32cExtend(Crc32c(header + 4, 8), payload.data(), payload.size()));
  std::memcpy(header, &crc, 4);
}

std::string EncodeEnvelope(int64_t time_us, absl::string_view payload) {
  char header[kEnvelopeHeader];
  EncodeEnvelopeHeader(time_us, payload, header);
  std::string v(header, kEnvelopeHeader);
  v.append(payload.data(), payload.size());
  return v;
}

namespace {

// What is wrong with envelope `value` (nullptr: nothing); unpacks it when
// sound.
const char* UnpackEnvelope(absl::string_view value, int64_t* time_us, std::string* payload) {
  if (value.size() < kEnvelopeHeader) return "truncated record";
  uint32_t crc = 0;
  std::memcpy(&crc, value.data(), 4);
  if (le32toh(crc) != Crc32c(value.data() + 4, value.size() - 4)) return "checksum mismatch";
  *time_us = static_cast<int64_t>(GetFixed64(value.data() + 4));
  payload->assign(value.data() + kEnvelopeHeader, value.size() - kEnvelopeHeader);
  return nullptr;
}

}  // namespace

absl::Status DecodeEnvelope(absl::string_view value, absl::string_view where, int64_t* time_us, std::string* payload) {
  const char* wrong = UnpackEnvelope(value, time_us, payload);
  if (wrong == nullptr) return absl::OkStatus();
  return absl::DataLossError(absl::StrCat("spool ", where, ": ", wrong));
}

absl::Status DecodeRecordEnvelope(absl::string_view value, absl::string_view lane, SeqNo seq, int64_t* time_us,
                                  std::string* payload) {
  const char* wrong = UnpackEnvelope(value, time_us, payload);
  if (wrong == nullptr) return absl::OkStatus();
  return absl::DataLossError(absl::StrCat("spool lane ", lane, " seq ", seq, ": ", wrong));
}

std::string EncodeLaneMeta(const LaneStats& s) {
  std::string v;
  PutFixed64(&v, s.records);
  PutFixed64(&v, s.bytes);
  PutFixed64(&v, s.next_seq);
  PutFixed64(&v, s.deleted_up_to);
  return v;
}

std::optional<LaneStats> DecodeLaneMeta(absl::string_view v) {
  if (v.size() != kLaneMetaSize) return std::nullopt;
  LaneStats s;
  s.records = GetFixed64(v.data());
  s.bytes = GetFixed64(v.data() + 8);
  s.next_seq = GetFixed64(v.data() + 16);
  s.deleted_up_to = GetFixed64(v.data() + 24);
  return s;
}

std::string EncodeDeadLetterMeta(const DeadLetterMeta& m) {
  std::string v;
  PutFixed64(&v, m.records);
  PutFixed64(&v, m.bytes);
  PutFixed64(&v, m.next_id);
  return v;
}

std::optional<DeadLetterMeta> DecodeDeadLetterMeta(absl::string_view v) {
  if (v.size() != kDeadLetterMetaSize) return std::nullopt;
  DeadLetterMeta m;
  m.records = GetFixed64(v.data());
  m.bytes = GetFixed64(v.data() + 8);
  m.next_id = GetFixed64(v.data() + 16);
  return m;
}

}  // namespace zb
