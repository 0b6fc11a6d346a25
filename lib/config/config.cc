#include "config/config.h"

#include <fcntl.h>
#include <grp.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <initializer_list>
#include <limits>
#include <map>
#include <optional>
#include <sstream>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/byte_size.h"
#include "common/endpoint.h"
#include "yaml-cpp/eventhandler.h"
#include "yaml-cpp/yaml.h"

namespace zb {

const RouteConfig* DaemonConfig::FindRoute(const std::string& name) const {
  for (const RouteConfig& route : routes) {
    if (route.name == name) return &route;
  }
  return nullptr;
}

namespace {

namespace fs = std::filesystem;

// Upper bounds for files read while loading. Config and credential files are
// tiny; the caps only keep a wrong path (a device, a huge log) from eating
// memory.
constexpr size_t kMaxConfigFileBytes = 16u << 20;
constexpr size_t kMaxCredentialFileBytes = 64u << 10;

// ---------------------------------------------------------------------------
// Problem collection

struct Problem {
  int line = 0;  // 1-based; 0 when no position is known
  std::string path;
  std::string message;
};

class Problems {
 public:
  void Add(const YAML::Node& at, std::string path, std::string message) {
    Add(LineOf(at), std::move(path), std::move(message));
  }
  void Add(int line, std::string path, std::string message) {
    problems_.push_back({line, std::move(path), std::move(message)});
  }
  bool empty() const { return problems_.empty(); }

  // One line per problem, "origin:line: path: message", in file order so an
  // operator can walk through them top to bottom. Problems without a line
  // (whole sections missing) come first.
  absl::Status ToStatus(const std::string& origin) const {
    std::vector<Problem> sorted = problems_;
    std::stable_sort(sorted.begin(), sorted.end(), [](const Problem& a, const Problem& b) { return a.line < b.line; });
    std::vector<std::string> lines;
    lines.reserve(sorted.size());
    for (const Problem& p : sorted) {
      std::string prefix = origin;
      if (p.line > 0) {
        absl::StrAppend(&prefix, origin.empty() ? "line " : ":", p.line);
      }
      lines.push_back(prefix.empty() ? absl::StrCat(p.path, ": ", p.message)
                                     : absl::StrCat(prefix, ": ", p.path, ": ", p.message));
    }
    return absl::InvalidArgumentError(absl::StrJoin(lines, "\n"));
  }

  static int LineOf(const YAML::Node& node) {
    if (!node.IsDefined()) return 0;
    const YAML::Mark mark = node.Mark();
    return mark.is_null() ? 0 : mark.line + 1;
  }

 private:
  std::vector<Problem> problems_;
};

std::string Quote(absl::string_view s) { return absl::StrCat("\"", absl::CEscape(s), "\""); }

std::string Describe(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Null:
      return "an empty value";
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Map:
      return "a mapping";
    case YAML::NodeType::Scalar:
      return "a scalar";
    default:
      return "nothing";
  }
}

std::string JoinPath(absl::string_view parent, absl::string_view key) {
  return parent.empty() ? std::string(key) : absl::StrCat(parent, ".", key);
}

// Byte counts in messages: the largest binary unit that is exact, so limits
// read like the values operators write ("2MiB", not "2097152").
std::string FormatBytes(uint64_t bytes) {
  static constexpr std::pair<uint64_t, const char*> kUnits[] = {
      {1ull << 40, "TiB"}, {1ull << 30, "GiB"}, {1ull << 20, "MiB"}, {1ull << 10, "KiB"}};
  for (const auto& [size, name] : kUnits) {
    if (bytes >= size && bytes % size == 0) return absl::StrCat(bytes / size, name);
  }
  return absl::StrCat(bytes, bytes == 1 ? " byte" : " bytes");
}

std::string FormatLimit(uint64_t bytes) {
  if (bytes == kMaxRequestBytes) return absl::StrCat(bytes, " bytes (10MiB - 64KiB, the request limit)");
  return FormatBytes(bytes);
}

// ---------------------------------------------------------------------------
// A mapping read strictly: keys must be strings from `allowed`, none may
// repeat. yaml-cpp keeps repeated keys as separate pairs and silently lets
// lookups see only one of them, so we walk the pairs ourselves.

class StrictMap {
 public:
  StrictMap(const YAML::Node& node, std::string path, std::initializer_list<absl::string_view> allowed,
            Problems& problems)
      : node_(node), path_(std::move(path)) {
    if (!node.IsMap()) {
      problems.Add(node, PathOrRoot(), absl::StrCat("must be a mapping, got ", Describe(node)));
      return;
    }
    valid_ = true;
    for (auto it = node.begin(); it != node.end(); ++it) {
      // Copies, not references: yaml-cpp's iterator hands out a temporary
      // pair, so `it->first` would dangle past this statement.
      const YAML::detail::iterator_value pair = *it;
      const YAML::Node key = pair.first;
      const YAML::Node value = pair.second;
      if (!key.IsScalar()) {
        problems.Add(key, PathOrRoot(), absl::StrCat("keys must be strings, got ", Describe(key)));
        continue;
      }
      const std::string name = key.Scalar();
      // Never echo values here: an unknown or repeated key may hold a secret.
      if (std::find(allowed.begin(), allowed.end(), name) == allowed.end()) {
        problems.Add(key, Path(name),
                     absl::StrCat("unknown key (expected one of: ", absl::StrJoin(allowed, ", "), ")"));
        continue;
      }
      if (auto found = entries_.find(name); found != entries_.end()) {
        problems.Add(key, Path(name),
                     absl::StrCat("duplicate key (first at line ", Problems::LineOf(found->second.key), ")"));
        continue;
      }
      entries_.emplace(name, Entry{key, value});
    }
  }

  bool valid() const { return valid_; }
  const YAML::Node& node() const { return node_; }
  const std::string& path() const { return path_; }
  std::string Path(absl::string_view key) const { return JoinPath(path_, key); }

  // The value for `key`, or nullptr when the key is absent.
  const YAML::Node* Find(absl::string_view key) const {
    auto it = entries_.find(std::string(key));
    return it == entries_.end() ? nullptr : &it->second.value;
  }

 private:
  struct Entry {
    YAML::Node key;
    YAML::Node value;
  };
  std::string PathOrRoot() const { return path_.empty() ? "(top level)" : path_; }

