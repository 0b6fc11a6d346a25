#include "tools/devserver/http_endpoint.h"

#include <utility>  // before Asio (Boost 1.74 quirk with C++20)

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/core/detail/base64.hpp>
#include <boost/beast/http.hpp>
#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/endpoint.h"
#include "common/log_limiter.h"
#include "rapidjson/document.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"
#include "spdlog/spdlog.h"
#include "tools/devserver/bounded_json.h"

namespace zb::devserver {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

std::string UrlDecode(const std::string& in) {
  std::string out;
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] == '+') {
      out += ' ';
    } else if (in[i] == '%' && i + 2 < in.size()) {
      out += static_cast<char>(std::stoi(in.substr(i + 1, 2), nullptr, 16));
      i += 2;
    } else {
      out += in[i];
    }
  }
  return out;
}

std::map<std::string, std::string> ParseForm(const std::string& body) {
  std::map<std::string, std::string> out;
  size_t pos = 0;
  while (pos <= body.size()) {
    size_t amp = body.find('&', pos);
    if (amp == std::string::npos) amp = body.size();
    const std::string pair = body.substr(pos, amp - pos);
    const size_t eq = pair.find('=');
    if (!pair.empty()) {
      try {
        out[UrlDecode(pair.substr(0, eq))] = eq == std::string::npos ? "" : UrlDecode(pair.substr(eq + 1));
      } catch (...) {
      }
    }
    pos = amp + 1;
  }
  return out;
}

// A token endpoint's answer with `token`.
TokenAnswer TokenJson(const std::string& token, int ttl_s) {
  rapidjson::StringBuffer buf;
  rapidjson::Writer<rapidjson::StringBuffer> w(buf);
  w.StartObject();
  w.Key("access_token");
  w.String(token.c_str());
  w.Key("token_type");
  w.String("Bearer");
  w.Key("expires_in");
  w.Int(ttl_s);
  w.Key("scope");
  w.String("all-apis");
  w.EndObject();
  return TokenAnswer{200, buf.GetString()};
}

// Unity Catalog's error body: {"error_code": ..., "message": ...}.
std::string UcErrorJson(const std::string& code, const std::string& message) {
  rapidjson::StringBuffer buf;
  rapidjson::Writer<rapidjson::StringBuffer> w(buf);
  w.StartObject();
  w.Key("error_code");
  w.String(code.c_str());
  w.Key("message");
  w.String(message.c_str());
  w.EndObject();
  return buf.GetString();
}

std::string ErrorJson(const std::string& error, const std::string& description) {
  rapidjson::StringBuffer buf;
  rapidjson::Writer<rapidjson::StringBuffer> w(buf);
  w.StartObject();
  w.Key("error");
  w.String(error.c_str());
  w.Key("error_description");
  w.String(description.c_str());
  w.EndObject();
  return buf.GetString();
}

