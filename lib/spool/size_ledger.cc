#include "spool/size_ledger.h"

#include <algorithm>

namespace zb {

void SizeLedger::Appended(SeqNo seq, uint32_t size) {
  if (sizes_.empty() || seq != base_ + sizes_.size()) {
    sizes_.clear();
    base_ = seq;
  }
  sizes_.push_back(std::min(size, kGone - 1));
}

bool SizeLedger::Count(SeqNo first, SeqNo last, uint64_t* records, uint64_t* bytes) const {
  if (sizes_.empty() || first > last || first < base_ || last >= base_ + sizes_.size()) return false;
  for (SeqNo seq = first; seq <= last; ++seq) {
    const uint32_t size = sizes_[seq - base_];
    if (size == kGone) continue;
    ++*records;
    *bytes += size;
  }
  return true;
}

void SizeLedger::Gone(SeqNo first, SeqNo last) {
  if (sizes_.empty() || first > last) return;
  const SeqNo from = std::max(first, base_);
  const SeqNo to = std::min<SeqNo>(last, base_ + sizes_.size() - 1);
  for (SeqNo seq = from; seq <= to && from <= to; ++seq) sizes_[seq - base_] = kGone;
  while (!sizes_.empty() && sizes_.front() == kGone) {
    sizes_.pop_front();
    ++base_;
  }
}

void SizeLedger::Clear() {
  sizes_.clear();
  base_ = 0;
}

}  // namespace zb
