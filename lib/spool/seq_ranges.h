#pragma once
// A set of sequence numbers kept as disjoint, inclusive ranges: what a batch
// being built deletes from one lane. Its tombstones are not visible to
// iterators until it commits, so later deletes of the same batch ask this
// instead, and must not count those records again. Not thread-safe.

#include <map>
#include <optional>
#include <utility>
#include <vector>

#include "spool/spool.h"

namespace zb {

class SeqRanges {
 public:
  // Adds [first, last] (REQUIRES first <= last); ranges that overlap or
  // touch it become one.
  void Add(SeqNo first, SeqNo last);

  // Takes [first, last] (REQUIRES first <= last) out of every range; a range
  // it splits becomes two.
  void Remove(SeqNo first, SeqNo last);

  // The last seq of the range holding `seq`, if one does.
  std::optional<SeqNo> EndOfRangeHolding(SeqNo seq) const;
  bool Contains(SeqNo seq) const { return EndOfRangeHolding(seq).has_value(); }

  // The parts of [first, last] no range covers, in order.
  std::vector<std::pair<SeqNo, SeqNo>> Uncovered(SeqNo first, SeqNo last) const;

  bool empty() const { return ranges_.empty(); }
  // How many seqs the ranges hold.
  uint64_t size() const;

  // first -> last, in order.
  const std::map<SeqNo, SeqNo>& ranges() const { return ranges_; }

 private:
  std::map<SeqNo, SeqNo> ranges_;
};

}  // namespace zb
