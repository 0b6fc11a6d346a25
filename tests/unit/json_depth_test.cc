// JsonNestingDepth: brackets inside strings do not count; escapes do not end
// strings; any input is fine.

#include "common/json_depth.h"

#include <random>
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

// The shortcut (too few opening brackets to nest that deep) answers as the
// exact pass does, at the limit and around it.
TEST(JsonNestsDeeperThanTest, AgreesWithTheExactDepth) {
  EXPECT_FALSE(JsonNestsDeeperThan("", 0));
  EXPECT_TRUE(JsonNestsDeeperThan("{}", 0));
  EXPECT_FALSE(JsonNestsDeeperThan(std::string(64, '[') + std::string(64, ']'), 64));
  EXPECT_TRUE(JsonNestsDeeperThan(std::string(65, '['), 64));
  EXPECT_TRUE(JsonNestsDeeperThan(std::string(10'000'000, '{'), 64));
  // 65 openers, but only 64 levels: the exact pass decides.
  EXPECT_FALSE(JsonNestsDeeperThan(std::string(64, '[') + std::string(64, ']') + "{}", 64));
  // Brackets in strings count for the shortcut, not for the depth.
  EXPECT_FALSE(JsonNestsDeeperThan(R"({"a":"[[[[[[[[[["})", 3));
  std::mt19937 random(7);
  const std::string alphabet = "{}[]\\\"a ";
  for (int i = 0; i < 20000; ++i) {
    std::string text(random() % 40, ' ');
    for (char& c : text) c = alphabet[random() % alphabet.size()];
    const size_t limit = random() % 8;
    EXPECT_EQ(JsonNestsDeeperThan(text, limit), JsonNestingDepth(text, limit) > limit) << text << " limit " << limit;
  }
}

}  // namespace
}  // namespace zb
