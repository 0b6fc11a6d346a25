#pragma once
// A check that aborts the fuzz target with a message: libFuzzer records the
// input as a crash. Active whatever NDEBUG says (assert() is compiled out in
// RelWithDebInfo).

#include <cstdio>
#include <cstdlib>

#define ZB_FUZZ_CHECK(cond, ...)                                                \
  do {                                                                          \
    if (!(cond)) {                                                              \
      std::fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond); \
      std::fprintf(stderr, __VA_ARGS__);                                        \
      std::fputc('\n', stderr);                                                 \
      std::abort();                                                             \
    }                                                                           \
  } while (0)
