#include "tools/devserver/dev_state.h"

#include <filesystem>
#include <random>

#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"
#include "spdlog/spdlog.h"

namespace zb::devserver {

DevState::DevState(DevOptions options) : options_(std::move(options)) {
  std::error_code ec;
  std::filesystem::create_directories(options_.output_dir, ec);
}

DevState::~DevState() {
  for (auto& [_, f] : files_) std::fclose(f);
}

std::string DevState::IssueToken(const std::string& table, int ttl_s) {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  char buf[40];
  std::snprintf(buf, sizeof(buf), "dev-%016llx%08llx", static_cast<unsigned long long>(rng()),
                static_cast<unsigned long long>(rng() & 0xffffffff));
  std::lock_guard<std::mutex> lock(mu_);
  tokens_[buf] = TokenInfo{table, std::chrono::steady_clock::now() + std::chrono::seconds(ttl_s)};
  ++tokens_issued_;
  return buf;
}

std::string DevState::CheckToken(const std::string& token, const std::string& table) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = tokens_.find(token);
  if (it == tokens_.end()) return "unknown token";
  if (std::chrono::steady_clock::now() >= it->second.expires) return "token expired";
  if (it->second.table.empty()) return "a metadata token (minted without resource) cannot write to tables";
  if (it->second.table != table) return "token was minted for table " + it->second.table + ", not " + table;
  return "";
}

std::string DevState::CheckMetadataToken(const std::string& token) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = tokens_.find(token);
  if (it == tokens_.end()) return "unknown token";
  if (std::chrono::steady_clock::now() >= it->second.expires) return "token expired";
  if (!it->second.table.empty()) {
    return "a Zerobus ingest token (minted for table " + it->second.table +
           ") cannot read Unity Catalog: mint one with scope all-apis and no resource";
  }
  return "";
}

std::shared_ptr<FaultScript> DevState::faults() {
  std::lock_guard<std::mutex> lock(mu_);
  return faults_;
}

void DevState::SetFaults(std::shared_ptr<FaultScript> faults) {
  std::lock_guard<std::mutex> lock(mu_);
  faults_ = std::move(faults);
}

void DevState::FaultInjected(const std::string& what) {
  spdlog::info("fault injected: {}", what);
  std::lock_guard<std::mutex> lock(mu_);
  ++faults_injected_;
}

void DevState::RowsDiscarded(uint64_t n) {
  std::lock_guard<std::mutex> lock(mu_);
  rows_discarded_ += n;
}

void DevState::TokenRejected() {
  std::lock_guard<std::mutex> lock(mu_);
  ++tokens_rejected_;
}

void DevState::TokenBodyScripted() {
  std::lock_guard<std::mutex> lock(mu_);
  ++token_bodies_scripted_;
}

void DevState::TokenBodyBytesWritten(uint64_t n) {
  std::lock_guard<std::mutex> lock(mu_);
  token_body_bytes_written_ += n;
}

void DevState::TokenBodyAbandoned() {
  std::lock_guard<std::mutex> lock(mu_);
  ++token_bodies_abandoned_;
}

bool DevState::StoreRows(const std::string& table, const std::vector<std::string>& rows, std::string* error) {
  std::lock_guard<std::mutex> lock(mu_);
  FILE*& f = files_[table];
  if (f == nullptr) {
    const std::string path = options_.output_dir + "/" + table + ".jsonl";
    f = std::fopen(path.c_str(), "ab");
    if (f == nullptr) {
      *error = "cannot open " + path;
      files_.erase(table);
      return false;
    }
  }
  for (const auto& row : rows) {
    std::fwrite(row.data(), 1, row.size(), f);
    std::fputc('\n', f);
  }
  if (std::fflush(f) != 0) {
    *error = "cannot write rows of " + table;
    return false;
  }
  records_ += rows.size();
  table_records_[table] += rows.size();
  return true;
}