  YAML::Node node_;
  std::string path_;
  bool valid_ = false;
  std::map<std::string, Entry, std::less<>> entries_;
};

// ---------------------------------------------------------------------------
// Scalar readers. Each reports its own problem and returns nullopt on error.
// yaml-cpp's as<T>() would throw and accept YAML 1.1 surprises (yes/no,
// sexagesimal), so we read the scalar text and parse it ourselves.

std::optional<std::string> ReadScalar(const YAML::Node& node, const std::string& path, const char* what,
                                      Problems& problems) {
  if (node.IsScalar()) return node.Scalar();
  if (node.IsNull()) {
    problems.Add(node, path, absl::StrCat("missing value (expected ", what, ")"));
  } else {
    problems.Add(node, path, absl::StrCat("must be ", what, ", got ", Describe(node)));
  }
  return std::nullopt;
}

std::optional<std::string> ReadString(const YAML::Node& node, const std::string& path, Problems& problems) {
  return ReadScalar(node, path, "a string", problems);
}

std::optional<std::string> ReadNonEmptyString(const YAML::Node& node, const std::string& path, Problems& problems) {
  std::optional<std::string> s = ReadString(node, path, problems);
  if (s && s->empty()) {
    problems.Add(node, path, "must not be empty");
    return std::nullopt;
  }
  return s;
}

std::optional<uint64_t> ReadUint(const YAML::Node& node, const std::string& path, uint64_t lo, uint64_t hi,
                                 Problems& problems) {
  const std::string range = hi == std::numeric_limits<uint32_t>::max() || hi == std::numeric_limits<uint64_t>::max()
                                ? absl::StrCat(">= ", lo)
                                : absl::StrCat("in [", lo, ", ", hi, "]");
  std::optional<std::string> text = ReadScalar(node, path, "an integer", problems);
  if (!text) return std::nullopt;
  const absl::string_view t = absl::StripAsciiWhitespace(*text);
  int64_t signed_value = 0;
  uint64_t value = 0;
  if (!t.empty() && t[0] == '-' && absl::SimpleAtoi(t, &signed_value)) {
    problems.Add(node, path, absl::StrCat("must be an integer ", range, ", got ", signed_value));
    return std::nullopt;
  }
  if (t.empty() || !std::all_of(t.begin(), t.end(), [](char c) { return absl::ascii_isdigit(c); }) ||
      !absl::SimpleAtoi(t, &value)) {
    problems.Add(node, path, absl::StrCat("must be an integer ", range, ", got ", Quote(*text)));
    return std::nullopt;
  }
  if (value < lo || value > hi) {
    problems.Add(node, path, absl::StrCat("must be an integer ", range, ", got ", value));
    return std::nullopt;
  }
  return value;
}

std::optional<bool> ReadBool(const YAML::Node& node, const std::string& path, Problems& problems) {
  std::optional<std::string> text = ReadScalar(node, path, "true or false", problems);
  if (!text) return std::nullopt;
  const std::string lower = absl::AsciiStrToLower(*text);
  if (lower == "true") return true;
  if (lower == "false") return false;
  problems.Add(node, path, absl::StrCat("must be true or false, got ", Quote(*text)));
  return std::nullopt;
}

std::optional<uint64_t> ReadByteSize(const YAML::Node& node, const std::string& path, uint64_t lo, uint64_t hi,
                                     Problems& problems) {
  std::optional<std::string> text = ReadScalar(node, path, "a byte size such as 512MiB", problems);
  if (!text) return std::nullopt;
  absl::StatusOr<uint64_t> bytes = ParseByteSize(*text);
  if (!bytes.ok()) {
    problems.Add(node, path, std::string(bytes.status().message()));
    return std::nullopt;
  }
  if (*bytes < lo || *bytes > hi) {
    const std::string range = hi == std::numeric_limits<uint64_t>::max()
                                  ? absl::StrCat("at least ", FormatLimit(lo))
                                  : absl::StrCat("between ", FormatLimit(lo), " and ", FormatLimit(hi));
    problems.Add(node, path, absl::StrCat("must be ", range, ", got ", Quote(*text)));
    return std::nullopt;
  }
  return *bytes;
}

// A file mode must be written in octal with a leading zero ("0660", or the
// YAML 1.2 form 0o660): a bare 660 is ambiguous between octal and decimal and
// yaml-cpp hands us only the text, so we refuse to guess.
std::optional<uint32_t> ReadFileMode(const YAML::Node& node, const std::string& path, Problems& problems) {
  std::optional<std::string> text = ReadScalar(node, path, "an octal file mode such as \"0660\"", problems);
  if (!text) return std::nullopt;
  absl::string_view digits = absl::StripAsciiWhitespace(*text);
  const bool prefixed = absl::ConsumePrefix(&digits, "0o") || absl::ConsumePrefix(&digits, "0O") ||
                        (absl::StartsWith(digits, "0") && !digits.empty());
  uint32_t mode = 0;
  bool ok = prefixed && !digits.empty() && digits.size() <= 5;
  for (char c : digits) {
    if (c < '0' || c > '7') {
      ok = false;
      break;
    }
    mode = mode * 8 + static_cast<uint32_t>(c - '0');
  }
  if (!ok || mode > 0777) {
    problems.Add(node, path,
                 absl::StrCat("must be an octal file mode with a leading 0 such as \"0660\" (at most 0777), got ",
                              Quote(*text)));
    return std::nullopt;
  }
  return mode;
}

template <typename E>
std::optional<E> ReadEnum(const YAML::Node& node, const std::string& path,
                          std::initializer_list<std::pair<absl::string_view, E>> values, Problems& problems) {
  std::vector<absl::string_view> names;
  for (const auto& [name, value] : values) names.push_back(name);
  const std::string one_of = absl::StrCat("one of ", absl::StrJoin(names, ", "));
  std::optional<std::string> text = ReadScalar(node, path, one_of.c_str(), problems);
  if (!text) return std::nullopt;
  for (const auto& [name, value] : values) {
    if (*text == name) return value;
  }
  problems.Add(node, path, absl::StrCat("must be ", one_of, ", got ", Quote(*text)));
  return std::nullopt;
}

// ---------------------------------------------------------------------------
// Name rules

bool IsNameChar(char c) { return absl::ascii_isalnum(c) || c == '_' || c == '-'; }
bool IsIdentChar(char c) { return absl::ascii_isalnum(c) || c == '_'; }

bool IsValidRouteName(absl::string_view name) {
  return !name.empty() && name.size() <= 64 && std::all_of(name.begin(), name.end(), IsNameChar);
}

bool IsValidTableName(absl::string_view table) {
  const std::vector<absl::string_view> parts = absl::StrSplit(table, '.');
  if (parts.size() != 3) return false;
  for (absl::string_view part : parts) {
    if (part.empty() || !std::all_of(part.begin(), part.end(), IsIdentChar)) return false;
  }
  return true;
}

// A protobuf message name, optionally package-qualified: "Reading" or
// "acme.edge.v1.Reading".
bool IsValidMessageName(absl::string_view message) {
  for (absl::string_view part : absl::StrSplit(message, '.')) {
    if (part.empty() || absl::ascii_isdigit(part[0]) || !std::all_of(part.begin(), part.end(), IsIdentChar)) {
      return false;
    }
  }
  return true;
}

// ---------------------------------------------------------------------------
// Files

std::string ErrnoText(int error) { return std::strerror(error); }

// Reads a whole regular file. On failure returns the errno (or EFBIG/EISDIR)
// and no content; messages are built by the caller, which knows the key path.
struct FileRead {
  int error = 0;
  std::string content;
};

FileRead ReadSmallFile(const std::string& path, size_t max_bytes) {
  FileRead result;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) {
    result.error = errno;
    return result;
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    result.error = errno;
  } else if (S_ISDIR(st.st_mode)) {
    result.error = EISDIR;
  } else if (!S_ISREG(st.st_mode)) {
    result.error = EINVAL;  // FIFOs and devices: reading could block or never end
  } else if (static_cast<uint64_t>(st.st_size) > max_bytes) {
    result.error = EFBIG;
  } else {
    char buf[8192];
    for (;;) {
      const ssize_t n = ::read(fd, buf, sizeof(buf));
      if (n < 0) {
        if (errno == EINTR) continue;
        result.error = errno;
        break;
      }
      if (n == 0) break;
      result.content.append(buf, static_cast<size_t>(n));
      if (result.content.size() > max_bytes) {
        result.error = EFBIG;
        break;
      }
    }
  }
  ::close(fd);
  if (result.error != 0) result.content.clear();
  return result;
}

