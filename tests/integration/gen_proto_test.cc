// `zerobusctl gen-proto` as an operator runs it: the .proto of a table from
// its Unity Catalog answer on stdout, every column that cannot be sent named
// on stderr, and clear errors for bad input.

#include <fstream>
#include <sstream>
#include <string>

#include "gtest/gtest.h"
#include "harness.h"

namespace zb::testing {
namespace {

std::string Data(const std::string& name) { return std::string(ZEROBUSD_SOURCE_DIR) + "/tests/data/uc/" + name; }

std::string Read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

RunResult GenProto(std::vector<std::string> args, const std::string& stdin_path = "") {
  args.insert(args.begin(), {BinDir() + "/zerobusctl", "gen-proto"});
  return RunCommand(args, std::chrono::seconds(30), stdin_path);
}

TEST(GenProtoTest, PrintsTheTablesProtoFromItsUnityCatalogAnswer) {
  const RunResult r = GenProto({"--from-json", Data("every_type.json")});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output, Read(Data("every_type.proto")));
  const RunResult named = GenProto({"--from-json", "-", "--message", "Reading"}, Data("every_type.json"));
  ASSERT_EQ(named.exit_code, 0) << named.output;
  EXPECT_NE(named.output.find("message Reading {"), std::string::npos) << named.output;
}

TEST(GenProtoTest, EveryColumnThatCannotBeSentIsNamedAndNothingIsPrinted) {
  const RunResult r = GenProto({"--from-json", Data("unsupported.json")});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("9 columns cannot be sent to Zerobus"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("syntax ="), std::string::npos) << "no half-made .proto";
}

TEST(GenProtoTest, BadInputGetsAClearError) {
  TempDir dir;
  WriteFile(dir.Sub("garbage.json"), "{\"columns\": [");
  RunResult r = GenProto({"--from-json", dir.Sub("garbage.json")});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("garbage.json: the table's description is not JSON"), std::string::npos) << r.output;
  r = GenProto({"--from-json", dir.Sub("missing.json")});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("cannot read"), std::string::npos) << r.output;
  r = GenProto({});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("--from-json FILE is required"), std::string::npos) << r.output;
  r = GenProto({"--from-json", Data("every_type.json"), "--message", "9lives"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("not a proto message name"), std::string::npos) << r.output;
  r = GenProto({"--bogus"});
  EXPECT_EQ(r.exit_code, 2);
}

}  // namespace
}  // namespace zb::testing
