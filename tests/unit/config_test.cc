// Config loading: every key parsed into the typed config, defaults, and every
// class of problem reported with its key path (and file:line), all at once,
// without leaking secrets and without exceptions.

#include "config/config.h"

#include <sys/stat.h>

#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testutil.h"

namespace zb {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;
using ::zb::testing::TempDir;
using ::zb::testing::WriteFile;

// A config assembled from sections, so a test replaces just the section it is
// about. Each section is complete YAML text ending in a newline.
struct Yaml {
  std::string zerobus =
      "zerobus:\n"
      "  endpoint: \"https://1234567890.zerobus.us-west-2.cloud.databricks.com\"\n"
      "  workspace_url: \"https://example.cloud.databricks.com\"\n"
      "  client_id: \"the-client\"\n"
      "  client_secret: \"TOPSECRET-inline\"\n";
  std::string spool;
  std::string intake;
  std::string metrics;
  std::string control;
  std::string drain;
  std::string extra;  // top-level scalars or unknown keys
  std::string routes =
      "routes:\n"
      "  - name: readings\n"
      "    table: main.edge.readings\n";

  std::string str() const { return absl::StrCat(zerobus, spool, intake, metrics, control, drain, extra, routes); }
};

// Saves $CREDENTIALS_DIRECTORY and clears it, so the machine's environment
// cannot change what these tests see; restores it afterwards.
class ConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (const char* v = std::getenv("CREDENTIALS_DIRECTORY")) saved_creds_ = v;
    unsetenv("CREDENTIALS_DIRECTORY");
  }
  void TearDown() override {
    if (saved_creds_) {
      setenv("CREDENTIALS_DIRECTORY", saved_creds_->c_str(), 1);
    } else {
      unsetenv("CREDENTIALS_DIRECTORY");
    }
  }

  static absl::StatusOr<DaemonConfig> Load(const std::string& yaml) { return LoadConfigString(yaml, "test.yaml"); }
  static absl::StatusOr<DaemonConfig> Load(const Yaml& yaml) { return Load(yaml.str()); }

  // The error message, failing the test when loading succeeded or failed
  // with another code.
  static std::string Error(const absl::StatusOr<DaemonConfig>& result) {
    EXPECT_FALSE(result.ok()) << "expected a config error";
    if (result.ok()) return "";
    EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument) << result.status();
    return std::string(result.status().message());
  }
  static std::vector<std::string> Lines(const std::string& message) {
    return absl::StrSplit(message, '\n', absl::SkipEmpty());
  }

  std::optional<std::string> saved_creds_;
};

TEST_F(ConfigTest, LoadsEveryKey) {
  TempDir dir;
  WriteFile(dir.Sub("reading.proto"), "syntax = \"proto2\"; message Reading { optional int64 ts = 1; }\n");
  WriteFile(dir.Sub("ca.pem"), "-----BEGIN CERTIFICATE-----\n");
  const std::string yaml = absl::StrCat(R"(zerobus:
  endpoint: "https://1234567890.zerobus.us-west-2.cloud.databricks.com"
  workspace_url: "https://example.cloud.databricks.com/"
  workspace_id: "987"
  tls: true
  ca_file: )",
                                        dir.Sub("ca.pem"), R"(
  client_id: "the-client"
  client_secret: "TOPSECRET-inline"
spool:
  path: /var/lib/zb/spool
  max_bytes: 2GiB
  min_free_bytes: 64MiB
  memory_budget: 12MiB
  when_full: drop_oldest
  sync: none
intake:
  socket: /run/zb/zb.sock
  socket_group: "0"
  socket_mode: "0640"
  max_record_bytes: 512KiB
  max_inflight_bytes: 4MiB
  max_buffered_bytes: 64MiB
  max_connections: 16
  max_json_depth: 20
  read_timeout_ms: 5000
  idle_timeout_ms: 0
metrics:
  listen: "0.0.0.0:9000"
drain:
  max_inflight_requests: 8
  max_batch_records: 500
  max_batch_bytes: 1MiB
  linger_ms: 20
  ack_timeout_ms: 30000
  create_timeout_ms: 5000
  backoff_initial_ms: 100
  backoff_max_ms: 10000
shutdown_timeout_ms: 2500
log_level: debug
routes:
  - name: readings
    table: main.edge.readings
    format: json
    allow:
      uids: [1000, 1001]
      gids: [100]
  - name: events_v2
    table: cat.sch.tbl_2
    format: proto
    schema:
      proto_file: )",
                                        dir.Sub("reading.proto"), R"(
      message: acme.edge.Reading
    drain:
      max_inflight_requests: 2
      backoff_max_ms: 60000
)");
  auto config = Load(yaml);
  ASSERT_TRUE(config.ok()) << config.status();
  const ZerobusConfig& zb = config->zerobus;
  EXPECT_EQ(zb.endpoint, "https://1234567890.zerobus.us-west-2.cloud.databricks.com");
  EXPECT_EQ(zb.workspace_url, "https://example.cloud.databricks.com");  // trailing slash dropped
  EXPECT_EQ(zb.workspace_id, "987");
  EXPECT_TRUE(zb.tls);
  EXPECT_EQ(zb.ca_file, dir.Sub("ca.pem"));
  EXPECT_EQ(zb.client_id, "the-client");
  EXPECT_EQ(zb.client_secret, "TOPSECRET-inline");

  EXPECT_EQ(config->spool.path, "/var/lib/zb/spool");
  EXPECT_EQ(config->spool.max_bytes, 2ull << 30);
  EXPECT_EQ(config->spool.min_free_bytes, 64ull << 20);
  EXPECT_EQ(config->spool.memory_budget, 12ull << 20);
  EXPECT_EQ(config->spool.when_full, WhenFull::kDropOldest);
  EXPECT_EQ(config->spool.sync, SyncPolicy::kNone);

  EXPECT_EQ(config->intake.socket, "/run/zb/zb.sock");
  EXPECT_EQ(config->intake.socket_mode, 0640u);
  EXPECT_EQ(config->intake.socket_group, "0");
  EXPECT_EQ(config->intake.socket_gid, 0);
  EXPECT_EQ(config->intake.max_record_bytes, 512u << 10);
  EXPECT_EQ(config->intake.max_inflight_bytes, 4u << 20);
  EXPECT_EQ(config->intake.max_buffered_bytes, 64u << 20);
  EXPECT_EQ(config->intake.max_connections, 16u);
  EXPECT_EQ(config->intake.max_json_depth, 20u);
  EXPECT_EQ(config->intake.read_timeout_ms, 5000u);
  EXPECT_EQ(config->intake.idle_timeout_ms, 0u);
  EXPECT_EQ(config->metrics.listen, "0.0.0.0:9000");
  EXPECT_EQ(config->shutdown_timeout_ms, 2500u);
  EXPECT_EQ(config->log_level, "debug");

  ASSERT_EQ(config->routes.size(), 2u);
  const RouteConfig& r0 = config->routes[0];
  EXPECT_EQ(r0.name, "readings");
  EXPECT_EQ(r0.table, "main.edge.readings");
  EXPECT_EQ(r0.format, RecordFormat::kJson);
  EXPECT_EQ(r0.allow_uids, (std::vector<uint32_t>{1000, 1001}));
  EXPECT_EQ(r0.allow_gids, (std::vector<uint32_t>{100}));
  EXPECT_EQ(r0.drain.max_inflight_requests, 8u);
  EXPECT_EQ(r0.drain.max_batch_records, 500u);
  EXPECT_EQ(r0.drain.max_batch_bytes, 1u << 20);
  EXPECT_EQ(r0.drain.linger_ms, 20u);
  EXPECT_EQ(r0.drain.ack_timeout_ms, 30000u);
  EXPECT_EQ(r0.drain.create_timeout_ms, 5000u);
  EXPECT_EQ(r0.drain.backoff_initial_ms, 100u);
  EXPECT_EQ(r0.drain.backoff_max_ms, 10000u);

  const RouteConfig& r1 = config->routes[1];
  EXPECT_EQ(r1.name, "events_v2");
  EXPECT_EQ(r1.table, "cat.sch.tbl_2");
  EXPECT_EQ(r1.format, RecordFormat::kProto);
  EXPECT_EQ(r1.proto_file, dir.Sub("reading.proto"));
  EXPECT_EQ(r1.message, "acme.edge.Reading");
  EXPECT_TRUE(r1.allow_uids.empty());
  // Route overrides on top of the top-level drain section.
  EXPECT_EQ(r1.drain.max_inflight_requests, 2u);
  EXPECT_EQ(r1.drain.backoff_max_ms, 60000u);
  EXPECT_EQ(r1.drain.max_batch_records, 500u);
  EXPECT_EQ(r1.drain.linger_ms, 20u);

  EXPECT_EQ(config->FindRoute("events_v2"), &config->routes[1]);
  EXPECT_EQ(config->FindRoute("readings"), &config->routes[0]);
  EXPECT_EQ(config->FindRoute("nope"), nullptr);
}

