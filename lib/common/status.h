#pragma once
// Status helpers shared by every module. Modules return absl::Status /
// absl::StatusOr across their boundaries; no exception crosses one.

#include <cstdio>
#include <cstdlib>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

// Returns from the enclosing function if `expr` (an absl::Status) is not ok.
#define ZB_RETURN_IF_ERROR(expr)                  \
  do {                                            \
    ::absl::Status zb_status_ = (expr);           \
    if (!zb_status_.ok()) return zb_status_;      \
  } while (0)

#define ZB_CONCAT_INNER_(a, b) a##b
#define ZB_CONCAT_(a, b) ZB_CONCAT_INNER_(a, b)
// Declares `lhs` from a StatusOr, or returns its error.
#define ZB_ASSIGN_OR_RETURN(lhs, expr) \
  ZB_ASSIGN_OR_RETURN_IMPL_(ZB_CONCAT_(zb_statusor_, __LINE__), lhs, expr)
#define ZB_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                              \
  if (!tmp.ok()) return tmp.status();             \
  lhs = std::move(tmp).value()

// A broken invariant: "should never happen" after start-up. Logs and aborts so
// systemd restarts the daemon from the durable spool (Envoy's RELEASE_ASSERT).
#define ZB_CHECK(cond)                                                        \
  do {                                                                        \
    if (!(cond)) {                                                            \
      std::fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, \
                   #cond);                                                    \
      std::abort();                                                           \
    }                                                                         \
  } while (0)
