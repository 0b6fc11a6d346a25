#pragma once
// Parses human byte sizes used in config: "10GiB", "512MiB", "64KiB", "1000",
// "1.5GB" (SI), case-insensitive units B, KB, MB, GB, TB, KiB, MiB, GiB, TiB.

#include <cstdint>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"

namespace zb {

absl::StatusOr<uint64_t> ParseByteSize(absl::string_view text);

}  // namespace zb