TEST_F(ConfigTest, MinimalConfigGetsDefaults) {
  auto config = Load(Yaml{});
  ASSERT_TRUE(config.ok()) << config.status();
  const DaemonConfig defaults;
  EXPECT_EQ(config->zerobus.workspace_id, "1234567890");  // first label of the endpoint host
  EXPECT_TRUE(config->zerobus.tls);
  EXPECT_TRUE(config->zerobus.ca_file.empty());
  EXPECT_EQ(config->spool.path, "/var/lib/zerobusd/spool");
  EXPECT_EQ(config->spool.max_bytes, 10ull << 30);
  EXPECT_EQ(config->spool.min_free_bytes, 256ull << 20);
  EXPECT_EQ(config->spool.memory_budget, 32ull << 20);
  EXPECT_EQ(config->spool.when_full, WhenFull::kBlock);
  EXPECT_EQ(config->spool.sync, SyncPolicy::kAlways);
  EXPECT_EQ(config->intake.socket, "/run/zerobusd/zerobusd.sock");
  // No producers' group: only the daemon's user (and root) may connect.
  EXPECT_EQ(config->intake.socket_mode, 0600u);
  EXPECT_TRUE(config->intake.socket_group.empty());
  EXPECT_EQ(config->intake.socket_gid, -1);
  EXPECT_EQ(config->intake.max_record_bytes, 1u << 20);
  EXPECT_EQ(config->intake.max_inflight_bytes, 2u << 20);
  EXPECT_EQ(config->intake.max_buffered_bytes, 128u << 20);
  EXPECT_EQ(config->intake.max_connections, 1024u);
  EXPECT_EQ(config->intake.max_json_depth, 64u);
  EXPECT_EQ(config->intake.read_timeout_ms, 30000u);
  EXPECT_EQ(config->intake.idle_timeout_ms, 600000u);
  EXPECT_EQ(config->control.socket_mode, 0600u);
  EXPECT_EQ(config->metrics.listen, "127.0.0.1:9464");
  EXPECT_EQ(config->shutdown_timeout_ms, 10000u);
  EXPECT_EQ(config->log_level, "info");
  ASSERT_EQ(config->routes.size(), 1u);
  const RouteConfig& r = config->routes[0];
  EXPECT_EQ(r.format, RecordFormat::kJson);
  EXPECT_TRUE(r.proto_file.empty());
  EXPECT_TRUE(r.allow_uids.empty());
  EXPECT_TRUE(r.allow_gids.empty());
  const DrainConfig d;
  EXPECT_EQ(r.drain.max_inflight_requests, d.max_inflight_requests);
  EXPECT_EQ(r.drain.max_batch_records, d.max_batch_records);
  EXPECT_EQ(r.drain.max_batch_bytes, d.max_batch_bytes);
  EXPECT_EQ(r.drain.linger_ms, d.linger_ms);
  EXPECT_EQ(r.drain.ack_timeout_ms, d.ack_timeout_ms);
  EXPECT_EQ(r.drain.create_timeout_ms, d.create_timeout_ms);
  EXPECT_EQ(r.drain.backoff_initial_ms, d.backoff_initial_ms);
  EXPECT_EQ(r.drain.backoff_max_ms, d.backoff_max_ms);
}

TEST_F(ConfigTest, EachRequiredKeyMissing) {
  struct Case {
    std::string find, replace, expected;
  };
  const std::vector<Case> cases = {
      {"  endpoint: \"https://1234567890.zerobus.us-west-2.cloud.databricks.com\"\n", "", "zerobus.endpoint: required"},
      {"  workspace_url: \"https://example.cloud.databricks.com\"\n", "", "zerobus.workspace_url: required"},
      {"  client_id: \"the-client\"\n", "", "zerobus.client_id: required"},
      {"  client_secret: \"TOPSECRET-inline\"\n", "", "zerobus.client_secret: required"},
      {"    table: main.edge.readings\n", "", "routes[0].table: required"},
      {"  - name: readings\n    table", "  - table", "routes[0].name: required"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.expected);
    const std::string yaml = absl::StrReplaceAll(Yaml{}.str(), {{c.find, c.replace}});
    ASSERT_NE(yaml, Yaml{}.str());
    EXPECT_THAT(Error(Load(yaml)), HasSubstr(c.expected));
  }

  Yaml no_zerobus;
  no_zerobus.zerobus = "";
  EXPECT_THAT(Error(Load(no_zerobus)), HasSubstr("test.yaml: zerobus: required"));
  Yaml no_routes;
  no_routes.routes = "";
  EXPECT_THAT(Error(Load(no_routes)), HasSubstr("routes: required: at least one route"));
  Yaml empty_routes;
  empty_routes.routes = "routes: []\n";
  EXPECT_THAT(Error(Load(empty_routes)), HasSubstr("routes: required: at least one route"));
}

TEST_F(ConfigTest, BadEnumValues) {
  struct Case {
    Yaml yaml;
    std::string expected;
  };
  std::vector<Case> cases(5);
  cases[0].yaml.spool = "spool:\n  when_full: drop\n";
  cases[0].expected = "spool.when_full: must be one of block, reject, drop_oldest, got \"drop\"";
  cases[1].yaml.spool = "spool:\n  sync: sometimes\n";
  cases[1].expected = "spool.sync: must be one of always, none, got \"sometimes\"";
  cases[2].yaml.extra = "log_level: verbose\n";
  cases[2].expected = "log_level: must be one of trace, debug, info, warn, error, got \"verbose\"";
  cases[3].yaml.routes = "routes:\n  - name: a\n    table: a.b.c\n    format: avro\n";
  cases[3].expected = "routes[0].format: must be one of json, proto, got \"avro\"";
  cases[4].yaml.zerobus = absl::StrReplaceAll(Yaml{}.zerobus, {{"  client_id", "  tls: maybe\n  client_id"}});
  cases[4].expected = "zerobus.tls: must be true or false, got \"maybe\"";
  for (const Case& c : cases) {
    SCOPED_TRACE(c.expected);
    EXPECT_THAT(Error(Load(c.yaml)), HasSubstr(c.expected));
  }
}

TEST_F(ConfigTest, UnknownKeysAtEveryLevel) {
  TempDir dir;
  WriteFile(dir.Sub("r.proto"), "syntax = \"proto3\";\n");
  Yaml y;
  y.zerobus += "  colour: blue\n";
  y.spool = "spool:\n  size: 1GiB\n";
  y.intake = "intake:\n  backlog: 5\n";
  y.metrics = "metrics:\n  port: 9464\n";
  y.drain = "drain:\n  linger: 5\n";
  y.extra = "colour: red\n";
  y.routes = absl::StrCat(
      "routes:\n"
      "  - name: a\n"
      "    table: a.b.c\n"
      "    tabel: x\n"
      "    allow:\n"
      "      users: [1]\n"
      "    drain:\n"
      "      lingerms: 1\n"
      "  - name: b\n"
      "    table: a.b.d\n"
      "    format: proto\n"
      "    schema:\n"
      "      proto_file: ",
      dir.Sub("r.proto"),
      "\n"
      "      message: M\n"
      "      package: x\n");
  const std::string message = Error(Load(y));
  for (const char* expected : {"zerobus.colour: unknown key", "spool.size: unknown key", "intake.backlog: unknown key",
                               "metrics.port: unknown key", "drain.linger: unknown key", "colour: unknown key",
                               "routes[0].tabel: unknown key", "routes[0].allow.users: unknown key",
                               "routes[0].drain.lingerms: unknown key", "routes[1].schema.package: unknown key"}) {
    EXPECT_THAT(message, HasSubstr(expected));
  }
  EXPECT_EQ(Lines(message).size(), 10u) << message;
  // The message helps with typos by listing what is allowed.
  EXPECT_THAT(message, HasSubstr("spool.size: unknown key (expected one of: path, max_bytes"));
}

TEST_F(ConfigTest, DuplicateKeysAreErrors) {
  Yaml y;
  y.spool = "spool:\n  path: /a\n  path: /b\n";
  EXPECT_THAT(Error(Load(y)), HasSubstr("test.yaml:8: spool.path: duplicate key (first at line 7)"));
}

TEST_F(ConfigTest, TheFreeSpaceGuardCannotBeTurnedOff) {
  Yaml y;
  y.spool = "spool:\n  min_free_bytes: 0\n";
  EXPECT_THAT(Error(Load(y)), HasSubstr("spool.min_free_bytes"));
  y.spool = "spool:\n  min_free_bytes: 1MiB\n";
  EXPECT_THAT(Error(Load(y)), HasSubstr("spool.min_free_bytes"));
}

