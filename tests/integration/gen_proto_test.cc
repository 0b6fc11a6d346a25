// `zerobusctl gen-proto` as an operator runs it: the .proto of a table from
// its Unity Catalog answer on stdout, every column that cannot be sent named
// on stderr, and clear errors for bad input.

#include <cstdlib>
#include <string>

#include "gtest/gtest.h"
#include "harness.h"
#include "schema/uc_schema.h"

namespace zb::testing {
namespace {

std::string Data(const std::string& name) { return std::string(ZEROBUSD_SOURCE_DIR) + "/tests/data/uc/" + name; }

RunResult GenProto(std::vector<std::string> args, const std::string& stdin_path = "") {
  args.insert(args.begin(), {BinDir() + "/zerobusctl", "gen-proto"});
  return RunCommand(args, std::chrono::seconds(30), stdin_path);
}

TEST(GenProtoTest, PrintsTheTablesProtoFromItsUnityCatalogAnswer) {
  const RunResult r = GenProto({"--from-json", Data("every_type.json")});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output, ReadFileOrEmpty(Data("every_type.proto")));
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
  EXPECT_NE(r.output.find("give either --from-json FILE or --config FILE TABLE"), std::string::npos) << r.output;
  r = GenProto({"--config", dir.Sub("x.yaml")});
  EXPECT_EQ(r.exit_code, 2) << "a config without a table";
  r = GenProto({"--from-json", Data("every_type.json"), "--config", dir.Sub("x.yaml"), "a.b.c"});
  EXPECT_EQ(r.exit_code, 2) << "both sources";
  r = GenProto({"--from-json", Data("every_type.json"), "--message", "9lives"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("not a proto message name"), std::string::npos) << r.output;
  r = GenProto({"--bogus"});
  EXPECT_EQ(r.exit_code, 2);
  // At the size limit: 8 MiB is read (and found not to be a table), one
  // byte more is refused for its size.
  WriteFile(dir.Sub("limit.json"), std::string(kMaxUcTableJsonBytes, ' '));
  r = GenProto({"--from-json", dir.Sub("limit.json")});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("is not JSON"), std::string::npos) << r.output.substr(0, 300);
  WriteFile(dir.Sub("huge.json"), std::string(kMaxUcTableJsonBytes + 1, ' '));
  r = GenProto({"--from-json", dir.Sub("huge.json")});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("more than the 8388608 it may be"), std::string::npos) << r.output.substr(0, 300);
}

