#include "spool/seq_ranges.h"

#include <algorithm>
#include <iterator>

namespace zb {

void SeqRanges::Add(SeqNo first, SeqNo last) {
  // Every range starting at or before last + 1 (no overflow at the top)
  // that ends at or after first - 1 joins it.
  auto it = ranges_.upper_bound(last == ~SeqNo{0} ? last : last + 1);
  while (it != ranges_.begin()) {
    auto prev = std::prev(it);
    if (first > 0 && prev->second < first - 1) break;  // ends before first - 1: apart
    first = std::min(first, prev->first);
    last = std::max(last, prev->second);
    it = ranges_.erase(prev);
  }
  ranges_[first] = last;
}

std::optional<SeqNo> SeqRanges::EndOfRangeHolding(SeqNo seq) const {
  auto it = ranges_.upper_bound(seq);
  if (it == ranges_.begin() || std::prev(it)->second < seq) return std::nullopt;
  return std::prev(it)->second;
}

std::vector<std::pair<SeqNo, SeqNo>> SeqRanges::Uncovered(SeqNo first, SeqNo last) const {
  std::vector<std::pair<SeqNo, SeqNo>> out;
  SeqNo from = first;
  auto it = ranges_.upper_bound(first);
  if (it != ranges_.begin() && std::prev(it)->second >= first) --it;
  for (; it != ranges_.end() && it->first <= last && from <= last; ++it) {
    if (it->first > from) out.emplace_back(from, it->first - 1);
    if (it->second >= last) return out;
    from = std::max(from, it->second + 1);
  }
  if (from <= last) out.emplace_back(from, last);
  return out;
}

}  // namespace zb
