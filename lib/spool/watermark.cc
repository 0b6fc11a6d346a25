#include "spool/watermark.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "spool.pb.h"
#include "spool/spool_dir.h"

namespace zb {
namespace {

std::string WatermarkPath(const std::string& spool) { return spool + "/" + kWatermarkFile; }

}  // namespace

bool WriteWatermark(const std::string& spool_path, const std::map<std::string, SeqNo>& lane_next_seq,
                    uint64_t dead_letter_next_id, int64_t written_us) {
  ::zerobusd::spool::Watermark mark;
  for (const auto& [name, next_seq] : lane_next_seq) (*mark.mutable_lane_next_seq())[name] = next_seq;
  mark.set_dead_letter_next_id(dead_letter_next_id);
  mark.set_written_us(written_us);
  const std::string final_path = WatermarkPath(spool_path);
  const std::string tmp = final_path + ".tmp";
  const std::string bytes = mark.SerializeAsString();
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, kSpoolFileMode);
  if (fd < 0) return false;
  const bool written = ::fchmod(fd, kSpoolFileMode) == 0 &&  // a leftover tmp keeps its mode
                       ::write(fd, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size()) &&
                       ::fsync(fd) == 0;
  ::close(fd);
  if (!written || ::rename(tmp.c_str(), final_path.c_str()) != 0) return false;
  const int dir = ::open(spool_path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir >= 0) {
    ::fsync(dir);
    ::close(dir);
  }
  return true;
}

absl::Status CheckWatermark(const std::string& path, const std::map<std::string, LaneStats>& lanes,
                            uint64_t dead_letter_next_id) {
  std::ifstream in(WatermarkPath(path), std::ios::binary);
  if (!in) return absl::OkStatus();  // a new spool, or one from before watermarks
  std::stringstream ss;
  ss << in.rdbuf();
  ::zerobusd::spool::Watermark mark;
  const std::string hint = absl::StrCat(
      " The spool was left untouched: restore it from a backup, or move it away to start empty (`zerobusctl spool "
      "verify --path ",
      path, "` shows what it holds).");
  if (!mark.ParseFromString(ss.str())) {
    return absl::DataLossError(absl::StrCat("spool at ", path, ": its watermark file ", kWatermarkFile,
                                            " is damaged, so the spool cannot be checked for lost data.", hint));
  }
  std::vector<std::string> lost;
  for (const auto& [lane, next_seq] : mark.lane_next_seq()) {
    auto it = lanes.find(lane);
    const SeqNo have = it == lanes.end() ? 1 : it->second.next_seq;
    if (have < next_seq) {
      lost.push_back(absl::StrCat("lane ", lane, " had records up to seq ", next_seq - 1, " but its metadata ends at ",
                                  have - 1));
    }
  }
  if (dead_letter_next_id < mark.dead_letter_next_id()) {
    lost.push_back(absl::StrCat("the dead-letter store had entries up to ", mark.dead_letter_next_id() - 1,
                                " but ends at ", dead_letter_next_id - 1));
  }
  if (lost.empty()) return absl::OkStatus();
  return absl::DataLossError(absl::StrCat("spool at ", path, " is damaged: it holds less than it did at ",
                                          absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::FromUnixMicros(mark.written_us()),
                                                           absl::UTCTimeZone()),
                                          " (", absl::StrJoin(lost, "; "),
                                          "): RocksDB's MANIFEST or files lost committed data.", hint));
}

}  // namespace zb
