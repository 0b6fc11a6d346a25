// zerobusctl gen-proto: the .proto of a Unity Catalog table's Zerobus record.

#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "auth/uc_tables.h"
#include "schema/uc_schema.h"
#include "tools/zerobusctl/commands.h"

namespace zb::ctl {
namespace {

constexpr char kUsage[] =
    "usage: zerobusctl gen-proto --from-json FILE [--message NAME]\n"
    "       zerobusctl gen-proto --config FILE TABLE [--message NAME]\n"
    "  prints the proto2 schema of a table's Zerobus record, from the table's\n"
    "  Unity Catalog answer (GET /api/2.1/unity-catalog/tables/TABLE): read\n"
    "  from FILE (- for stdin), or fetched from zerobus.workspace_url with the\n"
    "  config's credentials (a metadata token: the service principal needs\n"
    "  USE CATALOG, USE SCHEMA and SELECT on the table). NAME is the message's\n"
    "  name (default: the table's name)\n";

}  // namespace

int GenProto(const std::vector<std::string>& args) {
  std::string from_json, message, config_path, table_name;
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--from-json" && i + 1 < args.size()) {
      from_json = args[++i];
    } else if (args[i] == "--config" && i + 1 < args.size()) {
      config_path = args[++i];
    } else if (!config_path.empty() && table_name.empty() && !args[i].empty() && args[i][0] != '-') {
      table_name = args[i];
    } else if (args[i] == "--message" && i + 1 < args.size()) {
      message = args[++i];
    } else if (args[i] == "--help" || args[i] == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    } else {
      std::fprintf(stderr, "zerobusctl gen-proto: unexpected argument \"%s\"\n%s", args[i].c_str(), kUsage);
      return 2;
    }
  }
  if (from_json.empty() == config_path.empty() || (!config_path.empty() && table_name.empty())) {
    std::fprintf(stderr, "zerobusctl gen-proto: give either --from-json FILE or --config FILE TABLE\n%s", kUsage);
    return 2;
  }
  std::stringstream text;
  std::string source = from_json;
  if (!config_path.empty()) {
    std::optional<DaemonConfig> config = LoadDaemonConfig(config_path, /*credentials_required=*/true);
    if (!config) return 2;
    UcFetchOptions fetch;
    fetch.workspace_url = config->zerobus.workspace_url;
    fetch.client_id = config->zerobus.client_id;
    fetch.client_secret = config->zerobus.client_secret;
    fetch.ca_file = config->zerobus.ca_file;
    fetch.user_agent = "zerobusctl";
    absl::StatusOr<std::string> answer = FetchUcTableJson(fetch, table_name);
    if (!answer.ok()) {
      std::fprintf(stderr, "zerobusctl gen-proto: %s\n", std::string(answer.status().message()).c_str());
      return 1;
    }
    text << *answer;
    source = table_name;
  } else {
    // No more than a table's description may be (and one byte to tell):
    // a wrong file of gigabytes is refused, not read whole.
    std::ifstream file;
    if (from_json != "-") {
      file.open(from_json, std::ios::binary);
      if (!file) {
        std::fprintf(stderr, "zerobusctl gen-proto: cannot read %s\n", from_json.c_str());
        return 1;
      }
    }
    std::istream& in = from_json == "-" ? std::cin : file;
    std::string buf(kMaxUcTableJsonBytes + 1, '\0');
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    buf.resize(static_cast<size_t>(in.gcount()));
    text << buf;
  }
  absl::StatusOr<UcTable> table = ParseUcTable(text.str());
  if (!table.ok()) {
    std::fprintf(stderr, "zerobusctl gen-proto: %s: %s\n", source.c_str(),
                 std::string(table.status().message()).c_str());
    return 1;
  }
  absl::StatusOr<TableProto> proto = TableToProto(*table, message);
  if (!proto.ok()) {
    std::fprintf(stderr, "zerobusctl gen-proto: %s\n", std::string(proto.status().message()).c_str());
    return 1;
  }
  std::fputs(proto->proto_text.c_str(), stdout);
  return 0;
}

}  // namespace zb::ctl