// Checks authorization_details; returns the table it names or an error.
std::string TableFromDetails(const std::string& json, std::string* error) {
  rapidjson::Document d;
  if (!ParseBoundedJson(json, &d).empty() || !d.IsArray() || d.Size() != 3) {
    *error = "authorization_details must be a JSON array of 3 unity_catalog_privileges entries";
    return "";
  }
  std::map<std::string, std::pair<std::string, std::vector<std::string>>> by_type;
  for (const auto& e : d.GetArray()) {
    if (!e.IsObject() || !e.HasMember("type") || !e["type"].IsString() ||
        std::string(e["type"].GetString()) != "unity_catalog_privileges" || !e.HasMember("object_type") ||
        !e["object_type"].IsString() || !e.HasMember("object_full_path") || !e["object_full_path"].IsString() ||
        !e.HasMember("privileges") || !e["privileges"].IsArray()) {
      *error = "authorization_details entries need type, object_type, object_full_path and privileges";
      return "";
    }
    std::vector<std::string> privs;
    for (const auto& p : e["privileges"].GetArray()) {
      if (p.IsString()) privs.push_back(p.GetString());
    }
    by_type[e["object_type"].GetString()] = {e["object_full_path"].GetString(), privs};
  }
  if (by_type.count("CATALOG") == 0 || by_type.count("SCHEMA") == 0 || by_type.count("TABLE") == 0) {
    *error = "authorization_details must have CATALOG, SCHEMA and TABLE entries";
    return "";
  }
  const std::string table = by_type["TABLE"].first;
  const size_t dot1 = table.find('.');
  const size_t dot2 = table.find('.', dot1 + 1);
  if (dot1 == std::string::npos || dot2 == std::string::npos || table.find('.', dot2 + 1) != std::string::npos) {
    *error = "TABLE object_full_path must be catalog.schema.table";
    return "";
  }
  if (by_type["CATALOG"].first != table.substr(0, dot1) || by_type["SCHEMA"].first != table.substr(0, dot2)) {
    *error = "CATALOG and SCHEMA object_full_path must be the table's catalog and catalog.schema";
    return "";
  }
  if (by_type["CATALOG"].second != std::vector<std::string>{"USE CATALOG"} ||
      by_type["SCHEMA"].second != std::vector<std::string>{"USE SCHEMA"} ||
      by_type["TABLE"].second != std::vector<std::string>{"SELECT", "MODIFY"}) {
    *error = "privileges must be USE CATALOG, USE SCHEMA and SELECT+MODIFY";
    return "";
  }
  return table;
}

class BeastEndpoint final : public HttpEndpoint {
 public:
  explicit BeastEndpoint(DevState& state) : state_(state), acceptor_(io_) {}
  ~BeastEndpoint() override {
    io_.stop();
    if (thread_.joinable()) thread_.join();
  }