TEST_F(ConfigTest, ByteSizes) {
  Yaml y;
  y.spool = "spool:\n  max_bytes: 1.5GB\n  min_free_bytes: 16MiB\n";
  y.intake = "intake:\n  max_record_bytes: 1048576\n  max_inflight_bytes: 64mib\n";
  y.drain = "drain:\n  max_batch_bytes: 1KiB\n";
  auto config = Load(y);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->spool.max_bytes, 1'500'000'000u);
  EXPECT_EQ(config->spool.min_free_bytes, 16u << 20);
  EXPECT_EQ(config->intake.max_record_bytes, 1u << 20);
  EXPECT_EQ(config->intake.max_inflight_bytes, 64u << 20);
  EXPECT_EQ(config->routes[0].drain.max_batch_bytes, 1024u);

  // The limits themselves are accepted.
  y.intake = absl::StrCat("intake:\n  max_record_bytes: ", kMaxRequestBytes, "\n  max_inflight_bytes: 16MiB\n");
  y.drain = absl::StrCat("drain:\n  max_batch_bytes: ", kMaxRequestBytes, "\n");
  config = Load(y);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->intake.max_record_bytes, kMaxRequestBytes);

  y.spool = "spool:\n  max_bytes: 10 parsecs\n  min_free_bytes: -5\n";
  y.intake = "intake:\n  max_record_bytes: 10MiB\n  max_inflight_bytes: [1]\n";
  y.drain = "drain:\n  max_batch_bytes: 512\n";
  const std::string message = Error(Load(y));
  EXPECT_THAT(message, HasSubstr("spool.max_bytes: unknown byte-size unit \"parsecs\""));
  EXPECT_THAT(message, HasSubstr("spool.min_free_bytes: expected a byte size"));
  EXPECT_THAT(message, HasSubstr("intake.max_record_bytes: must be between 1 byte and 10420224 bytes"));
  EXPECT_THAT(message, HasSubstr("intake.max_inflight_bytes: must be a byte size such as 512MiB, got a list"));
  EXPECT_THAT(message, HasSubstr("drain.max_batch_bytes: must be between 1KiB and 10420224 bytes"));
  EXPECT_EQ(Lines(message).size(), 5u) << message;

  y = Yaml{};
  y.intake = "intake:\n  max_record_bytes: 0\n";
  EXPECT_THAT(Error(Load(y)), HasSubstr("intake.max_record_bytes: must be between"));
  y.spool = "spool:\n  max_bytes: 0\n";
  y.intake = "";
  EXPECT_THAT(Error(Load(y)), HasSubstr("spool.max_bytes: must be at least 1 byte"));
}

TEST_F(ConfigTest, InflightBytesMustHoldOneRecord) {
  Yaml y;
  y.intake = "intake:\n  max_record_bytes: 4MiB\n  max_inflight_bytes: 1MiB\n";
  EXPECT_THAT(Error(Load(y)),
              HasSubstr("intake.max_inflight_bytes: must be at least intake.max_record_bytes (4MiB), got 1MiB"));
  // Unset, the window holds one record of the largest size (the default
  // is 2MiB).
  y.intake = "intake:\n  max_record_bytes: 9MiB\n";
  auto config = Load(y);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->intake.max_inflight_bytes, 9u << 20);
  y.intake = "intake:\n  max_record_bytes: 1MiB\n";
  config = Load(y);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->intake.max_inflight_bytes, 2u << 20);
}

TEST_F(ConfigTest, MemoryBudgetAtAndPastItsBounds) {
  Yaml y;
  y.spool = "spool:\n  memory_budget: 8MiB\n";
  auto config = Load(y);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->spool.memory_budget, kMinMemoryBudget);
  y.spool = "spool:\n  memory_budget: 8388607\n";
  EXPECT_THAT(Error(Load(y)), HasSubstr("spool.memory_budget: must be"));
  y.spool = "spool:\n  memory_budget: 16GiB\n";
  ASSERT_TRUE(Load(y).ok());
  y.spool = "spool:\n  memory_budget: 17GiB\n";
  EXPECT_THAT(Error(Load(y)), HasSubstr("spool.memory_budget: must be"));
  y.spool = "spool:\n  memory_budget: lots\n";
  EXPECT_THAT(Error(Load(y)), HasSubstr("spool.memory_budget"));
}

TEST_F(ConfigTest, SocketMode) {
  struct Case {
    std::string text;
    uint32_t mode;
  };
  for (const Case& c : std::vector<Case>{
           {"\"0660\"", 0660}, {"0600", 0600}, {"'0777'", 0777}, {"0o640", 0640}, {"\"0\"", 0}, {"00660", 0660}}) {
    SCOPED_TRACE(c.text);
    Yaml y;
    y.intake = absl::StrCat("intake:\n  socket_group: \"0\"\n  socket_mode: ", c.text, "\n");
    auto config = Load(y);
    ASSERT_TRUE(config.ok()) << config.status();
    EXPECT_EQ(config->intake.socket_mode, c.mode);
  }
  for (const char* bad : {"660", "\"0999\"", "01777", "rw-rw----", "\"\"", "0x1b0", "{a: 1}"}) {
    SCOPED_TRACE(bad);
    Yaml y;
    y.intake = absl::StrCat("intake:\n  socket_mode: ", bad, "\n");
    EXPECT_THAT(Error(Load(y)), HasSubstr("intake.socket_mode: must be"));
  }
}

TEST_F(ConfigTest, ProducersReachTheSocketThroughTheirOwnGroupOnly) {
  Yaml y;
  y.intake = "intake:\n  socket_group: root\n";
  auto config = Load(y);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->intake.socket_gid, 0);
  EXPECT_EQ(config->intake.socket_mode, 0660u);  // the group's default
  // Group bits without a producers' group would mean the daemon's own.
  y.intake = "intake:\n  socket_mode: \"0660\"\n";
  EXPECT_THAT(Error(Load(y)), HasSubstr("intake.socket_mode: 0660 lets the daemon's own group write records; set "
                                        "intake.socket_group"));
  y.intake = "intake:\n  socket_group: no-such-group-zb\n";
  EXPECT_THAT(Error(Load(y)), HasSubstr("intake.socket_group: no group \"no-such-group-zb\" on this host"));
  y.intake = "intake:\n  socket_group: \"4294967\"\n";
  EXPECT_THAT(Error(Load(y)), HasSubstr("intake.socket_group: no group"));
  y.intake = "";
  y.control = "control:\n  socket_mode: \"0660\"\n";
  EXPECT_THAT(Error(Load(y)), HasSubstr("control.socket_mode: must give no group or other access"));
}

TEST_F(ConfigTest, BrokenYamlThatOnceHungTheLoaderIsAnError) {
  // yaml-cpp 0.7's LoadAll loops for ever on this (found by fuzzing).
  for (const char* yaml : {"\"a\",", "\"a\",\n\"b\",", "zerobus: 1\n\"a\","}) {
    SCOPED_TRACE(yaml);
    auto r = Load(std::string(yaml));
    EXPECT_FALSE(r.ok());
  }
  Yaml y;
  const std::string two = y.str() + "---\n" + y.str();
  EXPECT_THAT(Error(Load(two)), HasSubstr("only one YAML document is allowed"));
}

TEST_F(ConfigTest, IntakeAndControlSocketsMustDiffer) {
  Yaml y;
  y.intake = "intake:\n  socket: /run/zb/same.sock\n";
  y.control = "control:\n  socket: /run/zb/same.sock\n";
  EXPECT_THAT(Error(Load(y)), HasSubstr("control.socket: must differ from intake.socket (both are \"/run/zb/same.sock\")"));
}

TEST_F(ConfigTest, IntakeLimitsAtAndPastTheirBounds) {
  Yaml y;
  y.intake = "intake:\n  max_json_depth: 1000\n  max_buffered_bytes: 32MiB\n  read_timeout_ms: 0\n";
  auto config = Load(y);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->intake.max_json_depth, 1000u);
  EXPECT_EQ(config->intake.max_buffered_bytes, 32u << 20);
  y.intake = "intake:\n  max_json_depth: 1001\n";
  EXPECT_THAT(Error(Load(y)), HasSubstr("intake.max_json_depth: must be an integer in [1, 1000], got 1001"));
  y.intake = "intake:\n  max_json_depth: 0\n";
  EXPECT_THAT(Error(Load(y)), HasSubstr("intake.max_json_depth: must be an integer in [1, 1000], got 0"));
  y.intake = "intake:\n  max_buffered_bytes: 31MiB\n";
  EXPECT_THAT(Error(Load(y)), HasSubstr("intake.max_buffered_bytes: must be at least"));
  y.intake = "intake:\n  max_inflight_bytes: 64MiB\n  max_buffered_bytes: 32MiB\n";
  EXPECT_THAT(Error(Load(y)), HasSubstr("intake.max_buffered_bytes: must be at least intake.max_inflight_bytes"));
}