std::string FileErrorText(int error) {
  if (error == EINVAL) return "not a regular file";
  if (error == EFBIG) return "file is too large";
  return ErrnoText(error);
}

// ---------------------------------------------------------------------------
// The loader: walks the document once, fills a DaemonConfig and collects
// every problem instead of stopping at the first.

// Where the second YAML document of `yaml` starts (1-based line), or 0.
// Reads at most two documents, so it ends on any input.
int SecondDocumentLine(const std::string& yaml) {
  struct Counter : YAML::EventHandler {
    void OnDocumentStart(const YAML::Mark& mark) override {
      if (++documents == 2) second_line = mark.line + 1;
    }
    void OnDocumentEnd() override {}
    void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
    void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
    void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t, const std::string&) override {}
    void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
    void OnSequenceEnd() override {}
    void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
    void OnMapEnd() override {}
    int documents = 0;
    int second_line = 0;
  } counter;
  std::istringstream in(yaml);
  YAML::Parser parser(in);
  while (counter.documents < 2 && parser.HandleNextDocument(counter)) {
  }
  return counter.documents >= 2 ? std::max(counter.second_line, 1) : 0;
}

class Loader {
 public:
  Loader(std::string origin, fs::path base_dir) : origin_(std::move(origin)), base_dir_(std::move(base_dir)) {}
  void set_credentials_required(bool required) { credentials_required_ = required; }

  absl::StatusOr<DaemonConfig> Load(const std::string& yaml) {
    YAML::Node root;
    int second_document_line = 0;  // 1-based; 0: there is one document
    try {
      // The first document only: yaml-cpp 0.7's LoadAll never returns on
      // some broken input (a stray comma after a scalar), so documents are
      // counted by the parser, stopping at the second.
      root = YAML::Load(yaml);
      second_document_line = SecondDocumentLine(yaml);
    } catch (const YAML::Exception& e) {
      // yaml-cpp's parser messages describe the syntax ("end of map not
      // found"), never the document's text, so they cannot leak a secret.
      const int line = e.mark.is_null() ? 0 : e.mark.line + 1;
      const std::string column = e.mark.is_null() ? "" : absl::StrCat(" (column ", e.mark.column + 1, ")");
      problems_.Add(line, "yaml", absl::StrCat("syntax error: ", e.msg, column));
      return problems_.ToStatus(origin_);
    }
    if (!root.IsDefined() || root.IsNull()) {
      problems_.Add(0, "(top level)", "the config is empty");
      return problems_.ToStatus(origin_);
    }
    if (second_document_line > 0) {
      problems_.Add(second_document_line, "(top level)", "only one YAML document is allowed");
    }
    LoadRoot(root);
    if (!problems_.empty()) return problems_.ToStatus(origin_);
    return std::move(config_);
  }

 private:
  void LoadRoot(const YAML::Node& root) {
    StrictMap map(root, "",
                  {"zerobus", "spool", "intake", "metrics", "control", "drain", "shutdown_timeout_ms", "log_level", "log_format",
                   "routes"},
                  problems_);
    if (!map.valid()) return;
    if (const YAML::Node* n = map.Find("zerobus")) {
      LoadZerobus(*n);
    } else {
      problems_.Add(0, "zerobus", "required section is missing");
    }
    if (const YAML::Node* n = map.Find("spool")) LoadSpool(*n);
    if (const YAML::Node* n = map.Find("intake")) LoadIntake(*n);
    if (const YAML::Node* n = map.Find("metrics")) LoadMetrics(*n);
    if (const YAML::Node* n = map.Find("control")) LoadControl(*n);
    DrainConfig drain_defaults;
    if (const YAML::Node* n = map.Find("drain")) LoadDrain(*n, "drain", &drain_defaults);
    if (const YAML::Node* n = map.Find("shutdown_timeout_ms")) {
      if (auto v = ReadUint(*n, "shutdown_timeout_ms", 0, 3'600'000, problems_)) {
        config_.shutdown_timeout_ms = static_cast<uint32_t>(*v);
      }
    }
    if (const YAML::Node* n = map.Find("log_level")) {
      if (auto v = ReadEnum<absl::string_view>(
              *n, "log_level",
              {{"trace", "trace"}, {"debug", "debug"}, {"info", "info"}, {"warn", "warn"}, {"error", "error"}},
              problems_)) {
        config_.log_level = std::string(*v);
      }
    }
    if (const YAML::Node* n = map.Find("log_format")) {
      if (auto v = ReadEnum<absl::string_view>(*n, "log_format", {{"text", "text"}, {"json", "json"}}, problems_)) {
        config_.log_format = std::string(*v);
      }
    }
    if (config_.intake.socket == config_.control.socket) {
      const YAML::Node* intake = map.Find("intake");
      problems_.Add(intake ? *intake : root, "control.socket",
                    absl::StrCat("must differ from intake.socket (both are ", Quote(config_.intake.socket), ")"));
    }
    config_.drain = drain_defaults;
    if (const YAML::Node* n = map.Find("routes")) {
      LoadRoutes(*n, drain_defaults);
    } else {
      problems_.Add(0, "routes", "required: at least one route");
    }
  }

  // ----- zerobus