  absl::Status Start(const std::string& listen) {
    auto ep = ParseEndpoint(listen);
    if (!ep.ok()) return absl::InvalidArgumentError("--http-listen: " + std::string(ep.status().message()));
    boost::system::error_code ec;
    asio::ip::tcp::endpoint endpoint(asio::ip::make_address(ep->host, ec), ep->port);
    if (ec) return absl::InvalidArgumentError("--http-listen: bad address " + ep->host);
    acceptor_.open(endpoint.protocol(), ec);
    if (!ec) acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) acceptor_.bind(endpoint, ec);
    if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) return absl::UnavailableError("--http-listen " + listen + ": " + ec.message());
    port_ = acceptor_.local_endpoint().port();
    Accept();
    thread_ = std::thread([this] { io_.run(); });
    return absl::OkStatus();
  }

  int port() const override { return port_; }

 private:
  void Accept() {
    acceptor_.async_accept([this](boost::system::error_code ec, asio::ip::tcp::socket socket) {
      if (ec == asio::error::operation_aborted) return;  // shutting down
      if (ec) {
        OnAcceptError(ec);
        return;
      }
      backoff_ = kAcceptBackoffInitial;
      // One thread per connection: clients such as libcurl keep connections
      // alive, and a blocking read must not stall everybody else.
      std::thread([this, socket = std::move(socket)]() mutable { Serve(std::move(socket)); }).detach();
      Accept();
    });
  }

  // Never stops accepting. Out of descriptors (EMFILE, ENFILE) or memory
  // (ENOBUFS, ENOMEM), the connection waits in the backlog: retry after a
  // backoff instead of spinning, and log a summary at most every 5 s.
  void OnAcceptError(const boost::system::error_code& ec) {
    uint64_t suppressed = 0;
    if (accept_log_.ShouldLog(std::chrono::steady_clock::now(), &suppressed)) {
      spdlog::warn("http: accept failed: {} ({} more failure(s) since the last report); still accepting",
                   ec.message(), suppressed);
    }
    if (ec == asio::error::connection_aborted || ec == asio::error::interrupted ||
        ec == asio::error::try_again) {
      Accept();  // about that one connection only
      return;
    }
    retry_timer_.expires_after(backoff_);
    backoff_ = std::min<std::chrono::steady_clock::duration>(backoff_ * 2, kAcceptBackoffMax);
    retry_timer_.async_wait([this](boost::system::error_code wait_ec) {
      if (!wait_ec) Accept();
    });
  }

  // Writes a scripted token body: the header with Content-Length, then the
  // body in 64 KiB pieces, each made just before it is written (the prefix,
  // then spaces). Stops at the first write error (the client closed: it
  // stopped reading); counts every byte the socket accepted.
  void WriteScripted(asio::ip::tcp::socket& socket, const http::request<http::string_body>& req,
                     const TokenAnswer& answer, beast::error_code& ec) {
    // A fixed send buffer (no autotuning up to megabytes), so the bytes
    // counted as written stay close to what the client really read.
    beast::error_code ignored;
    socket.set_option(asio::socket_base::send_buffer_size(64 * 1024), ignored);
    http::response<http::empty_body> head{static_cast<http::status>(answer.status), req.version()};
    head.set(http::field::content_type, "application/json");
    head.keep_alive(req.keep_alive());
    const unsigned status = answer.status;
    if (status >= 200 && status != 204 && status != 304) head.content_length(answer.body_bytes);
    http::response_serializer<http::empty_body> sr{head};
    http::write_header(socket, sr, ec);
    constexpr uint64_t kPiece = 64 * 1024;
    std::string piece;
    uint64_t at = 0;
    while (!ec && at < answer.body_bytes) {
      const size_t len = static_cast<size_t>(std::min(kPiece, answer.body_bytes - at));
      piece.assign(len, ' ');
      if (at < answer.body.size()) {
        const size_t from_body = std::min<size_t>(len, answer.body.size() - at);
        piece.replace(0, from_body, answer.body, at, from_body);
      }
      const size_t n = asio::write(socket, asio::buffer(piece), ec);
      state_.TokenBodyBytesWritten(n);
      at += n;
    }
    if (ec) {
      state_.TokenBodyAbandoned();
      spdlog::info("token body: the client closed after {} of {} bytes ({})", at, answer.body_bytes, ec.message());
    }
  }

  void Serve(asio::ip::tcp::socket socket) {
    beast::error_code ec;
    beast::flat_buffer buffer;
    while (true) {
      http::request<http::string_body> req;
      http::read(socket, buffer, req, ec);
      if (ec) break;
      http::response<http::string_body> res;
      res.version(req.version());
      res.keep_alive(req.keep_alive());
      res.set(http::field::content_type, "application/json");
      const std::string target(req.target());
      if (target == "/oidc/v1/token" && req.method() == http::verb::post) {
        TokenAnswer answer = HandleTokenRequest(state_, std::string(req[http::field::authorization]),
                                                std::string(req[http::field::content_type]), req.body());
        if (answer.scripted) {
          WriteScripted(socket, req, answer, ec);
          if (ec || !req.keep_alive()) break;
          continue;
        }
        res.result(static_cast<http::status>(answer.status));
        // Such replies have no body (and Beast refuses to send one).
        const unsigned status = answer.status;
        if (status >= 200 && status != 204 && status != 304) res.body() = std::move(answer.body);
      } else if (target.rfind(kUcTablesPath, 0) == 0 && req.method() == http::verb::get) {
        auto [status, body] = HandleTableRequest(state_, target.substr(std::strlen(kUcTablesPath)),
                                                 std::string(req[http::field::authorization]));
        res.result(static_cast<http::status>(status));
        res.body() = std::move(body);
      } else if (target == "/faults" && req.method() == http::verb::post) {
        // Replaces the fault script (cursors start over).
        auto script = FaultScript::Parse(req.body());
        if (script.ok()) {
          state_.SetFaults(std::move(*script));
          res.result(http::status::ok);
          res.body() = "{}";
        } else {
          res.result(http::status::bad_request);
          res.body() = ErrorJson("invalid_faults", std::string(script.status().message()));
        }
      } else if (target == "/faults") {
        res.result(http::status::ok);
        const std::string source = state_.faults()->source();
        res.body() = source.empty() ? "{}" : source;
      } else if (target == "/stats") {
        res.result(http::status::ok);
        res.body() = state_.StatsJson();
      } else if (target == "/healthz") {
        res.result(http::status::ok);
        res.set(http::field::content_type, "text/plain");
        res.body() = "ok\n";
      } else {
        res.result(http::status::not_found);
        res.body() = ErrorJson("not_found", "unknown path " + target);
      }
      res.prepare_payload();
      http::write(socket, res, ec);
      if (ec || !req.keep_alive()) break;
    }
    socket.shutdown(asio::ip::tcp::socket::shutdown_both, ec);
  }

  static constexpr std::chrono::milliseconds kAcceptBackoffInitial{100};
  static constexpr std::chrono::milliseconds kAcceptBackoffMax{1000};

  DevState& state_;
  asio::io_context io_;
  asio::ip::tcp::acceptor acceptor_;
  asio::steady_timer retry_timer_{io_};
  std::chrono::steady_clock::duration backoff_ = kAcceptBackoffInitial;
  RateLimitedLog accept_log_{std::chrono::seconds(5)};
  std::thread thread_;
  int port_ = 0;
};

}  // namespace