TEST_F(ConfigTest, IntegerRanges) {
  Yaml y;
  y.intake = "intake:\n  max_connections: 0\n";
  y.drain =
      "drain:\n"
      "  max_inflight_requests: 100001\n"
      "  max_batch_records: -1\n"
      "  linger_ms: 1.5\n"
      "  ack_timeout_ms: 99\n"
      "  create_timeout_ms: 600001\n"
      "  backoff_initial_ms: 0\n"
      "  backoff_max_ms: lots\n";
  y.extra = "shutdown_timeout_ms: 99999999999999999999999\n";
  const std::string message = Error(Load(y));
  EXPECT_THAT(message, HasSubstr("intake.max_connections: must be an integer in [1, 1000000], got 0"));
  EXPECT_THAT(message, HasSubstr("drain.max_inflight_requests: must be an integer in [1, 100000], got 100001"));
  EXPECT_THAT(message, HasSubstr("drain.max_batch_records: must be an integer in [1, 1000000], got -1"));
  EXPECT_THAT(message, HasSubstr("drain.linger_ms: must be an integer in [0, 60000], got \"1.5\""));
  EXPECT_THAT(message, HasSubstr("drain.ack_timeout_ms: must be an integer in [100, 3600000], got 99"));
  EXPECT_THAT(message, HasSubstr("drain.create_timeout_ms: must be an integer in [100, 600000], got 600001"));
  EXPECT_THAT(message, HasSubstr("drain.backoff_initial_ms: must be an integer >= 1, got 0"));
  EXPECT_THAT(message, HasSubstr("drain.backoff_max_ms: must be an integer >= 1, got \"lots\""));
  EXPECT_THAT(message, HasSubstr("shutdown_timeout_ms: must be an integer in [0, 3600000]"));
  EXPECT_EQ(Lines(message).size(), 9u) << message;
}

TEST_F(ConfigTest, BackoffMaxMustNotBeBelowInitial) {
  Yaml y;
  y.drain = "drain:\n  backoff_initial_ms: 500\n  backoff_max_ms: 100\n";
  EXPECT_THAT(Error(Load(y)), HasSubstr("drain.backoff_max_ms: must be at least backoff_initial_ms (500), got 100"));

  // A route raising only the initial backoff above the inherited maximum.
  y.drain = "";
  y.routes += "    drain:\n      backoff_initial_ms: 40000\n";
  const std::string message = Error(Load(y));
  EXPECT_THAT(message,
              HasSubstr("routes[0].drain.backoff_initial_ms: must be at most backoff_max_ms (30000), got 40000"));
  EXPECT_EQ(Lines(message).size(), 1u) << message;
}

TEST_F(ConfigTest, RouteDrainOverridesOnlyWhatItNames) {
  Yaml y;
  y.drain = "drain:\n  linger_ms: 50\n  max_batch_records: 10\n";
  y.routes =
      "routes:\n"
      "  - name: a\n"
      "    table: a.b.c\n"
      "    drain: {linger_ms: 0}\n"
      "  - name: b\n"
      "    table: a.b.d\n";
  auto config = Load(y);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->routes[0].drain.linger_ms, 0u);
  EXPECT_EQ(config->routes[0].drain.max_batch_records, 10u);
  EXPECT_EQ(config->routes[1].drain.linger_ms, 50u);
  EXPECT_EQ(config->routes[1].drain.max_batch_records, 10u);
}

std::string ZerobusSection(const std::string& endpoint, const std::string& workspace_url, const std::string& tls_line) {
  return absl::StrCat("zerobus:\n  endpoint: \"", endpoint, "\"\n  workspace_url: \"", workspace_url, "\"\n", tls_line,
                      "  client_id: id\n  client_secret: s\n");
}

TEST_F(ConfigTest, PlaintextOnlyForLoopback) {
  for (const char* endpoint : {"http://127.0.0.1:50051", "localhost:50051", "http://[::1]:50051", "127.1.2.3:7"}) {
    SCOPED_TRACE(endpoint);
    Yaml y;
    y.zerobus = ZerobusSection(endpoint, "http://127.0.0.1:50052", "  tls: false\n");
    auto config = Load(y);
    ASSERT_TRUE(config.ok()) << config.status();
    EXPECT_FALSE(config->zerobus.tls);
    EXPECT_EQ(config->zerobus.endpoint, endpoint);
  }
  Yaml y;
  y.zerobus = ZerobusSection("http://10.0.0.5:50051", "https://x.cloud.databricks.com", "  tls: false\n");
  EXPECT_THAT(Error(Load(y)),
              HasSubstr("test.yaml:4: zerobus.tls: false is only allowed for a loopback endpoint (localhost, "
                        "127.0.0.0/8, ::1), got host \"10.0.0.5\""));
  y.zerobus = ZerobusSection("edge.example.com:443", "https://x.cloud.databricks.com", "  tls: false\n");
  EXPECT_THAT(Error(Load(y)), HasSubstr("zerobus.tls: false is only allowed for a loopback endpoint"));
  // http:// endpoint with TLS left on.
  y.zerobus = ZerobusSection("http://127.0.0.1:50051", "https://x.cloud.databricks.com", "");
  EXPECT_THAT(Error(Load(y)), HasSubstr("zerobus.endpoint: http:// means no TLS: set tls: false"));
  // https:// endpoint with TLS off.
  y.zerobus = ZerobusSection("https://localhost:8443", "https://x.cloud.databricks.com", "  tls: false\n");
  EXPECT_THAT(Error(Load(y)), HasSubstr("zerobus.tls: false contradicts the https:// endpoint"));
}

TEST_F(ConfigTest, WorkspaceUrlRules) {
  Yaml y;
  // A plaintext token endpoint is fine on loopback only, whatever the stream's TLS.
  y.zerobus = ZerobusSection("https://1.zerobus.r.cloud.databricks.com", "http://127.0.0.1:50052", "  tls: true\n");
  EXPECT_TRUE(Load(y).ok());
  y.zerobus = ZerobusSection("https://1.zerobus.r.cloud.databricks.com", "http://10.1.1.1:50052", "  tls: true\n");
  EXPECT_THAT(Error(Load(y)), HasSubstr("zerobus.workspace_url: http:// is only allowed for a loopback host"));
  y.zerobus = ZerobusSection("http://127.0.0.1:50051", "http://10.1.1.1:50052", "  tls: false\n");
  EXPECT_THAT(Error(Load(y)),
              HasSubstr("zerobus.workspace_url: http:// is only allowed for a loopback host, got host \"10.1.1.1\""));
  y.zerobus = ZerobusSection("https://1.zerobus.r.cloud.databricks.com", "x.cloud.databricks.com:443", "");
  EXPECT_THAT(Error(Load(y)), HasSubstr("zerobus.workspace_url: must start with https://"));
  y.zerobus = ZerobusSection("https://1.zerobus.r.cloud.databricks.com", "ftp://x", "");
  EXPECT_THAT(Error(Load(y)), HasSubstr("zerobus.workspace_url: unsupported scheme"));
  y.zerobus = ZerobusSection("https://1.zerobus.r.cloud.databricks.com", "https://x.com/a/b", "");
  EXPECT_THAT(Error(Load(y)), HasSubstr("zerobus.workspace_url: expected scheme://host"));
  // https workspace with a plaintext local endpoint is fine.
  y.zerobus = ZerobusSection("http://127.0.0.1:50051", "https://x.cloud.databricks.com", "  tls: false\n");
  EXPECT_TRUE(Load(y).ok());
}

TEST_F(ConfigTest, KeepaliveAndFailureLogIntervalAtAndPastTheirBounds) {
  Yaml y;
  y.zerobus = ZerobusSection("http://127.0.0.1:50051", "http://127.0.0.1:50052",
                             "  tls: false\n  keepalive_time_ms: 1000\n  keepalive_timeout_ms: 600000\n");
  y.drain = "drain:\n  failure_log_interval_ms: 86400000\n";
  auto config = Load(y);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->zerobus.keepalive_time_ms, 1000u);
  EXPECT_EQ(config->zerobus.keepalive_timeout_ms, 600000u);
  EXPECT_EQ(config->drain.failure_log_interval_ms, 86400000u);
  y.zerobus = ZerobusSection("http://127.0.0.1:50051", "http://127.0.0.1:50052",
                             "  tls: false\n  keepalive_time_ms: 999\n  keepalive_timeout_ms: 600001\n");
  y.drain = "drain:\n  failure_log_interval_ms: 999\n";
  const std::string message = Error(Load(y));
  EXPECT_THAT(message, HasSubstr("zerobus.keepalive_time_ms: must be an integer in [1000, 3600000], got 999"));
  EXPECT_THAT(message, HasSubstr("zerobus.keepalive_timeout_ms: must be an integer in [1000, 600000], got 600001"));
  EXPECT_THAT(message, HasSubstr("drain.failure_log_interval_ms: must be an integer in [1000, 86400000], got 999"));
}

