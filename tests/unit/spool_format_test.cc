// The spool's on-disk format: round trips, key order and damage detection.

#include "spool/spool_format.h"

#include <string>

#include "gtest/gtest.h"

namespace zb {
namespace {

TEST(SpoolFormatTest, RecordKeysSortBySeqWithinALaneAndLanesDoNotMix) {
  // Bytewise order (the store's) is seq order, across byte boundaries.
  EXPECT_LT(RecordKey("a", 255), RecordKey("a", 256));
  EXPECT_LT(RecordKey("a", 1), RecordKey("a", uint64_t{1} << 40));
  // A lane named like another's prefix cannot interleave with it.
  EXPECT_LT(RecordKey("a", ~uint64_t{0}), RecordKey("ab", 1));
  EXPECT_EQ(RecordKey("a", 7).rfind(LanePrefix("a"), 0), 0u);
  EXPECT_NE(RecordKey("ab", 7).rfind(LanePrefix("a"), 0), 0u);
  for (SeqNo seq : {SeqNo{0}, SeqNo{1}, SeqNo{256}, ~SeqNo{0}}) {
    EXPECT_EQ(SeqFromKey(RecordKey("lane", seq)), seq);
    EXPECT_EQ(SeqFromKey(DeadLetterKey(seq)), seq);
  }
  EXPECT_NE(MetaKey("a"), DestinationKey("a"));
}

TEST(SpoolFormatTest, EnvelopeRoundTripsAndDamageIsDataLoss) {
  const std::string payload = std::string("{\"x\":1}") + std::string(1, '\0') + "tail";
  const std::string env = EncodeEnvelope(1'700'000'000'123'456, payload);
  EXPECT_EQ(env.size(), kEnvelopeHeader + payload.size());
  EXPECT_EQ(EnvelopePayloadSize(env.size()), payload.size());
  int64_t time_us = 0;
  std::string out;
  ASSERT_TRUE(DecodeEnvelope(env, "lane a seq 1", &time_us, &out).ok());
  EXPECT_EQ(time_us, 1'700'000'000'123'456);
  EXPECT_EQ(out, payload);
  // Any flipped bit is caught, in the header or the payload.
  for (size_t i = 0; i < env.size(); ++i) {
    std::string bad = env;
    bad[i] = static_cast<char>(bad[i] ^ 0x10);
    const absl::Status s = DecodeEnvelope(bad, "lane a seq 1", &time_us, &out);
    EXPECT_TRUE(absl::IsDataLoss(s)) << i;
  }
  const absl::Status truncated = DecodeEnvelope(env.substr(0, kEnvelopeHeader - 1), "lane a seq 9", &time_us, &out);
  EXPECT_TRUE(absl::IsDataLoss(truncated));
  EXPECT_NE(truncated.message().find("lane a seq 9: truncated"), absl::string_view::npos) << truncated;
  // The record form names its lane and seq the same way.
  const absl::Status damaged = DecodeRecordEnvelope(env.substr(0, env.size() - 1), "a", 9, &time_us, &out);
  EXPECT_TRUE(absl::IsDataLoss(damaged));
  EXPECT_NE(damaged.message().find("spool lane a seq 9: checksum mismatch"), absl::string_view::npos) << damaged;
  ASSERT_TRUE(DecodeRecordEnvelope(env, "a", 1, &time_us, &out).ok());
  EXPECT_EQ(out, payload);
  EXPECT_EQ(EnvelopePayloadSize(3), 0u);
  // An empty payload is a valid record.
  ASSERT_TRUE(DecodeEnvelope(EncodeEnvelope(-5, ""), "x", &time_us, &out).ok());
  EXPECT_EQ(time_us, -5);
  EXPECT_EQ(out, "");
}

TEST(SpoolFormatTest, MetasRoundTripAndAWrongSizeIsRefused) {
  LaneStats s;
  s.records = 3;
  s.bytes = uint64_t{1} << 40;
  s.next_seq = 1'000'001;
  s.deleted_up_to = 999'998;
  const std::optional<LaneStats> back = DecodeLaneMeta(EncodeLaneMeta(s));
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->records, s.records);
  EXPECT_EQ(back->bytes, s.bytes);
  EXPECT_EQ(back->next_seq, s.next_seq);
  EXPECT_EQ(back->deleted_up_to, s.deleted_up_to);
  EXPECT_FALSE(DecodeLaneMeta(EncodeLaneMeta(s) + "x").has_value());
  EXPECT_FALSE(DecodeLaneMeta("").has_value());

  DeadLetterMeta d{7, 700, 8};
  const std::optional<DeadLetterMeta> dead = DecodeDeadLetterMeta(EncodeDeadLetterMeta(d));
  ASSERT_TRUE(dead.has_value());
  EXPECT_EQ(dead->records, 7u);
  EXPECT_EQ(dead->bytes, 700u);
  EXPECT_EQ(dead->next_id, 8u);
  EXPECT_FALSE(DecodeDeadLetterMeta(EncodeLaneMeta(s)).has_value());
}

}  // namespace
TEST(SpoolFormatTest, LanePrefixSizeFindsARecordKeysLaneAndNothingElse) {
  for (const char* lane : {"a", "readings", "route-1_x"}) {
    for (SeqNo seq : {SeqNo{0}, SeqNo{1}, SeqNo{255}, SeqNo{256}, ~SeqNo{0}}) {
      const std::string key = RecordKey(lane, seq);
      EXPECT_EQ(LanePrefixSize(key), LanePrefix(lane).size()) << lane << " " << seq;
      EXPECT_EQ(key.substr(0, LanePrefixSize(key)), LanePrefix(lane));
    }
  }
  EXPECT_EQ(LanePrefixSize(MetaKey("readings")), 0u);
  EXPECT_EQ(LanePrefixSize(DestinationKey("readings")), 0u);
  EXPECT_EQ(LanePrefixSize(DeadLetterKey(7)), 0u);
  EXPECT_EQ(LanePrefixSize(""), 0u);
  EXPECT_EQ(LanePrefixSize("L"), 0u);
  std::string no_separator = RecordKey("readings", 9);
  no_separator[no_separator.size() - 9] = 'x';
  EXPECT_EQ(LanePrefixSize(no_separator), 0u);
}

TEST(SpoolFormatTest, SetRecordKeySeqMakesTheKeyOfThatSeqAndEnvelopeHeaderMatches) {
  std::string key = RecordKey("readings", 0);
  for (SeqNo seq : {SeqNo{1}, SeqNo{255}, SeqNo{256}, SeqNo{1} << 40, ~SeqNo{0}}) {
    SetRecordKeySeq(&key, seq);
    EXPECT_EQ(key, RecordKey("readings", seq));
  }
  for (const std::string& payload : {std::string(), std::string("x"), std::string(1000, 'p')}) {
    char header[kEnvelopeHeader];
    EncodeEnvelopeHeader(1234567, payload, header);
    EXPECT_EQ(std::string(header, kEnvelopeHeader) + payload, EncodeEnvelope(1234567, payload));
    int64_t time_us = 0;
    std::string back;
    ASSERT_TRUE(DecodeEnvelope(std::string(header, kEnvelopeHeader) + payload, "here", &time_us, &back).ok());
    EXPECT_EQ(back, payload);
    EXPECT_EQ(time_us, 1234567);
  }
}

TEST(SpoolFormatTest, KeyAfterRecordSortsBetweenTwoRecordsAndIsNoRecordKey) {
  for (SeqNo seq : {SeqNo{0}, SeqNo{1}, SeqNo{255}, SeqNo{256}, SeqNo{1} << 40, ~SeqNo{0} - 1}) {
    const std::string after = KeyAfterRecord("readings", seq);
    EXPECT_LT(RecordKey("readings", seq), after) << seq;
    EXPECT_LT(after, RecordKey("readings", seq + 1)) << seq;
    EXPECT_EQ(LanePrefixSize(after), 0u) << seq;
  }
}

}  // namespace zb