std::pair<int, std::string> HandleTableRequest(DevState& state, const std::string& name,
                                               const std::string& authorization) {
  const DevOptions& o = state.options();
  if (authorization.rfind("Bearer ", 0) != 0) {
    return {401, UcErrorJson("UNAUTHENTICATED", "missing Authorization: Bearer <token>")};
  }
  if (std::string why = state.CheckMetadataToken(authorization.substr(7)); !why.empty()) {
    return {why.find("ingest token") != std::string::npos ? 403 : 401,
            UcErrorJson(why.find("ingest token") != std::string::npos ? "PERMISSION_DENIED" : "UNAUTHENTICATED", why)};
  }
  // catalog.schema.table, nothing that could leave the folder.
  const bool valid = !name.empty() && name.size() <= 255 && std::count(name.begin(), name.end(), '.') == 2 &&
                     std::all_of(name.begin(), name.end(), [](char c) {
                       return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.';
                     }) &&
                     name.find("..") == std::string::npos && name.front() != '.' && name.back() != '.';
  if (!valid) return {400, UcErrorJson("INVALID_PARAMETER_VALUE", "not a table name: " + name)};
  std::ifstream in(o.tables_dir + "/" + name + ".json", std::ios::binary);
  if (o.tables_dir.empty() || !in) {
    return {404, UcErrorJson("TABLE_DOES_NOT_EXIST", "Table '" + name + "' does not exist.")};
  }
  std::stringstream text;
  text << in.rdbuf();
  return {200, text.str()};
}