// zerobus.stream_quota: the service's per-stream quota by default, every
// route's unless it sets its own keys (only those); bounds checked with
// the key's path.
TEST_F(ConfigTest, StreamQuotaDefaultsAndRouteOverrides) {
  Yaml y;
  auto config = Load(y);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->zerobus.stream_quota.rows_per_second, 15000u);
  EXPECT_EQ(config->zerobus.stream_quota.bytes_per_second, 100'000'000u);
  EXPECT_EQ(config->routes[0].stream_quota, config->zerobus.stream_quota);

  y.zerobus = ZerobusSection("http://127.0.0.1:50051", "http://127.0.0.1:50052",
                             "  tls: false\n  stream_quota: {rows_per_second: 100000, bytes_per_second: 50MB}\n");
  y.routes =
      "routes:\n"
      "  - name: a\n"
      "    table: a.b.c\n"
      "    stream_quota: {rows_per_second: 1}\n"
      "  - name: b\n"
      "    table: a.b.d\n";
  config = Load(y);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->routes[0].stream_quota.rows_per_second, 1u);
  EXPECT_EQ(config->routes[0].stream_quota.bytes_per_second, 50'000'000u) << "the key it did not set";
  EXPECT_EQ(config->routes[1].stream_quota.rows_per_second, 100000u);
  EXPECT_EQ(config->routes[1].stream_quota.bytes_per_second, 50'000'000u);

  y.zerobus = ZerobusSection("http://127.0.0.1:50051", "http://127.0.0.1:50052",
                             "  tls: false\n  stream_quota: {rows_per_second: 0, bytes_per_second: 1023, rows: 5}\n");
  y.routes = "routes:\n  - name: a\n    table: a.b.c\n    stream_quota: 7\n";
  const std::string message = Error(Load(y));
  EXPECT_THAT(message, HasSubstr("zerobus.stream_quota.rows_per_second: must be an integer in [1, 1000000000], got 0"));
  EXPECT_THAT(message, HasSubstr("zerobus.stream_quota.bytes_per_second: "));
  EXPECT_THAT(message, HasSubstr("zerobus.stream_quota.rows: unknown key"));
  EXPECT_THAT(message, HasSubstr("routes[0].stream_quota: "));

  // At the limits: 1 and 1e9 rows, 1 KiB and 1 TiB; one past them refused.
  y.routes = "routes:\n  - name: a\n    table: a.b.c\n    stream_quota: {rows_per_second: 1, bytes_per_second: 1KiB}\n";
  y.zerobus = ZerobusSection("http://127.0.0.1:50051", "http://127.0.0.1:50052",
                             "  tls: false\n  stream_quota: {rows_per_second: 1000000000, bytes_per_second: 1TiB}\n");
  config = Load(y);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->zerobus.stream_quota.rows_per_second, 1'000'000'000u);
  EXPECT_EQ(config->zerobus.stream_quota.bytes_per_second, 1ull << 40);
  EXPECT_EQ(config->routes[0].stream_quota.rows_per_second, 1u);
  EXPECT_EQ(config->routes[0].stream_quota.bytes_per_second, 1024u);
  y.zerobus = ZerobusSection("http://127.0.0.1:50051", "http://127.0.0.1:50052",
                             "  tls: false\n  stream_quota: {rows_per_second: 1000000001, bytes_per_second: 1099511627777}\n");
  const std::string past = Error(Load(y));
  EXPECT_THAT(past, HasSubstr("zerobus.stream_quota.rows_per_second: must be an integer in [1, 1000000000]"));
  EXPECT_THAT(past, HasSubstr("zerobus.stream_quota.bytes_per_second: must be between 1KiB and 1TiB"));
}

TEST_F(ConfigTest, MaxStreamsDefaultsToFourAndIsCheckedAtItsLimits) {
  Yaml y;
  auto config = Load(y);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->routes[0].max_streams, 4u);
  EXPECT_EQ(config->routes[0].drain.stream_idle_close_ms, 30'000u);
  y.routes =
      "routes:\n"
      "  - name: a\n    table: a.b.c\n    max_streams: 1\n"
      "  - name: b\n    table: a.b.d\n    max_streams: 64\n    drain: {stream_idle_close_ms: 100}\n";
  config = Load(y);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->routes[0].max_streams, 1u);
  EXPECT_EQ(config->routes[1].max_streams, 64u);
  EXPECT_EQ(config->routes[1].drain.stream_idle_close_ms, 100u);
  y.routes =
      "routes:\n"
      "  - name: a\n    table: a.b.c\n    max_streams: 0\n"
      "  - name: b\n    table: a.b.d\n    max_streams: 65\n    drain: {stream_idle_close_ms: 99}\n"
      "  - name: c\n    table: a.b.e\n    max_streams: many\n";
  const std::string message = Error(Load(y));
  EXPECT_THAT(message, HasSubstr("routes[0].max_streams: must be an integer in [1, 64], got 0"));
  EXPECT_THAT(message, HasSubstr("routes[1].max_streams: must be an integer in [1, 64], got 65"));
  EXPECT_THAT(message, HasSubstr("routes[1].drain.stream_idle_close_ms: must be an integer in [100, 3600000], got 99"));
  EXPECT_THAT(message, HasSubstr("routes[2].max_streams: must be an integer in [1, 64]"));
}

TEST_F(ConfigTest, EndpointAndWorkspaceId) {
  Yaml y;
  y.zerobus = ZerobusSection("6051921418418893.zerobus.us-west-2.cloud.databricks.com:443",
                             "https://x.cloud.databricks.com", "");
  auto config = Load(y);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->zerobus.workspace_id, "6051921418418893");
  for (const char* bad : {"", "no-port-host", "grpc://x:1", "https://x.com/path", "x:99999", "x:0"}) {
    SCOPED_TRACE(bad);
    y.zerobus = ZerobusSection(bad, "https://x.cloud.databricks.com", "");
    EXPECT_THAT(Error(Load(y)), HasSubstr("test.yaml:2: zerobus.endpoint: "));
  }
  y.zerobus = Yaml{}.zerobus + "  workspace_id: \"12 34\"\n";
  EXPECT_THAT(Error(Load(y)), HasSubstr("zerobus.workspace_id: must be letters, digits"));
}

TEST_F(ConfigTest, MetricsListen) {
  Yaml y;
  y.metrics = "metrics:\n  listen: \"\"\n";
  auto config = Load(y);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->metrics.listen, "");
  y.metrics = "metrics:\n  listen: \"127.0.0.1:0\"\n";
  ASSERT_TRUE(Load(y).ok());
  for (const char* bad : {"9464", "http://127.0.0.1:9464", ":9464", "[x"}) {
    SCOPED_TRACE(bad);
    y.metrics = absl::StrCat("metrics:\n  listen: \"", bad, "\"\n");
    EXPECT_THAT(Error(Load(y)), HasSubstr("metrics.listen: must be host:port"));
  }
}

TEST_F(ConfigTest, ProtoAndJsonSchemaRules) {
  TempDir dir;
  WriteFile(dir.Sub("r.proto"), "syntax = \"proto3\";\n");
  Yaml y;
  y.routes = "routes:\n  - name: p\n    table: a.b.c\n    format: proto\n";
  EXPECT_THAT(Error(Load(y)), HasSubstr("test.yaml:7: routes[0].schema: required for format: proto"));

  y.routes = absl::StrCat("routes:\n  - name: j\n    table: a.b.c\n    schema:\n      proto_file: ", dir.Sub("r.proto"),
                          "\n      message: M\n");
  EXPECT_THAT(Error(Load(y)), HasSubstr("routes[0].schema: only allowed with format: proto"));

  y.routes = absl::StrCat("routes:\n  - name: p\n    table: a.b.c\n    format: proto\n    schema:\n      proto_file: ",
                          dir.Sub("missing.proto"), "\n      message: M\n");
  EXPECT_THAT(Error(Load(y)), HasSubstr(absl::StrCat("routes[0].schema.proto_file: cannot read \"",
                                                     dir.Sub("missing.proto"), "\": No such file or directory")));

  y.routes = absl::StrCat("routes:\n  - name: p\n    table: a.b.c\n    format: proto\n    schema:\n      proto_file: ",
                          dir.path(), "\n      message: M\n");
  EXPECT_THAT(Error(Load(y)), HasSubstr("routes[0].schema.proto_file: \"" + dir.path() + "\" is not a regular file"));

  y.routes = "routes:\n  - name: p\n    table: a.b.c\n    format: proto\n    schema: {}\n";
  std::string message = Error(Load(y));
  EXPECT_THAT(message, HasSubstr("routes[0].schema.proto_file: required"));
  EXPECT_THAT(message, HasSubstr("routes[0].schema.message: required"));

  y.routes = absl::StrCat("routes:\n  - name: p\n    table: a.b.c\n    format: proto\n    schema:\n      proto_file: ",
                          dir.Sub("r.proto"), "\n      message: 9bad..name\n");
  EXPECT_THAT(Error(Load(y)), HasSubstr("routes[0].schema.message: must be a protobuf message name"));

  y.routes = "routes:\n  - name: p\n    table: a.b.c\n    format: proto\n    schema: reading.proto\n";
  EXPECT_THAT(Error(Load(y)), HasSubstr("routes[0].schema: must be a mapping, got a scalar"));
}