// Online: the dev server serves Unity Catalog tables (--tables) to a
// metadata token only; gen-proto fetches with the config's credentials.
TEST(GenProtoTest, FetchesTheTableFromUnityCatalogWithTheConfigsCredentials) {
  TempDir dir;
  ASSERT_EQ(std::system(("mkdir -p " + dir.Sub("tables")).c_str()), 0);
  WriteFile(dir.Sub("tables/main.edge.every_type.json"), ReadFileOrEmpty(Data("every_type.json")));
  DevServer server(dir.path(), 0, 0, {"--tables", dir.Sub("tables")});
  ASSERT_TRUE(server.Start()) << server.log();
  Daemon daemon(dir.path(), DaemonOptions{.grpc_port = server.grpc_port(), .http_port = server.http_port()});
  daemon.WriteConfig();
  RunResult r = GenProto({"--config", daemon.config_path(), "main.edge.every_type"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output, ReadFileOrEmpty(Data("every_type.proto")));
  // A table Unity Catalog does not have, and a name that is no table name.
  r = GenProto({"--config", daemon.config_path(), "main.edge.missing"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("HTTP 404: Table 'main.edge.missing' does not exist."), std::string::npos) << r.output;
  r = GenProto({"--config", daemon.config_path(), "missing"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("must be catalog.schema.table"), std::string::npos) << r.output;
  // The wrong credentials say so, and never show the secret.
  std::string config = ReadFileOrEmpty(daemon.config_path());
  ASSERT_NE(config.find("dev-secret"), std::string::npos) << config;
  config.replace(config.find("dev-secret"), 10, "wrong-secret");
  WriteFile(dir.Sub("wrong.yaml"), config);
  r = GenProto({"--config", dir.Sub("wrong.yaml"), "main.edge.every_type"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("check zerobus.client_id and client_secret"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("wrong-secret"), std::string::npos) << r.output;
}

// The dev server, as Unity Catalog, reads only with a metadata token: a
// Zerobus ingest token (minted with resource) is refused, and a metadata
// token cannot open a stream.
TEST(GenProtoTest, TheDevServerKeepsMetadataAndIngestTokensApart) {
  TempDir dir;
  ASSERT_EQ(std::system(("mkdir -p " + dir.Sub("tables")).c_str()), 0);
  WriteFile(dir.Sub("tables/main.edge.t.json"), R"({"full_name":"main.edge.t","columns":[{"name":"a","type_text":"int"}]})");
  DevServer server(dir.path(), 0, 0, {"--tables", dir.Sub("tables")});
  ASSERT_TRUE(server.Start()) << server.log();
  auto token = [&](const std::string& form) {
    auto r = HttpRequest(server.http_port(), "POST", "/oidc/v1/token",
                         {"Content-Type: application/x-www-form-urlencoded", "Authorization: Basic ZGV2LWNsaWVudDpkZXYtc2VjcmV0"},
                         form);
    const size_t at = r.ok() ? r->body.find("\"access_token\":\"") : std::string::npos;
    if (at == std::string::npos) return std::string();
    const size_t start = at + 16;
    return r->body.substr(start, r->body.find('"', start) - start);
  };
  const std::string metadata = token("grant_type=client_credentials&scope=all-apis");
  ASSERT_FALSE(metadata.empty());
  const std::string ingest = token(
      "grant_type=client_credentials&scope=all-apis&resource=api%3A%2F%2Fdatabricks%2Fworkspaces%2F1%2F"
      "zerobusDirectWriteApi&authorization_details=%5B%7B%22type%22%3A%22unity_catalog_privileges%22%2C%22"
      "privileges%22%3A%5B%22USE%20CATALOG%22%5D%2C%22object_type%22%3A%22CATALOG%22%2C%22object_full_path%22%3A"
      "%22main%22%7D%2C%7B%22type%22%3A%22unity_catalog_privileges%22%2C%22privileges%22%3A%5B%22USE%20SCHEMA%22"
      "%5D%2C%22object_type%22%3A%22SCHEMA%22%2C%22object_full_path%22%3A%22main.edge%22%7D%2C%7B%22type%22%3A"
      "%22unity_catalog_privileges%22%2C%22privileges%22%3A%5B%22SELECT%22%2C%22MODIFY%22%5D%2C%22object_type"
      "%22%3A%22TABLE%22%2C%22object_full_path%22%3A%22main.edge.t%22%7D%5D");
  ASSERT_FALSE(ingest.empty());
  auto get = [&](const std::string& path, const std::string& bearer) {
    return HttpRequest(server.http_port(), "GET", path, {"Authorization: Bearer " + bearer}, "");
  };
  auto ok = get("/api/2.1/unity-catalog/tables/main.edge.t", metadata);
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(ok->status, 200);
  EXPECT_NE(ok->body.find("\"type_text\":\"int\""), std::string::npos);
  auto refused = get("/api/2.1/unity-catalog/tables/main.edge.t", ingest);
  ASSERT_TRUE(refused.ok());
  EXPECT_EQ(refused->status, 403);
  EXPECT_NE(refused->body.find("ingest token"), std::string::npos) << refused->body;
  EXPECT_EQ(get("/api/2.1/unity-catalog/tables/main.edge.t", "made-up")->status, 401);
  EXPECT_EQ(get("/api/2.1/unity-catalog/tables/main.edge.nope", metadata)->status, 404);
  // Nothing outside the folder: names that are no table names.
  const std::string too_long = "main.edge." + std::string(250, 't');  // 260 characters
  for (const std::string& bad : std::vector<std::string>{"../secret", "main.edge", "main..t", "a.b.c.d",
                                                         "main.edge.t%2F..%2F", too_long}) {
    auto r = get(std::string("/api/2.1/unity-catalog/tables/") + bad, metadata);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->status, 400) << bad;
  }
}

}  // namespace
}  // namespace zb::testing