void DevState::StreamOpened() {
  std::lock_guard<std::mutex> lock(mu_);
  ++streams_opened_;
}

void DevState::StreamCreated(const std::string& table, const std::string& stream_id, const std::string& sdk,
                             const std::string& user_agent) {
  std::lock_guard<std::mutex> lock(mu_);
  ++streams_created_;
  ++table_streams_[table];
  uint64_t& open = ++table_open_streams_[table];
  table_max_open_streams_[table] = std::max(table_max_open_streams_[table], open);
  recent_streams_.push_back(RecentStream{stream_id, sdk, user_agent});
  if (recent_streams_.size() > 20) recent_streams_.pop_front();
}

void DevState::StreamEnded(const std::string& table) {
  std::lock_guard<std::mutex> lock(mu_);
  uint64_t& open = table_open_streams_[table];
  if (open > 0) --open;
}

void DevState::QuotaExceeded(const std::string& table) {
  std::lock_guard<std::mutex> lock(mu_);
  ++quota_trips_;
  ++table_quota_trips_[table];
}

void DevState::Violation(const std::string& what) {
  std::lock_guard<std::mutex> lock(mu_);
  ++violations_;
  last_violations_.push_back(what);
  if (last_violations_.size() > 10) last_violations_.pop_front();
}

void DevState::Request(uint64_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  ++requests_;
  largest_request_bytes_ = std::max(largest_request_bytes_, bytes);
}

void DevState::AckSent() {
  std::lock_guard<std::mutex> lock(mu_);
  ++acks_;
}

void DevState::CloseSignalSent() {
  std::lock_guard<std::mutex> lock(mu_);
  ++close_signals_;
}

std::string DevState::StatsJson() {
  std::lock_guard<std::mutex> lock(mu_);
  rapidjson::StringBuffer buf;
  rapidjson::Writer<rapidjson::StringBuffer> w(buf);
  w.StartObject();
  auto num = [&](const char* k, uint64_t v) {
    w.Key(k);
    w.Uint64(v);
  };
  num("streams_opened", streams_opened_);
  num("streams_created", streams_created_);
  num("violations", violations_);
  num("records_stored", records_);
  num("requests", requests_);
  num("largest_request_bytes", largest_request_bytes_);
  num("acks_sent", acks_);
  num("close_signals_sent", close_signals_);
  num("tokens_issued", tokens_issued_);
  num("token_requests_rejected", tokens_rejected_);
  num("token_bodies_scripted", token_bodies_scripted_);
  num("token_body_bytes_written", token_body_bytes_written_);
  num("token_bodies_abandoned", token_bodies_abandoned_);
  num("faults_injected", faults_injected_);
  num("rows_discarded", rows_discarded_);
  num("quota_trips", quota_trips_);
  w.Key("last_violations");
  w.StartArray();
  for (const auto& v : last_violations_) w.String(v.c_str());
  w.EndArray();
  w.Key("tables");
  w.StartObject();
  // Every table a stream was created for, rows or not.
  for (const auto& [table, streams] : table_streams_) {
    w.Key(table.c_str());
    w.StartObject();
    num("records", table_records_[table]);
    num("streams", streams);
    num("open_streams", table_open_streams_[table]);
    num("max_open_streams", table_max_open_streams_[table]);
    num("quota_trips", table_quota_trips_[table]);
    w.EndObject();
  }
  w.EndObject();
  w.Key("recent_streams");
  w.StartArray();
  for (const auto& r : recent_streams_) {
    w.StartObject();
    w.Key("stream_id");
    w.String(r.stream_id.c_str());
    w.Key("x_zerobus_sdk");
    w.String(r.sdk.c_str());
    w.Key("user_agent");
    w.String(r.user_agent.c_str());
    w.EndObject();
  }
  w.EndArray();
  w.EndObject();
  return buf.GetString();
}

}  // namespace zb::devserver