TEST_F(ConfigTest, SchemaFromTableTakesTheTablesColumnsInsteadOfAProtoFile) {
  TempDir dir;
  WriteFile(dir.Sub("r.proto"), "syntax = \"proto3\";\n");
  Yaml y;
  y.routes = "routes:\n  - name: p\n    table: a.b.c\n    format: proto\n    schema: {from_table: true}\n";
  auto loaded = Load(y);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_TRUE(loaded->routes[0].schema_from_table);
  EXPECT_TRUE(loaded->routes[0].proto_file.empty());

  // Not both: the table's columns are the schema.
  y.routes = absl::StrCat("routes:\n  - name: p\n    table: a.b.c\n    format: proto\n    schema:\n",
                          "      from_table: true\n      proto_file: ", dir.Sub("r.proto"), "\n      message: M\n");
  std::string message = Error(Load(y));
  EXPECT_THAT(message, HasSubstr("test.yaml:12: routes[0].schema.proto_file: not allowed with from_table: true"));
  EXPECT_THAT(message, HasSubstr("test.yaml:13: routes[0].schema.message: not allowed with from_table: true"));

  // from_table: false is the .proto way, which then needs its keys.
  y.routes = "routes:\n  - name: p\n    table: a.b.c\n    format: proto\n    schema: {from_table: false}\n";
  EXPECT_THAT(Error(Load(y)), HasSubstr("routes[0].schema.proto_file: required (or from_table: true"));

  y.routes = "routes:\n  - name: p\n    table: a.b.c\n    format: proto\n    schema: {from_table: yes please}\n";
  EXPECT_THAT(Error(Load(y)), HasSubstr("routes[0].schema.from_table: must be true or false"));

  // column_types: with a .proto only, field: type text, kept in order.
  y.routes = absl::StrCat("routes:\n  - name: p\n    table: a.b.c\n    format: proto\n    schema:\n",
                          "      proto_file: ", dir.Sub("r.proto"), "\n      message: M\n",
                          "      column_types: {ts: timestamp, price: \"decimal(10,2)\"}\n");
  loaded = Load(y);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->routes[0].column_types,
            (std::vector<std::pair<std::string, std::string>>{{"ts", "timestamp"}, {"price", "decimal(10,2)"}}));
  y.routes = "routes:\n  - name: p\n    table: a.b.c\n    format: proto\n    schema:\n"
             "      from_table: true\n      column_types: {ts: timestamp}\n";
  EXPECT_THAT(Error(Load(y)), HasSubstr("routes[0].schema.column_types: not allowed with from_table: true"));
  y.routes = absl::StrCat("routes:\n  - name: p\n    table: a.b.c\n    format: proto\n    schema:\n",
                          "      proto_file: ", dir.Sub("r.proto"), "\n      message: M\n      column_types: [ts]\n");
  EXPECT_THAT(Error(Load(y)), HasSubstr("routes[0].schema.column_types: must be a mapping of field name"));
  y.routes = absl::StrCat("routes:\n  - name: p\n    table: a.b.c\n    format: proto\n    schema:\n",
                          "      proto_file: ", dir.Sub("r.proto"), "\n      message: M\n      column_types: {ts: \"\"}\n");
  EXPECT_THAT(Error(Load(y)), HasSubstr("routes[0].schema.column_types.ts: "));

  // A JSON route spools JSON: no schema, from the table or otherwise.
  y.routes = "routes:\n  - name: j\n    table: a.b.c\n    schema: {from_table: true}\n";
  EXPECT_THAT(Error(Load(y)), HasSubstr("routes[0].schema: only allowed with format: proto"));
}

TEST_F(ConfigTest, UnreadableProtoFile) {
  if (geteuid() == 0) GTEST_SKIP() << "root reads any file";
  TempDir dir;
  WriteFile(dir.Sub("r.proto"), "syntax = \"proto3\";\n");
  ASSERT_EQ(chmod(dir.Sub("r.proto").c_str(), 0), 0);
  Yaml y;
  y.routes = absl::StrCat("routes:\n  - name: p\n    table: a.b.c\n    format: proto\n    schema:\n      proto_file: ",
                          dir.Sub("r.proto"), "\n      message: M\n");
  EXPECT_THAT(Error(Load(y)), HasSubstr("Permission denied"));
}

TEST_F(ConfigTest, DuplicateRouteNames) {
  Yaml y;
  y.routes =
      "routes:\n"
      "  - {name: a, table: x.y.a}\n"
      "  - {name: b, table: x.y.b}\n"
      "  - {name: a, table: x.y.c}\n"
      "  - {name: b, table: x.y.d}\n"
      "  - {name: a, table: x.y.e}\n";
  const std::string message = Error(Load(y));
  EXPECT_THAT(message,
              HasSubstr("test.yaml:7: routes[0].name: duplicate route name \"a\" (also routes[2], routes[4])"));
  EXPECT_THAT(message, HasSubstr("test.yaml:8: routes[1].name: duplicate route name \"b\" (also routes[3])"));
  EXPECT_EQ(Lines(message).size(), 2u) << message;
}

TEST_F(ConfigTest, RouteNames) {
  for (const std::string& good : {std::string("a"), std::string("A-b_9"), std::string(64, 'x')}) {
    Yaml y;
    y.routes = absl::StrCat("routes:\n  - name: \"", good, "\"\n    table: a.b.c\n");
    auto config = Load(y);
    ASSERT_TRUE(config.ok()) << good << ": " << config.status();
    EXPECT_EQ(config->routes[0].name, good);
  }
  for (const std::string& bad : {std::string(""), std::string("has space"), std::string("a.b"), std::string("é"),
                                 std::string(65, 'x'), std::string("a/b")}) {
    SCOPED_TRACE(bad);
    Yaml y;
    y.routes = absl::StrCat("routes:\n  - name: \"", bad, "\"\n    table: a.b.c\n");
    EXPECT_THAT(Error(Load(y)), HasSubstr("routes[0].name: must be 1 to 64 characters of A-Z, a-z, 0-9, _ and -"));
  }
}

TEST_F(ConfigTest, TableNames) {
  for (const char* good : {"main.edge.readings", "C_1.s2.T_3"}) {
    Yaml y;
    y.routes = absl::StrCat("routes:\n  - name: r\n    table: ", good, "\n");
    auto config = Load(y);
    ASSERT_TRUE(config.ok()) << good << ": " << config.status();
    EXPECT_EQ(config->routes[0].table, good);
  }
  for (const char* bad : {"foo.bar", "a.b.c.d", "a..c", ".b.c", "a.b.", "a.b-c.d", "a.b.c d", "\"\"", "abc"}) {
    SCOPED_TRACE(bad);
    Yaml y;
    y.routes = absl::StrCat("routes:\n  - name: r\n    table: ", bad, "\n");
    EXPECT_THAT(Error(Load(y)), HasSubstr("routes[0].table: must be catalog.schema.table, got \""));
  }
  Yaml y;
  y.routes = "routes:\n  - name: a\n    table: a.b.c\n  - name: b\n    table: foo.bar\n";
  EXPECT_THAT(Error(Load(y)),
              HasSubstr("test.yaml:10: routes[1].table: must be catalog.schema.table, got \"foo.bar\""));
}

TEST_F(ConfigTest, AllowLists) {
  Yaml y;
  y.routes = "routes:\n  - name: r\n    table: a.b.c\n    allow: {uids: [], gids: [0, 4294967294]}\n";
  auto config = Load(y);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_TRUE(config->routes[0].allow_uids.empty());
  EXPECT_EQ(config->routes[0].allow_gids, (std::vector<uint32_t>{0, 4294967294u}));

  y.routes = "routes:\n  - name: r\n    table: a.b.c\n    allow: {uids: [1, -2, root, 4294967295], gids: 5}\n";
  const std::string message = Error(Load(y));
  EXPECT_THAT(message, HasSubstr("routes[0].allow.uids[1]: must be an integer in [0, 4294967294], got -2"));
  EXPECT_THAT(message, HasSubstr("routes[0].allow.uids[2]: must be an integer in [0, 4294967294], got \"root\""));
  EXPECT_THAT(message, HasSubstr("routes[0].allow.uids[3]: must be an integer in [0, 4294967294], got 4294967295"));
  EXPECT_THAT(message, HasSubstr("routes[0].allow.gids: must be a list of numeric ids, got a scalar"));
}