TokenAnswer HandleTokenRequest(DevState& state, const std::string& authorization, const std::string& content_type,
                               const std::string& body) {
  const DevOptions& o = state.options();
  auto reject = [&](int status, const std::string& error, const std::string& why) {
    state.TokenRejected();
    spdlog::info("token request refused: {} {}", status, why);
    return TokenAnswer{status, ErrorJson(error, why)};
  };
  const TokenFault fault = state.faults()->NextToken();
  if (fault.delay_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(fault.delay_ms));
  if (fault.scripted_body()) {
    TokenAnswer answer{fault.status, fault.body.value_or("")};
    answer.scripted = true;
    answer.body_bytes = std::max<uint64_t>(answer.body.size(), static_cast<uint64_t>(fault.body_bytes));
    state.FaultInjected(absl::StrCat("token endpoint answers HTTP ", fault.status, " with a scripted body of ",
                                     answer.body_bytes, " bytes"));
    state.TokenBodyScripted();
    if (fault.status != 200) state.TokenRejected();
    return answer;
  }
  if (fault.echo_request) {
    state.FaultInjected("token endpoint echoes the request");
    std::string decoded;
    if (authorization.rfind("Basic ", 0) == 0) {
      const std::string enc = authorization.substr(6);
      decoded.resize(beast::detail::base64::decoded_size(enc.size()));
      decoded.resize(beast::detail::base64::decode(decoded.data(), enc.data(), enc.size()).first);
    }
    if (fault.status != 200) state.TokenRejected();
    return TokenAnswer{fault.status, absl::StrCat("request was: Authorization: ", authorization,
                                                  "\ncredential: ", decoded, "\nbody: ", body, "\n")};
  }
  if (fault.status != 200) {
    state.FaultInjected("token endpoint answers " + std::to_string(fault.status));
    return reject(fault.status, fault.status == 429 ? "rate_limited" : fault.status >= 500 ? "server_error"
                                                                                            : "invalid_client",
                  "injected fault: HTTP " + std::to_string(fault.status));
  }
  const int ttl_s = fault.ttl_s > 0 ? fault.ttl_s : o.token_ttl_s;
  if (authorization.rfind("Basic ", 0) != 0) {
    return reject(401, "invalid_client", "missing HTTP Basic authorization");
  }
  std::string decoded;
  {
    const std::string enc = authorization.substr(6);
    decoded.resize(beast::detail::base64::decoded_size(enc.size()));
    auto r = beast::detail::base64::decode(decoded.data(), enc.data(), enc.size());
    decoded.resize(r.first);
  }
  if (decoded != o.client_id + ":" + o.client_secret) {
    return reject(401, "invalid_client", "client authentication failed");
  }
  if (content_type.rfind("application/x-www-form-urlencoded", 0) != 0) {
    return reject(400, "invalid_request", "Content-Type must be application/x-www-form-urlencoded");
  }
  auto form = ParseForm(body);
  if (form["grant_type"] != "client_credentials") {
    return reject(400, "unsupported_grant_type", "grant_type must be client_credentials");
  }
  if (form["scope"] != "all-apis") return reject(400, "invalid_scope", "scope must be all-apis");
  if (form.count("resource") == 0) {
    // A metadata token, for the Unity Catalog API (what the schema tools
    // mint): it cannot write to Zerobus.
    return TokenJson(state.IssueToken("", ttl_s), ttl_s);
  }
  const std::string prefix = "api://databricks/workspaces/";
  const std::string suffix = "/zerobusDirectWriteApi";
  const std::string& resource = form["resource"];
  if (resource.rfind(prefix, 0) != 0 || resource.size() <= prefix.size() + suffix.size() ||
      resource.compare(resource.size() - suffix.size(), suffix.size(), suffix) != 0) {
    return reject(400, "invalid_request",
                  "resource must be api://databricks/workspaces/<workspace_id>/zerobusDirectWriteApi");
  }
  const std::string workspace = resource.substr(prefix.size(), resource.size() - prefix.size() - suffix.size());
  if (!o.workspace_id.empty() && workspace != o.workspace_id) {
    return reject(400, "invalid_request", "resource names workspace " + workspace + ", expected " + o.workspace_id);
  }
  if (form.count("authorization_details") == 0) {
    return reject(400, "invalid_request", "missing authorization_details");
  }
  std::string error;
  const std::string table = TableFromDetails(form["authorization_details"], &error);
  if (table.empty()) return reject(400, "invalid_request", error);
  return TokenJson(state.IssueToken(table, ttl_s), ttl_s);
}

absl::StatusOr<std::unique_ptr<HttpEndpoint>> StartHttpEndpoint(const std::string& listen, DevState& state) {
  auto endpoint = std::make_unique<BeastEndpoint>(state);
  if (auto s = endpoint->Start(listen); !s.ok()) return s;
  return std::unique_ptr<HttpEndpoint>(std::move(endpoint));
}

}  // namespace zb::devserver
