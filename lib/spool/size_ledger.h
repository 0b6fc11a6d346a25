#pragma once
// The payload sizes of a lane's newest records, noted as they are appended,
// so that deleting an acknowledged range counts its records and bytes
// without reading them back (reading them back cost the spool's writer
// about a fifth of its time). What it does not cover (records from before a
// restart, or from before it last started afresh) the caller counts by
// reading them. About 4 bytes per record held; the spool bounds the total.
// Not thread-safe: the spool's writer thread owns it. RocksDB-free.

#include <cstddef>
#include <cstdint>
#include <deque>

#include "spool/spool.h"

namespace zb {

class SizeLedger {
 public:
  // Notes record `seq`, of `size` payload bytes. A seq that does not follow
  // the last one noted starts the ledger afresh at it.
  void Appended(SeqNo seq, uint32_t size);
  // Whether the ledger covers every seq of [first, last]; if so, adds the
  // records of it that are still there, and their bytes.
  bool Count(SeqNo first, SeqNo last, uint64_t* records, uint64_t* bytes) const;
  // The records of [first, last] are gone (seqs it does not cover are
  // ignored).
  void Gone(SeqNo first, SeqNo last);
  // Forgets everything; the next Appended starts afresh.
  void Clear();
  // Records noted (gone ones inside the covered span included).
  size_t entries() const { return sizes_.size(); }

 private:
  static constexpr uint32_t kGone = ~uint32_t{0};  // no record is 4 GiB
  SeqNo base_ = 0;              // seq of sizes_.front()
  std::deque<uint32_t> sizes_;  // by seq from base_; kGone: deleted
};

}  // namespace zb