TEST_F(ConfigTest, MultipleErrorsReportedTogetherWithLines) {
  const std::string yaml =
      "zerobus:\n"                                                  // 1
      "  endpoint: \"https://1.zerobus.r.cloud.databricks.com\"\n"  // 2
      "  workspace_url: \"https://x.cloud.databricks.com\"\n"       // 3
      "  client_id: id\n"                                           // 4
      "  client_secret: s\n"                                        // 5
      "  colour: blue\n"                                            // 6
      "spool:\n"                                                    // 7
      "  when_full: drop\n"                                         // 8
      "routes:\n"                                                   // 9
      "  - name: a\n"                                               // 10
      "    table: a.b.c\n"                                          // 11
      "  - name: b\n"                                               // 12
      "    table: foo.bar\n"                                        // 13
      "  - name: a\n"                                               // 14
      "    table: a.b.d\n";                                         // 15
  const std::vector<std::string> lines = Lines(Error(LoadConfigString(yaml, "zerobusd.yaml")));
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_THAT(lines[0], ::testing::StartsWith("zerobusd.yaml:6: zerobus.colour: unknown key"));
  EXPECT_EQ(lines[1], "zerobusd.yaml:8: spool.when_full: must be one of block, reject, drop_oldest, got \"drop\"");
  EXPECT_EQ(lines[2], "zerobusd.yaml:10: routes[0].name: duplicate route name \"a\" (also routes[2])");
  EXPECT_EQ(lines[3],
            "zerobusd.yaml:13: routes[1].table: must be catalog.schema.table, got \"foo.bar\" (three non-empty parts "
            "of A-Z, a-z, 0-9 and _)");
}

TEST_F(ConfigTest, NoOriginMeansNoFilePrefix) {
  Yaml y;
  y.spool = "spool:\n  sync: maybe\n";
  auto result = LoadConfigString(y.str(), "");
  EXPECT_THAT(Error(result), ::testing::StartsWith("line 7: spool.sync: must be one of"));
}

TEST_F(ConfigTest, YamlSyntaxErrorNamesTheLine) {
  const std::string yaml =
      "zerobus:\n"
      "  endpoint: \"https://x:1\"\n"
      "  workspace_url: [unclosed\n"
      "spool:\n"
      "  path: /x\n";
  const std::string message = Error(LoadConfigString(yaml, "zerobusd.yaml"));
  EXPECT_THAT(message, ::testing::MatchesRegex("zerobusd\\.yaml:[3-5]: yaml: syntax error: .*"));

  EXPECT_THAT(Error(Load("a: b\n  c: d\n")), ::testing::MatchesRegex("test\\.yaml:[12]: yaml: syntax error: .*"));
  EXPECT_THAT(Error(Load("zerobus: {}\nroutes: [a, b\n")), HasSubstr("syntax error"));
  EXPECT_THAT(Error(Load("x: *nope\n")), HasSubstr("test.yaml:1: yaml: syntax error"));
}

TEST_F(ConfigTest, WrongTypesNameThePathAndNeverCrash) {
  struct Case {
    std::string yaml, expected;
  };
  const Yaml base;
  const std::vector<Case> cases = {
      {"- a\n- b\n", "(top level): must be a mapping, got a list"},
      {"just text\n", "(top level): must be a mapping, got a scalar"},
      {"zerobus: [1, 2]\n" + base.routes, "zerobus: must be a mapping, got a list"},
      {absl::StrReplaceAll(base.str(), {{"client_id: \"the-client\"", "client_id: {a: b}"}}),
       "zerobus.client_id: must be a string, got a mapping"},
      {absl::StrReplaceAll(base.str(), {{"client_id: \"the-client\"", "client_id:"}}),
       "zerobus.client_id: missing value (expected a string)"},
      {base.zerobus + "spool: /var/spool\n" + base.routes, "spool: must be a mapping, got a scalar"},
      {base.zerobus + "spool:\n  path: [a]\n" + base.routes, "spool.path: must be a string, got a list"},
      {base.zerobus + "intake: ~\n" + base.routes, "intake: must be a mapping, got an empty value"},
      {base.zerobus + "metrics:\n  listen: {host: x}\n" + base.routes,
       "metrics.listen: must be a string, got a mapping"},
      {base.zerobus + "drain: [1]\n" + base.routes, "drain: must be a mapping, got a list"},
      {base.zerobus + "routes: readings\n", "routes: must be a list of routes, got a scalar"},
      {base.zerobus + "routes: {name: a}\n", "routes: must be a list of routes, got a mapping"},
      {base.zerobus + "routes:\n  - readings\n", "routes[0]: must be a mapping, got a scalar"},
      {base.zerobus + "routes:\n  - name: [a]\n    table: {x: 1}\n", "routes[0].name: must be a string, got a list"},
      {base.zerobus + "routes:\n  - name: a\n    table: a.b.c\n    drain: 5\n", "routes[0].drain: must be a mapping"},
      {base.zerobus + "routes:\n  - name: a\n    table: a.b.c\n    allow: [1]\n", "routes[0].allow: must be a mapping"},
      {base.zerobus + "? [a, b]\n: 1\n" + base.routes, "(top level): keys must be strings, got a list"},
      {base.zerobus + "log_level: [info]\n" + base.routes,
       "log_level: must be one of trace, debug, info, warn, error, got a list"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.yaml);
    EXPECT_THAT(Error(Load(c.yaml)), HasSubstr(c.expected));
  }
  EXPECT_THAT(Error(Load("")), HasSubstr("the config is empty"));
  EXPECT_THAT(Error(Load("# only a comment\n")), HasSubstr("the config is empty"));
  EXPECT_THAT(Error(Load(base.str() + "---\nspool: {}\n")), HasSubstr("only one YAML document is allowed"));
}

TEST_F(ConfigTest, SecretsNeverAppearInErrors) {
  TempDir dir;
  WriteFile(dir.Sub("secret"), "TOPSECRET-file\n");
  const std::vector<std::string> zerobus_sections = {
      // Wrong type holding the secret.
      "zerobus:\n  endpoint: \"x:1\"\n  workspace_url: \"https://x\"\n  client_id: a\n"
      "  client_secret: {value: TOPSECRET-inline}\n",
      // A typo'd key holding the secret.
      "zerobus:\n  endpoint: \"x:1\"\n  workspace_url: \"https://x\"\n  client_id: a\n"
      "  client_secret: TOPSECRET-inline\n  clientsecret: TOPSECRET-inline\n",
      // Repeated key.
      "zerobus:\n  endpoint: \"x:1\"\n  workspace_url: \"https://x\"\n  client_id: a\n"
      "  client_secret: TOPSECRET-inline\n  client_secret: TOPSECRET-inline2\n",
      // Both inline and file.
      absl::StrCat("zerobus:\n  endpoint: \"x:1\"\n  workspace_url: \"https://x\"\n  client_id: a\n"
                   "  client_secret: TOPSECRET-inline\n  client_secret_file: ",
                   dir.Sub("secret"), "\n"),
      // Otherwise broken config with a valid secret from a file.
      absl::StrCat("zerobus:\n  endpoint: \"x:1\"\n  workspace_url: \"https://x\"\n  client_id: a\n"
                   "  tls: false\n  client_secret_file: ",
                   dir.Sub("secret"), "\n"),
  };
  for (const std::string& section : zerobus_sections) {
    SCOPED_TRACE(section);
    Yaml y;
    y.zerobus = section;
    const std::string message = Error(Load(y));
    EXPECT_FALSE(message.empty());
    EXPECT_THAT(message, Not(HasSubstr("TOPSECRET")));
  }
}

TEST_F(ConfigTest, CredentialFiles) {
  TempDir dir;
  fs::create_directories(dir.Sub("creds"));
  WriteFile(dir.Sub("creds/id"), "  file-client\n");
  WriteFile(dir.Sub("creds/secret"), "file-secret\n\n");
  WriteFile(dir.Sub("zerobusd.yaml"),
            "zerobus:\n"
            "  endpoint: \"https://1.zerobus.r.cloud.databricks.com\"\n"
            "  workspace_url: \"https://x.cloud.databricks.com\"\n"
            "  client_id_file: creds/id\n"  // relative to the config's directory
            "  client_secret_file: " +
                dir.Sub("creds/secret") + "\n" + Yaml{}.routes);
  auto config = LoadConfigFile(dir.Sub("zerobusd.yaml"));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->zerobus.client_id, "file-client");
  EXPECT_EQ(config->zerobus.client_secret, "file-secret");

  Yaml y;
  y.zerobus = absl::StrCat("zerobus:\n  endpoint: \"x:1\"\n  workspace_url: \"https://x\"\n  client_id: a\n",
                           "  client_secret_file: ", dir.Sub("creds/nope"), "\n");
  EXPECT_THAT(Error(Load(y)), HasSubstr(absl::StrCat("test.yaml:5: zerobus.client_secret_file: cannot read \"",
                                                     dir.Sub("creds/nope"), "\": No such file or directory")));
  WriteFile(dir.Sub("creds/empty"), " \n");
  y.zerobus = absl::StrCat("zerobus:\n  endpoint: \"x:1\"\n  workspace_url: \"https://x\"\n  client_id: a\n",
                           "  client_secret_file: ", dir.Sub("creds/empty"), "\n");
  EXPECT_THAT(Error(Load(y)), HasSubstr("zerobus.client_secret_file: \"" + dir.Sub("creds/empty") + "\" is empty"));
  y.zerobus = absl::StrCat("zerobus:\n  endpoint: \"x:1\"\n  workspace_url: \"https://x\"\n  client_id: a\n",
                           "  client_id_file: ", dir.Sub("creds/id"), "\n  client_secret: s\n");
  EXPECT_THAT(Error(Load(y)), HasSubstr("zerobus.client_id_file: set only one of client_id and client_id_file"));
  y.zerobus = absl::StrCat("zerobus:\n  endpoint: \"x:1\"\n  workspace_url: \"https://x\"\n  client_id: a\n",
                           "  client_secret_file: ", dir.path(), "\n");
  EXPECT_THAT(Error(Load(y)), HasSubstr("zerobus.client_secret_file: cannot read"));
}

