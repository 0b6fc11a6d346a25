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

void SeqRanges::Remove(SeqNo first, SeqNo last) {
  // The ranges that start at or before last and end at or after first go;
  // what they held outside [first, last] comes back.
  std::optional<std::pair<SeqNo, SeqNo>> below, above;
  auto it = ranges_.upper_bound(last);
  while (it != ranges_.begin()) {
    auto prev = std::prev(it);
    if (prev->second < first) break;
    if (prev->second > last) above.emplace(last + 1, prev->second);
    if (prev->first < first) below.emplace(prev->first, first - 1);
    it = ranges_.erase(prev);
  }
  if (below) ranges_[below->first] = below->second;
  if (above) ranges_[above->first] = above->second;
}

uint64_t SeqRanges::size() const {
  uint64_t n = 0;
  for (const auto& [first, last] : ranges_) n += last - first + 1;
  return n;
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
