// The writer's ledger of record sizes: it counts exactly what it covers,
// says when it does not, and forgets what is gone.

#include "spool/size_ledger.h"

#include "gtest/gtest.h"

namespace zb {
namespace {

TEST(SizeLedgerTest, CountsWhatItCoversAndNothingElse) {
  SizeLedger ledger;
  uint64_t records = 0, bytes = 0;
  EXPECT_FALSE(ledger.Count(1, 1, &records, &bytes)) << "empty";
  for (SeqNo seq = 10; seq <= 19; ++seq) ledger.Appended(seq, static_cast<uint32_t>(seq));
  ASSERT_TRUE(ledger.Count(10, 19, &records, &bytes));
  EXPECT_EQ(records, 10u);
  EXPECT_EQ(bytes, 145u);
  records = bytes = 0;
  EXPECT_FALSE(ledger.Count(9, 12, &records, &bytes)) << "starts before it";
  EXPECT_FALSE(ledger.Count(18, 20, &records, &bytes)) << "ends after it";
  EXPECT_EQ(records, 0u);
  EXPECT_EQ(bytes, 0u);
}

TEST(SizeLedgerTest, GoneRecordsAreNotCountedAgainAndTheFrontIsForgotten) {
  SizeLedger ledger;
  for (SeqNo seq = 1; seq <= 10; ++seq) ledger.Appended(seq, 100);
  ledger.Gone(4, 6);  // out of order
  uint64_t records = 0, bytes = 0;
  ASSERT_TRUE(ledger.Count(1, 10, &records, &bytes));
  EXPECT_EQ(records, 7u);
  EXPECT_EQ(bytes, 700u);
  EXPECT_EQ(ledger.entries(), 10u);
  ledger.Gone(1, 3);  // the front: 1..6 are gone and forgotten
  EXPECT_EQ(ledger.entries(), 4u);
  records = bytes = 0;
  EXPECT_FALSE(ledger.Count(5, 10, &records, &bytes)) << "5 is forgotten";
  ASSERT_TRUE(ledger.Count(7, 10, &records, &bytes));
  EXPECT_EQ(records, 4u);
  ledger.Gone(0, 100);  // beyond both ends: what it covers goes
  EXPECT_EQ(ledger.entries(), 0u);
}

TEST(SizeLedgerTest, AGapInTheSeqsStartsItAfreshAndClearForgetsAll) {
  SizeLedger ledger;
  for (SeqNo seq = 1; seq <= 5; ++seq) ledger.Appended(seq, 1);
  ledger.Appended(9, 7);  // 6..8 were never noted
  uint64_t records = 0, bytes = 0;
  EXPECT_FALSE(ledger.Count(1, 5, &records, &bytes));
  ASSERT_TRUE(ledger.Count(9, 9, &records, &bytes));
  EXPECT_EQ(bytes, 7u);
  ledger.Clear();
  EXPECT_EQ(ledger.entries(), 0u);
  EXPECT_FALSE(ledger.Count(9, 9, &records, &bytes));
  ledger.Appended(3, 2);
  EXPECT_TRUE(ledger.Count(3, 3, &records, &bytes));
}

}  // namespace
}  // namespace zb
