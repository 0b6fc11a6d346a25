// Measures the raw limit of this disk for what the spool must do: RocksDB
// WriteBatches of --batch records of --size bytes, each written with
// sync=true. Prints "raw_records_per_s N". The baseline for bench/run.sh.

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "rocksdb/db.h"
#include "rocksdb/write_batch.h"

int main(int argc, char** argv) {
  std::string path;
  long records = 1'000'000, batch = 1000, size = 200;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--path")) path = argv[i + 1];
    else if (!std::strcmp(argv[i], "--records")) records = std::atol(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--batch")) batch = std::atol(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--size")) size = std::atol(argv[i + 1]);
  }
  if (path.empty()) {
    std::fprintf(stderr, "usage: zerobus-bench-rocksdb --path DIR [--records N] [--batch N] [--size BYTES]\n");
    return 2;
  }
  rocksdb::Options options;
  options.create_if_missing = true;
  options.write_buffer_size = 64u << 20;
  rocksdb::DB* raw = nullptr;
  rocksdb::Status s = rocksdb::DB::Open(options, path, &raw);
  if (!s.ok()) {
    std::fprintf(stderr, "open: %s\n", s.ToString().c_str());
    return 1;
  }
  std::unique_ptr<rocksdb::DB> db(raw);
  const std::string value(static_cast<size_t>(size), 'v');
  rocksdb::WriteOptions wo;
  wo.sync = true;
  const auto start = std::chrono::steady_clock::now();
  long written = 0;
  while (written < records) {
    rocksdb::WriteBatch wb;
    for (long i = 0; i < batch && written < records; ++i, ++written) {
      char key[32];
      std::snprintf(key, sizeof(key), "k%016ld", written);
      wb.Put(key, value);
    }
    s = db->Write(wo, &wb);
    if (!s.ok()) {
      std::fprintf(stderr, "write: %s\n", s.ToString().c_str());
      return 1;
    }
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("raw_records_per_s %.0f\n", static_cast<double>(records) / secs);
  std::printf("raw_seconds %.3f\n", secs);
  return 0;
}
