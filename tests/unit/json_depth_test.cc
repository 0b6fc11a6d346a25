// JsonNestingDepth: brackets inside strings do not count; escapes do not end
// strings; any input is fine.

#include "common/json_depth.h"

#include <string>

#include "gtest/gtest.h"

namespace zb {
namespace {

TEST(JsonNestingDepthTest, CountsObjectsAndArraysOutsideStrings) {
  EXPECT_EQ(JsonNestingDepth("", 10), 0u);
  EXPECT_EQ(JsonNestingDepth("42", 10), 0u);
  EXPECT_EQ(JsonNestingDepth("{}", 10), 1u);
  EXPECT_EQ(JsonNestingDepth(R"({"a":[1,{"b":[]}]})", 10), 4u);
  EXPECT_EQ(JsonNestingDepth(R"({"a":"[[[[{{{{"})", 10), 1u);
  EXPECT_EQ(JsonNestingDepth(R"({"a":"\"[[[["})", 10), 1u);
  EXPECT_EQ(JsonNestingDepth(R"({"a":"\\"}[[)", 10), 2u);  // the string ends after "\\"
}

TEST(JsonNestingDepthTest, StopsPastTheLimitOnHostileInput) {
  const std::string deep(10'000'000, '[');
  EXPECT_EQ(JsonNestingDepth(deep, 64), 65u);
  EXPECT_EQ(JsonNestingDepth(std::string(64, '[') + std::string(64, ']'), 64), 64u);
  EXPECT_EQ(JsonNestingDepth("]]]]}}}}{", 64), 1u);  // unbalanced closers do not go negative
  EXPECT_EQ(JsonNestingDepth("\"\\", 64), 0u);        // an escape at the very end
}

}  // namespace
}  // namespace zb