TEST_F(ConfigTest, CredentialsDirectory) {
  TempDir dir;
  WriteFile(dir.Sub("client_secret"), "systemd-secret\n");
  WriteFile(dir.Sub("client_id"), "systemd-client\n");
  setenv("CREDENTIALS_DIRECTORY", dir.path().c_str(), 1);
  Yaml y;
  y.zerobus = "zerobus:\n  endpoint: \"x:1\"\n  workspace_url: \"https://x\"\n";
  auto config = Load(y);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->zerobus.client_id, "systemd-client");
  EXPECT_EQ(config->zerobus.client_secret, "systemd-secret");

  // Explicit values win over the directory.
  config = Load(Yaml{});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->zerobus.client_secret, "TOPSECRET-inline");

  // A directory without the credential: still required.
  fs::remove(dir.Sub("client_secret"));
  const std::string message = Error(Load(y));
  EXPECT_THAT(message, HasSubstr("zerobus.client_secret: required"));
  EXPECT_THAT(message, HasSubstr("$CREDENTIALS_DIRECTORY"));
  EXPECT_THAT(message, Not(HasSubstr("client_id")));

  // The unit's empty SetCredential= fallback (no file to load): no
  // credential, so an inline secret works and none at all is required.
  WriteFile(dir.Sub("client_secret"), "");
  config = Load(Yaml{});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->zerobus.client_secret, "TOPSECRET-inline");
  EXPECT_THAT(Error(Load(y)), HasSubstr("zerobus.client_secret: required"));

  // Tools that need only the config's paths (zerobusctl status --config)
  // load it where systemd's credential is not.
  unsetenv("CREDENTIALS_DIRECTORY");
  WriteFile(dir.Sub("no-secret.yaml"), absl::StrCat(y.zerobus, "routes:\n  - name: r\n    table: a.b.c\n"));
  EXPECT_FALSE(LoadConfigFile(dir.Sub("no-secret.yaml")).ok());
  LoadOptions paths_only;
  paths_only.credentials_required = false;
  auto tool = LoadConfigFile(dir.Sub("no-secret.yaml"), paths_only);
  ASSERT_TRUE(tool.ok()) << tool.status();
  EXPECT_EQ(tool->zerobus.client_secret, "");
}

TEST_F(ConfigTest, RelativePathsResolveAgainstTheConfigDirectory) {
  TempDir dir;
  fs::create_directories(dir.Sub("etc/schemas"));
  WriteFile(dir.Sub("etc/schemas/r.proto"), "syntax = \"proto3\";\n");
  WriteFile(dir.Sub("etc/ca.pem"), "pem\n");
  WriteFile(dir.Sub("etc/zerobusd.yaml"),
            "zerobus:\n"
            "  endpoint: \"https://1.zerobus.r.cloud.databricks.com\"\n"
            "  workspace_url: \"https://x.cloud.databricks.com\"\n"
            "  ca_file: ca.pem\n"
            "  client_id: a\n"
            "  client_secret: b\n"
            "spool:\n"
            "  path: ./var/spool\n"
            "intake:\n"
            "  socket: ../run/zb.sock\n"
            "routes:\n"
            "  - name: p\n"
            "    table: a.b.c\n"
            "    format: proto\n"
            "    schema:\n"
            "      proto_file: schemas/r.proto\n"
            "      message: M\n");
  auto config = LoadConfigFile(dir.Sub("etc/zerobusd.yaml"));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->spool.path, dir.Sub("etc/var/spool"));
  EXPECT_EQ(config->intake.socket, dir.Sub("run/zb.sock"));
  EXPECT_EQ(config->zerobus.ca_file, dir.Sub("etc/ca.pem"));
  EXPECT_EQ(config->routes[0].proto_file, dir.Sub("etc/schemas/r.proto"));

  // A relative config path is made absolute first.
  const fs::path cwd = fs::current_path();
  fs::current_path(dir.path());
  const fs::path here = fs::current_path();
  auto relative = LoadConfigFile("etc/zerobusd.yaml");
  fs::current_path(cwd);
  ASSERT_TRUE(relative.ok()) << relative.status();
  EXPECT_EQ(relative->spool.path, (here / "etc/var/spool").string());
}

TEST_F(ConfigTest, LoadConfigStringResolvesAgainstTheWorkingDirectory) {
  TempDir dir;
  const fs::path cwd = fs::current_path();
  fs::current_path(dir.path());
  Yaml y;
  y.spool = "spool:\n  path: var/spool\n";
  y.intake = "intake:\n  socket: /abs/zb.sock\n";
  auto config = Load(y);
  const fs::path here = fs::current_path();
  fs::current_path(cwd);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->spool.path, (here / "var/spool").string());
  EXPECT_EQ(config->intake.socket, "/abs/zb.sock");
}

TEST_F(ConfigTest, SocketPathTooLong) {
  Yaml y;
  y.intake = absl::StrCat("intake:\n  socket: /", std::string(120, 's'), "\n");
  EXPECT_THAT(Error(Load(y)), HasSubstr("a Unix socket path may have at most 107"));
}

TEST_F(ConfigTest, MissingConfigFile) {
  TempDir dir;
  auto config = LoadConfigFile(dir.Sub("nope.yaml"));
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(config.status().message(), HasSubstr(dir.Sub("nope.yaml")));
  config = LoadConfigFile(dir.path());
  ASSERT_FALSE(config.ok());
  EXPECT_THAT(config.status().message(), HasSubstr("cannot read config file"));
}

TEST_F(ConfigTest, FileErrorsNameTheFile) {
  TempDir dir;
  Yaml y;
  y.spool = "spool:\n  sync: maybe\n";
  WriteFile(dir.Sub("z.yaml"), y.str());
  EXPECT_THAT(Error(LoadConfigFile(dir.Sub("z.yaml"))),
              ::testing::StartsWith(dir.Sub("z.yaml") + ":7: spool.sync: must be one of always, none"));
}

// The shipped examples must stay loadable as the schema evolves.
TEST_F(ConfigTest, ExampleConfigLoads) {
  // The example takes its secret from systemd's credential directory.
  TempDir creds;
  WriteFile(creds.Sub("client_secret"), "example-secret\n");
  setenv("CREDENTIALS_DIRECTORY", creds.path().c_str(), 1);
  auto config = LoadConfigFile(std::string(ZEROBUSD_SOURCE_DIR) + "/config/zerobusd.example.yaml");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->zerobus.client_secret, "example-secret");
  EXPECT_GE(config->routes.size(), 2u);
  EXPECT_NE(config->FindRoute("readings"), nullptr);
}

TEST_F(ConfigTest, DevConfigLoads) {
  auto config = LoadConfigFile(std::string(ZEROBUSD_SOURCE_DIR) + "/config/dev.yaml");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_FALSE(config->zerobus.tls);
  EXPECT_EQ(config->zerobus.endpoint, "http://127.0.0.1:50051");
  EXPECT_EQ(config->zerobus.workspace_url, "http://127.0.0.1:50052");
  EXPECT_EQ(config->zerobus.client_id, "dev-client");
  EXPECT_EQ(config->zerobus.client_secret, "dev-secret");
  EXPECT_EQ(config->metrics.listen, "127.0.0.1:9464");
  const std::string config_dir = (fs::path(ZEROBUSD_SOURCE_DIR) / "config").lexically_normal().string();
  EXPECT_EQ(config->spool.path, config_dir + "/var/spool");
  EXPECT_EQ(config->intake.socket, config_dir + "/var/zerobusd.sock");
  const RouteConfig* readings = config->FindRoute("readings");
  ASSERT_NE(readings, nullptr);
  EXPECT_EQ(readings->table, "main.edge.readings");
  EXPECT_EQ(readings->format, RecordFormat::kJson);
  const RouteConfig* events = config->FindRoute("events");
  ASSERT_NE(events, nullptr);
  EXPECT_EQ(events->table, "main.edge.events");
}

}  // namespace
}  // namespace zb