  void LoadZerobus(const YAML::Node& node) {
    StrictMap map(node, "zerobus",
                  {"endpoint", "workspace_url", "workspace_id", "tls", "ca_file", "client_id", "client_id_file",
                   "client_secret", "client_secret_file", "keepalive_time_ms", "keepalive_timeout_ms",
                   "stream_quota"},
                  problems_);
    if (!map.valid()) return;
    ZerobusConfig& zb = config_.zerobus;

    const YAML::Node* tls_node = map.Find("tls");
    bool tls_known = true;
    if (tls_node) {
      std::optional<bool> tls = ReadBool(*tls_node, "zerobus.tls", problems_);
      if (tls) {
        zb.tls = *tls;
      } else {
        tls_known = false;
      }
    }

    std::optional<Endpoint> endpoint;
    if (const YAML::Node* n = map.Find("endpoint")) {
      if (auto text = ReadNonEmptyString(*n, "zerobus.endpoint", problems_)) {
        absl::StatusOr<Endpoint> parsed = ParseEndpoint(*text);
        if (!parsed.ok()) {
          problems_.Add(*n, "zerobus.endpoint", std::string(parsed.status().message()));
        } else if (parsed->port == 0) {
          problems_.Add(*n, "zerobus.endpoint", absl::StrCat("port must not be 0, got ", Quote(*text)));
        } else {
          zb.endpoint = *text;
          endpoint = *parsed;
        }
      }
    } else {
      problems_.Add(node, "zerobus.endpoint", "required");
    }

    if (endpoint && tls_known) {
      const YAML::Node& at = tls_node ? *tls_node : node;
      if (!zb.tls && !IsLoopbackHost(endpoint->host)) {
        problems_.Add(at, "zerobus.tls",
                      absl::StrCat("false is only allowed for a loopback endpoint (localhost, 127.0.0.0/8, ::1), "
                                   "got host ",
                                   Quote(endpoint->host)));
      } else if (zb.tls && endpoint->scheme == "http") {
        problems_.Add(*map.Find("endpoint"), "zerobus.endpoint",
                      "http:// means no TLS: set tls: false (only allowed for a loopback endpoint) or use https://");
      } else if (!zb.tls && endpoint->scheme == "https") {
        problems_.Add(at, "zerobus.tls", "false contradicts the https:// endpoint; use http://host:port or host:port");
      }
    }

    if (const YAML::Node* n = map.Find("workspace_url")) {
      if (auto text = ReadNonEmptyString(*n, "zerobus.workspace_url", problems_)) {
        absl::StatusOr<Endpoint> parsed = ParseEndpoint(*text);
        if (!parsed.ok()) {
          problems_.Add(*n, "zerobus.workspace_url", std::string(parsed.status().message()));
        } else if (parsed->scheme.empty()) {
          problems_.Add(*n, "zerobus.workspace_url",
                        absl::StrCat("must start with https:// (http:// only for a local server), got ", Quote(*text)));
        } else if (parsed->scheme == "http" && !IsLoopbackHost(parsed->host)) {
          // The client secret goes to this URL; never send it in clear text
          // across a network. (A loopback token endpoint, such as a local
          // dev server or an agent that mints tokens, may be plaintext
          // whatever the stream's TLS.)
          problems_.Add(*n, "zerobus.workspace_url",
                        absl::StrCat("http:// is only allowed for a loopback host, got host ", Quote(parsed->host)));
        } else {
          // Stored without a trailing slash so callers can append
          // "/oidc/v1/token".
          zb.workspace_url = std::string(absl::StripSuffix(*text, "/"));
        }
      }
    } else {
      problems_.Add(node, "zerobus.workspace_url", "required");
    }

    if (const YAML::Node* n = map.Find("workspace_id")) {
      if (auto text = ReadNonEmptyString(*n, "zerobus.workspace_id", problems_)) {
        if (!std::all_of(text->begin(), text->end(), IsNameChar)) {
          problems_.Add(*n, "zerobus.workspace_id",
                        absl::StrCat("must be letters, digits, _ or - (usually the numeric id), got ", Quote(*text)));
        } else {
          zb.workspace_id = *text;
        }
      }
    } else if (endpoint) {
      zb.workspace_id = WorkspaceIdFromHost(endpoint->host);
    }

    if (const YAML::Node* n = map.Find("ca_file")) {
      if (auto text = ReadNonEmptyString(*n, "zerobus.ca_file", problems_)) {
        zb.ca_file = ResolvePath(*text);
        CheckReadable(*n, "zerobus.ca_file", zb.ca_file);
      }
    }

    if (const YAML::Node* n = map.Find("keepalive_time_ms")) {
      if (auto v = ReadUint(*n, "zerobus.keepalive_time_ms", 1'000, 3'600'000, problems_)) {
        zb.keepalive_time_ms = static_cast<uint32_t>(*v);
      }
    }
    if (const YAML::Node* n = map.Find("keepalive_timeout_ms")) {
      if (auto v = ReadUint(*n, "zerobus.keepalive_timeout_ms", 1'000, 600'000, problems_)) {
        zb.keepalive_timeout_ms = static_cast<uint32_t>(*v);
      }
    }

    if (const YAML::Node* n = map.Find("stream_quota")) LoadStreamQuota(*n, "zerobus.stream_quota", &zb.stream_quota);

    zb.client_id = LoadCredential(map, "client_id");
    zb.client_secret = LoadCredential(map, "client_secret");
  }

  // Applies the keys present in `node` on top of `*quota`.
  void LoadStreamQuota(const YAML::Node& node, const std::string& path, StreamQuotaConfig* quota) {
    StrictMap map(node, path, {"rows_per_second", "bytes_per_second"}, problems_);
    if (!map.valid()) return;
    if (const YAML::Node* n = map.Find("rows_per_second")) {
      if (auto v = ReadUint(*n, map.Path("rows_per_second"), 1, 1'000'000'000, problems_)) quota->rows_per_second = *v;
    }
    if (const YAML::Node* n = map.Find("bytes_per_second")) {
      if (auto v = ReadByteSize(*n, map.Path("bytes_per_second"), 1024, 1ull << 40, problems_)) {
        quota->bytes_per_second = *v;
      }
    }
  }

  // Resolves `key` (client_id or client_secret) from, in order: the inline
  // value, `key`_file, or $CREDENTIALS_DIRECTORY/`key` (systemd
  // LoadCredential=). Values are never put into messages.
  std::string LoadCredential(const StrictMap& map, const std::string& key) {
    const std::string path = map.Path(key);
    const std::string file_key = key + "_file";
    const std::string file_path = map.Path(file_key);
    const YAML::Node* inline_node = map.Find(key);
    const YAML::Node* file_node = map.Find(file_key);
    if (inline_node && file_node) {
      problems_.Add(*file_node, file_path, absl::StrCat("set only one of ", key, " and ", file_key));
      return "";
    }
    if (inline_node) {
      std::optional<std::string> value = ReadString(*inline_node, path, problems_);
      if (!value) return "";
      const std::string trimmed(absl::StripAsciiWhitespace(*value));
      if (trimmed.empty()) problems_.Add(*inline_node, path, "must not be empty");
      return trimmed;
    }
    if (file_node) {
      std::optional<std::string> name = ReadNonEmptyString(*file_node, file_path, problems_);
      if (!name) return "";
      const std::string resolved = ResolvePath(*name);
      return ReadCredentialFile(*file_node, file_path, resolved, /*missing_ok=*/false).value_or("");
    }
    // Tools (and the reload check) that need no credentials do not read
    // systemd's: they may not be allowed to.
    if (!credentials_required_) return "";
    const char* dir = std::getenv("CREDENTIALS_DIRECTORY");
    if (dir != nullptr && *dir != '\0') {
      const std::string resolved = (fs::path(dir) / key).string();
      std::optional<std::string> value = ReadCredentialFile(map.node(), path, resolved, /*missing_ok=*/true);
      if (value) return *value;
      if (!missing_credential_) return "";  // a read error was reported
    }
    problems_.Add(map.node(), path,
                  absl::StrCat("required: set ", key, " or ", file_key, ", or provide the credential ", key,
                               " through $CREDENTIALS_DIRECTORY (systemd LoadCredential=)"));
    return "";
  }

  // Reads and trims a credential file. With `missing_ok`, a file that does
  // not exist is not a problem: it returns nullopt and sets
  // missing_credential_.
  std::optional<std::string> ReadCredentialFile(const YAML::Node& at, const std::string& path, const std::string& file,
                                                bool missing_ok) {
    missing_credential_ = false;
    FileRead read = ReadSmallFile(file, kMaxCredentialFileBytes);
    // With `missing_ok`, an empty file counts as missing too.
    if (read.error == ENOENT && missing_ok) {
      missing_credential_ = true;
      return std::nullopt;
    }
    if (read.error != 0) {
      problems_.Add(at, path, absl::StrCat("cannot read ", Quote(file), ": ", FileErrorText(read.error)));
      return std::nullopt;
    }
    std::string value(absl::StripAsciiWhitespace(read.content));
    if (value.empty() && missing_ok) {
      // The unit's empty SetCredential= fallback: systemd found no file
      // to load, so there is no credential.
      missing_credential_ = true;
      return std::nullopt;
    }
    if (value.empty()) {
      problems_.Add(at, path, absl::StrCat(Quote(file), " is empty"));
      return std::nullopt;
    }
    return value;
  }

  // ----- spool, intake, metrics

  void LoadSpool(const YAML::Node& node) {
    StrictMap map(node, "spool", {"path", "max_bytes", "min_free_bytes", "memory_budget", "when_full", "sync"}, problems_);
    if (!map.valid()) return;
    SpoolConfig& spool = config_.spool;
    if (const YAML::Node* n = map.Find("path")) {
      if (auto v = ReadNonEmptyString(*n, "spool.path", problems_)) spool.path = ResolvePath(*v);
    }
    if (const YAML::Node* n = map.Find("max_bytes")) {
      if (auto v = ReadByteSize(*n, "spool.max_bytes", 1, std::numeric_limits<uint64_t>::max(), problems_)) {
        spool.max_bytes = *v;
      }
    }
    if (const YAML::Node* n = map.Find("min_free_bytes")) {
      // RocksDB needs room for its own writes (the write-ahead log, flushes)
      // and aborts when the disk is full under it: the guard cannot be off.
      if (auto v = ReadByteSize(*n, "spool.min_free_bytes", kMinFreeBytesFloor, std::numeric_limits<uint64_t>::max(),
                                problems_)) {
        spool.min_free_bytes = *v;
      }
    }
    if (const YAML::Node* n = map.Find("memory_budget")) {
      if (auto v = ReadByteSize(*n, "spool.memory_budget", kMinMemoryBudget, 16ull << 30, problems_)) {
        spool.memory_budget = *v;
      }
    }
    if (const YAML::Node* n = map.Find("when_full")) {
      if (auto v = ReadEnum<WhenFull>(
              *n, "spool.when_full",
              {{"block", WhenFull::kBlock}, {"reject", WhenFull::kReject}, {"drop_oldest", WhenFull::kDropOldest}},
              problems_)) {
        spool.when_full = *v;
      }
    }
    if (const YAML::Node* n = map.Find("sync")) {
      if (auto v = ReadEnum<SyncPolicy>(*n, "spool.sync",
                                        {{"always", SyncPolicy::kAlways}, {"none", SyncPolicy::kNone}}, problems_)) {
        spool.sync = *v;
      }
    }
  }

  void LoadIntake(const YAML::Node& node) {
    StrictMap map(node, "intake",
                  {"socket", "socket_mode", "socket_group", "max_record_bytes", "max_inflight_bytes",
                   "max_buffered_bytes", "max_connections", "max_json_depth", "read_timeout_ms", "idle_timeout_ms"},
                  problems_);
    if (!map.valid()) return;
    IntakeConfig& intake = config_.intake;
    if (const YAML::Node* n = map.Find("socket")) ReadSocketPath(*n, "intake.socket", &intake.socket);
    const YAML::Node* group_node = map.Find("socket_group");
    if (group_node) {
      if (auto v = ReadNonEmptyString(*group_node, "intake.socket_group", problems_)) {
        intake.socket_group = *v;
        if (auto gid = ResolveGroup(*v)) {
          intake.socket_gid = *gid;
        } else {
          problems_.Add(*group_node, "intake.socket_group",
                        absl::StrCat("no group ", Quote(*v), " on this host (create it, e.g. groupadd --system ",
                                     *v, ")"));
        }
      }
    }
    intake.socket_mode = intake.socket_group.empty() ? 0600 : 0660;
    if (const YAML::Node* n = map.Find("socket_mode")) {
      if (auto v = ReadFileMode(*n, "intake.socket_mode", problems_)) {
        intake.socket_mode = *v;
        // The socket's group would otherwise be the daemon's own, which
        // also owns the spool and the config.
        if ((*v & 0070) != 0 && intake.socket_group.empty() && !group_node) {
          problems_.Add(*n, "intake.socket_mode",
                        absl::StrCat(absl::StrFormat("%04o", *v), " lets the daemon's own group write records; set "
                                     "intake.socket_group to the producers' group, or use 0600"));
        }
      }
    }
    const YAML::Node* record_node = map.Find("max_record_bytes");
    if (record_node) {
      if (auto v = ReadByteSize(*record_node, "intake.max_record_bytes", 1, kMaxRequestBytes, problems_)) {
        intake.max_record_bytes = *v;
      } else {
        record_node = nullptr;  // already reported; skip the cross-check
      }
    }
    const YAML::Node* inflight_node = map.Find("max_inflight_bytes");
    bool inflight_ok = true;
    if (inflight_node) {
      if (auto v = ReadByteSize(*inflight_node, "intake.max_inflight_bytes", 1, std::numeric_limits<uint64_t>::max(),
                                problems_)) {
        intake.max_inflight_bytes = *v;
      } else {
        inflight_ok = false;
      }
    }
    // A connection must be able to hold at least one record of the largest
    // allowed size, or such a record could never be read.
    if (!inflight_node) {
      // Unset: the default, or one record of the largest allowed size.
      intake.max_inflight_bytes = std::max(intake.max_inflight_bytes, intake.max_record_bytes);
    } else if (inflight_ok && intake.max_inflight_bytes < intake.max_record_bytes) {
      problems_.Add(inflight_node ? *inflight_node : *record_node, "intake.max_inflight_bytes",
                    absl::StrCat("must be at least intake.max_record_bytes (", FormatBytes(intake.max_record_bytes),
                                 "), got ", FormatBytes(intake.max_inflight_bytes)));
    }
    if (const YAML::Node* n = map.Find("max_buffered_bytes")) {
      // Room for one largest frame (16 MiB) beside other connections' input.
      if (auto v = ReadByteSize(*n, "intake.max_buffered_bytes", kMinIntakeBufferedBytes,
                                std::numeric_limits<uint64_t>::max(), problems_)) {
        intake.max_buffered_bytes = *v;
        if (inflight_ok && intake.max_buffered_bytes < intake.max_inflight_bytes) {
          problems_.Add(*n, "intake.max_buffered_bytes",
                        absl::StrCat("must be at least intake.max_inflight_bytes (",
                                     FormatBytes(intake.max_inflight_bytes), "), got ",
                                     FormatBytes(intake.max_buffered_bytes)));
        }
      }
    }
    if (const YAML::Node* n = map.Find("max_connections")) {
      if (auto v = ReadUint(*n, "intake.max_connections", 1, 1'000'000, problems_)) {
        intake.max_connections = static_cast<uint32_t>(*v);
      }
    }
    if (const YAML::Node* n = map.Find("max_json_depth")) {
      if (auto v = ReadUint(*n, "intake.max_json_depth", 1, kMaxJsonDepth, problems_)) {
        intake.max_json_depth = static_cast<uint32_t>(*v);
      }
    }
    if (const YAML::Node* n = map.Find("read_timeout_ms")) {
      if (auto v = ReadUint(*n, "intake.read_timeout_ms", 0, 3'600'000, problems_)) {
        intake.read_timeout_ms = static_cast<uint32_t>(*v);
      }
    }
    if (const YAML::Node* n = map.Find("idle_timeout_ms")) {
      if (auto v = ReadUint(*n, "intake.idle_timeout_ms", 0, 86'400'000, problems_)) {
        intake.idle_timeout_ms = static_cast<uint32_t>(*v);
      }
    }
  }

  // A group name or a numeric gid that names an existing group.
  static std::optional<int64_t> ResolveGroup(const std::string& name) {
    uint32_t numeric = 0;
    std::vector<char> buf(16384);
    struct group grp{};
    struct group* found = nullptr;
    if (absl::SimpleAtoi(name, &numeric)) {
      if (getgrgid_r(numeric, &grp, buf.data(), buf.size(), &found) == 0 && found != nullptr) return numeric;
      return std::nullopt;
    }
    if (getgrnam_r(name.c_str(), &grp, buf.data(), buf.size(), &found) == 0 && found != nullptr) {
      return static_cast<int64_t>(found->gr_gid);
    }
    return std::nullopt;
  }

  void ReadSocketPath(const YAML::Node& n, const std::string& path, std::string* out) {
    auto v = ReadNonEmptyString(n, path, problems_);
    if (!v) return;
    const std::string resolved = ResolvePath(*v);
    // bind() fails on a longer path with a confusing error much later; say
    // so here, with the resolved length.
    constexpr size_t kMaxSocketPath = sizeof(sockaddr_un::sun_path) - 1;
    if (resolved.size() > kMaxSocketPath) {
      problems_.Add(n, path,
                    absl::StrCat("path ", Quote(resolved), " is ", resolved.size(),
                                 " bytes; a Unix socket path may have at most ", kMaxSocketPath));
      return;
    }
    *out = resolved;
  }

  void LoadControl(const YAML::Node& node) {
    StrictMap map(node, "control", {"socket", "socket_mode"}, problems_);
    if (!map.valid()) return;
    if (const YAML::Node* n = map.Find("socket")) ReadSocketPath(*n, "control.socket", &config_.control.socket);
    if (const YAML::Node* n = map.Find("socket_mode")) {
      if (auto v = ReadFileMode(*n, "control.socket_mode", problems_)) {
        // The control socket replays and purges dead letters: root and
        // the daemon's user only.
        if ((*v & 0077) != 0) {
          problems_.Add(*n, "control.socket_mode",
                        absl::StrCat("must give no group or other access (root and the daemon's user only), got ",
                                     absl::StrFormat("%04o", *v)));
        } else {
          config_.control.socket_mode = *v;
        }
      }
    }
  }

  void LoadMetrics(const YAML::Node& node) {
    StrictMap map(node, "metrics", {"listen"}, problems_);
    if (!map.valid()) return;
    if (const YAML::Node* n = map.Find("listen")) {
      std::optional<std::string> text = ReadString(*n, "metrics.listen", problems_);
      if (!text) return;
      if (text->empty()) {
        config_.metrics.listen.clear();
        return;
      }
      absl::StatusOr<Endpoint> parsed = ParseEndpoint(*text);
      if (!parsed.ok() || !parsed->scheme.empty()) {
        problems_.Add(
            *n, "metrics.listen",
            absl::StrCat("must be host:port (e.g. \"127.0.0.1:9464\") or \"\" to disable, got ", Quote(*text)));
        return;
      }
      config_.metrics.listen = *text;
    }
  }

  // ----- drain

  // Applies the keys present in `node` on top of `*drain` (the defaults for a
  // route, or the built-in defaults for the top-level section).
  void LoadDrain(const YAML::Node& node, const std::string& path, DrainConfig* drain) {
    StrictMap map(node, path,
                  {"max_inflight_requests", "max_batch_records", "max_batch_bytes", "linger_ms", "ack_timeout_ms",
                   "create_timeout_ms", "backoff_initial_ms", "backoff_max_ms", "max_close_grace_ms",
                   "rotation_drain_ms", "parked_retry_ms", "max_consecutive_dead_letters", "failure_log_interval_ms",
                   "stream_idle_close_ms"},
                  problems_);
    if (!map.valid()) return;
    constexpr uint64_t kU32Max = std::numeric_limits<uint32_t>::max();
    auto read_u32 = [&](const char* key, uint64_t lo, uint64_t hi, uint32_t* out) -> bool {
      const YAML::Node* n = map.Find(key);
      if (!n) return true;
      std::optional<uint64_t> v = ReadUint(*n, map.Path(key), lo, hi, problems_);
      if (v) *out = static_cast<uint32_t>(*v);
      return v.has_value();
    };
    read_u32("max_inflight_requests", 1, 100'000, &drain->max_inflight_requests);
    read_u32("max_batch_records", 1, 1'000'000, &drain->max_batch_records);
    if (const YAML::Node* n = map.Find("max_batch_bytes")) {
      if (auto v = ReadByteSize(*n, map.Path("max_batch_bytes"), 1024, kMaxRequestBytes, problems_)) {
        drain->max_batch_bytes = *v;
      }
    }
    read_u32("linger_ms", 0, 60'000, &drain->linger_ms);
    read_u32("ack_timeout_ms", 100, 3'600'000, &drain->ack_timeout_ms);
    read_u32("create_timeout_ms", 100, 600'000, &drain->create_timeout_ms);
    read_u32("max_close_grace_ms", 0, 600'000, &drain->max_close_grace_ms);
    read_u32("stream_idle_close_ms", 100, 3'600'000, &drain->stream_idle_close_ms);
    read_u32("rotation_drain_ms", 0, 60'000, &drain->rotation_drain_ms);
    read_u32("parked_retry_ms", 100, 86'400'000, &drain->parked_retry_ms);
    read_u32("max_consecutive_dead_letters", 1, 1'000'000'000, &drain->max_consecutive_dead_letters);
    read_u32("failure_log_interval_ms", 1'000, 86'400'000, &drain->failure_log_interval_ms);
    const bool initial_ok = read_u32("backoff_initial_ms", 1, kU32Max, &drain->backoff_initial_ms);
    const bool max_ok = read_u32("backoff_max_ms", 1, kU32Max, &drain->backoff_max_ms);
    // Checked only where this section sets one of the two keys: a route that
    // inherits both would only repeat the top-level section's problem.
    const YAML::Node* initial_node = map.Find("backoff_initial_ms");
    const YAML::Node* max_node = map.Find("backoff_max_ms");
    if (initial_ok && max_ok && (initial_node || max_node) && drain->backoff_max_ms < drain->backoff_initial_ms) {
      if (max_node) {
        problems_.Add(*max_node, map.Path("backoff_max_ms"),
                      absl::StrCat("must be at least backoff_initial_ms (", drain->backoff_initial_ms, "), got ",
                                   drain->backoff_max_ms));
      } else {
        problems_.Add(*initial_node, map.Path("backoff_initial_ms"),
                      absl::StrCat("must be at most backoff_max_ms (", drain->backoff_max_ms, "), got ",
                                   drain->backoff_initial_ms));
      }
    }
  }

  // ----- routes

  void LoadRoutes(const YAML::Node& node, const DrainConfig& drain_defaults) {
    if (!node.IsSequence()) {
      problems_.Add(node, "routes", absl::StrCat("must be a list of routes, got ", Describe(node)));
      return;
    }
    if (node.size() == 0) {
      problems_.Add(node, "routes", "required: at least one route");
      return;
    }
    // Route name -> indices of the routes using it, in document order.
    std::map<std::string, std::vector<size_t>> uses;
    std::vector<std::pair<std::string, YAML::Node>> first_use;  // name, its first name node
    for (size_t i = 0; i < node.size(); ++i) {
      const YAML::Node item = node[i];
      RouteConfig route;
      route.drain = drain_defaults;
      route.stream_quota = config_.zerobus.stream_quota;
      if (std::optional<YAML::Node> name_node = LoadRoute(item, absl::StrCat("routes[", i, "]"), &route)) {
        std::vector<size_t>& indices = uses[route.name];
        if (indices.empty()) first_use.emplace_back(route.name, *name_node);
        indices.push_back(i);
      }
      config_.routes.push_back(std::move(route));
    }
    for (const auto& [name, name_node] : first_use) {
      const std::vector<size_t>& indices = uses[name];
      if (indices.size() < 2) continue;
      std::vector<std::string> others;
      for (size_t k = 1; k < indices.size(); ++k) others.push_back(absl::StrCat("routes[", indices[k], "]"));
      problems_.Add(name_node, absl::StrCat("routes[", indices[0], "].name"),
                    absl::StrCat("duplicate route name ", Quote(name), " (also ", absl::StrJoin(others, ", "), ")"));
    }
  }

  // Returns the name's node when the route has a valid name (so it takes
  // part in the uniqueness check).
  std::optional<YAML::Node> LoadRoute(const YAML::Node& node, const std::string& path, RouteConfig* route) {
    StrictMap map(node, path, {"name", "table", "format", "schema", "allow", "drain", "stream_quota", "max_streams"},
                  problems_);
    if (!map.valid()) return std::nullopt;
    std::optional<YAML::Node> name_node;
    if (const YAML::Node* n = map.Find("name")) {
      if (auto v = ReadString(*n, map.Path("name"), problems_)) {
        if (IsValidRouteName(*v)) {
          route->name = *v;
          name_node = *n;
        } else {
          problems_.Add(*n, map.Path("name"),
                        absl::StrCat("must be 1 to 64 characters of A-Z, a-z, 0-9, _ and -, got ", Quote(*v)));
        }
      }
    } else {
      problems_.Add(node, map.Path("name"), "required");
    }
    if (const YAML::Node* n = map.Find("table")) {
      if (auto v = ReadString(*n, map.Path("table"), problems_)) {
        if (IsValidTableName(*v)) {
          route->table = *v;
        } else {
          problems_.Add(*n, map.Path("table"),
                        absl::StrCat("must be catalog.schema.table, got ", Quote(*v),
                                     " (three non-empty parts of A-Z, a-z, 0-9 and _)"));
        }
      }
    } else {
      problems_.Add(node, map.Path("table"), "required");
    }
    bool format_ok = true;
    if (const YAML::Node* n = map.Find("format")) {
      std::optional<RecordFormat> format = ReadEnum<RecordFormat>(
          *n, map.Path("format"), {{"json", RecordFormat::kJson}, {"proto", RecordFormat::kProto}}, problems_);
      if (format) {
        route->format = *format;
      } else {
        format_ok = false;
      }
    }
    const YAML::Node* schema = map.Find("schema");
    if (format_ok) {
      if (route->format == RecordFormat::kProto) {
        if (schema) {
          LoadSchema(*schema, map.Path("schema"), route);
        } else {
          problems_.Add(node, map.Path("schema"), "required for format: proto (proto_file and message, or from_table: true)");
        }
      } else if (schema) {
        problems_.Add(*schema, map.Path("schema"), "only allowed with format: proto");
      }
    }
    if (const YAML::Node* n = map.Find("allow")) LoadAllow(*n, map.Path("allow"), route);
    if (const YAML::Node* n = map.Find("drain")) LoadDrain(*n, map.Path("drain"), &route->drain);
    if (const YAML::Node* n = map.Find("stream_quota")) {
      LoadStreamQuota(*n, map.Path("stream_quota"), &route->stream_quota);
    }
    if (const YAML::Node* n = map.Find("max_streams")) {
      if (auto v = ReadUint(*n, map.Path("max_streams"), 1, kMaxStreamsPerRoute, problems_)) {
        route->max_streams = static_cast<uint32_t>(*v);
      }
    }
    return name_node;
  }

  // Either a .proto file and its message, or `from_table: true`: the
  // table's columns read from Unity Catalog at run time.
  void LoadSchema(const YAML::Node& node, const std::string& path, RouteConfig* route) {
    StrictMap map(node, path, {"proto_file", "message", "from_table", "column_types"}, problems_);
    if (!map.valid()) return;
    if (const YAML::Node* n = map.Find("from_table")) {
      if (auto v = ReadBool(*n, map.Path("from_table"), problems_)) route->schema_from_table = *v;
      if (route->schema_from_table) {
        for (const char* key : {"proto_file", "message", "column_types"}) {
          if (const YAML::Node* other = map.Find(key)) {
            problems_.Add(*other, map.Path(key),
                          "not allowed with from_table: true (the table's columns are the schema)");
          }
        }
        return;
      }
    }
    const char* required = "required (or from_table: true to read the table's columns from Unity Catalog)";
    if (const YAML::Node* n = map.Find("proto_file")) {
      if (auto v = ReadNonEmptyString(*n, map.Path("proto_file"), problems_)) {
        route->proto_file = ResolvePath(*v);
        CheckReadable(*n, map.Path("proto_file"), route->proto_file);
      }
    } else {
      problems_.Add(node, map.Path("proto_file"), required);
    }
    if (const YAML::Node* n = map.Find("message")) {
      if (auto v = ReadNonEmptyString(*n, map.Path("message"), problems_)) {
        if (IsValidMessageName(*v)) {
          route->message = *v;
        } else {
          problems_.Add(
              *n, map.Path("message"),
              absl::StrCat("must be a protobuf message name such as Reading or pkg.Reading, got ", Quote(*v)));
        }
      }
    } else {
      problems_.Add(node, map.Path("message"), required);
    }
    if (const YAML::Node* n = map.Find("column_types")) LoadColumnTypes(*n, map.Path("column_types"), route);
  }

  // field: type text. The types themselves are checked against the message
  // when the route's codec is made (zerobusd --check does that too).
  void LoadColumnTypes(const YAML::Node& node, const std::string& path, RouteConfig* route) {
    if (!node.IsMap()) {
      problems_.Add(node, path, "must be a mapping of field name to Unity Catalog type, e.g. {ts: timestamp}");
      return;
    }
    for (const auto& entry : node) {
      const std::string key = entry.first.IsScalar() ? entry.first.Scalar() : "";
      const std::string at = absl::StrCat(path, ".", key);
      if (key.empty()) {
        problems_.Add(entry.first, path, "keys must be field names");
        continue;
      }
      if (auto v = ReadNonEmptyString(entry.second, at, problems_)) route->column_types.emplace_back(key, *v);
    }
  }

  void LoadAllow(const YAML::Node& node, const std::string& path, RouteConfig* route) {
    StrictMap map(node, path, {"uids", "gids"}, problems_);
    if (!map.valid()) return;
    auto read_ids = [&](const char* key, std::vector<uint32_t>* out) {
      const YAML::Node* n = map.Find(key);
      if (!n) return;
      const std::string list_path = map.Path(key);
      if (!n->IsSequence()) {
        problems_.Add(*n, list_path, absl::StrCat("must be a list of numeric ids, got ", Describe(*n)));
        return;
      }
      for (size_t i = 0; i < n->size(); ++i) {
        const YAML::Node item = (*n)[i];
        // (uid_t)-1 means "no change" to the kernel and is never a real id.
        if (auto id = ReadUint(item, absl::StrCat(list_path, "[", i, "]"), 0, std::numeric_limits<uint32_t>::max() - 1,
                               problems_)) {
          out->push_back(static_cast<uint32_t>(*id));
        }
      }
    };
    read_ids("uids", &route->allow_uids);
    read_ids("gids", &route->allow_gids);
  }

  // ----- paths

  // Relative paths are taken against the config file's directory, so a
  // config works the same whatever the daemon's working directory is.
  std::string ResolvePath(const std::string& path) const {
    const fs::path p(path);
    if (p.is_absolute() || base_dir_.empty()) return path;
    return (base_dir_ / p).lexically_normal().string();
  }

  void CheckReadable(const YAML::Node& at, const std::string& path, const std::string& file) {
    const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
      problems_.Add(at, path, absl::StrCat("cannot read ", Quote(file), ": ", ErrnoText(errno)));
      return;
    }
    struct stat st;
    const bool regular = ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
    ::close(fd);
    if (!regular) problems_.Add(at, path, absl::StrCat(Quote(file), " is not a regular file"));
  }

  std::string origin_;
  fs::path base_dir_;
  Problems problems_;
  DaemonConfig config_;
  bool missing_credential_ = false;
  bool credentials_required_ = true;  // false: a missing credential is not a problem (LoadOptions)
};

absl::StatusOr<DaemonConfig> LoadWithBase(const std::string& yaml, const std::string& origin, fs::path base_dir,
                                          bool credentials_required = true) {
  // yaml-cpp reports through exceptions, and node access can throw on
  // malformed trees; nothing may leave this file as an exception.
  try {
    Loader loader(origin, std::move(base_dir));
    loader.set_credentials_required(credentials_required);
    return loader.Load(yaml);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(origin.empty() ? "" : absl::StrCat(origin, ": "), "yaml: ", e.msg));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(origin, ": loading the config failed: ", e.what()));
  } catch (...) {
    return absl::InternalError(absl::StrCat(origin, ": loading the config failed"));
  }
}

}  // namespace

absl::StatusOr<DaemonConfig> LoadConfigFile(const std::string& path) { return LoadConfigFile(path, LoadOptions{}); }

absl::StatusOr<DaemonConfig> LoadConfigFile(const std::string& path, const LoadOptions& options) {
  FileRead read = ReadSmallFile(path, kMaxConfigFileBytes);
  if (read.error != 0) {
    if (read.error == EINVAL || read.error == EFBIG || read.error == EISDIR) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot read config file ", Quote(path), ": ", FileErrorText(read.error)));
    }
    return absl::ErrnoToStatus(read.error, absl::StrCat("cannot read config file ", Quote(path)));
  }
  std::error_code ec;
  fs::path base = fs::absolute(fs::path(path), ec).parent_path();
  if (ec) base = fs::path(path).parent_path();
  return LoadWithBase(read.content, path, base, options.credentials_required);
}

absl::StatusOr<DaemonConfig> LoadConfigString(const std::string& yaml, const std::string& origin) {
  std::error_code ec;
  fs::path base = fs::current_path(ec);
  if (ec) base.clear();
  return LoadWithBase(yaml, origin, base);
}

}  // namespace zb
