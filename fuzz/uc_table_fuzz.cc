// Fuzzes what Unity Catalog answers about a table (the daemon and
// `zerobusctl gen-proto` read it from the network): zb::ParseUcTable on the
// JSON, then zb::TableToProto. Nothing may crash or recurse without bound;
// a table that maps gives a DescriptorProto that builds on its own in a
// package-less file (as the server builds it) and a non-empty .proto text;
// one that does not says why. A last byte of 0x01 fuzzes a bare type_text
// (zb::ParseUcType) instead.

#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz/fuzz_check.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/descriptor.pb.h"
#include "schema/uc_schema.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string input(reinterpret_cast<const char*>(data), size - 1);
  if (data[size - 1] == 0x01) {
    absl::StatusOr<zb::UcType> type = zb::ParseUcType(input);
    ZB_FUZZ_CHECK(type.ok() || !type.status().message().empty(), "an error without words");
    return 0;
  }
  absl::StatusOr<zb::UcTable> table = zb::ParseUcTable(input);
  if (!table.ok()) {
    ZB_FUZZ_CHECK(!table.status().message().empty(), "an error without words");
    return 0;
  }
  absl::StatusOr<zb::TableProto> proto = zb::TableToProto(*table);
  if (!proto.ok()) {
    ZB_FUZZ_CHECK(!proto.status().message().empty(), "an error without words");
    return 0;
  }
  ZB_FUZZ_CHECK(!proto->proto_text.empty(), "no .proto text");
  google::protobuf::FileDescriptorProto file;
  file.set_name("fuzz.proto");
  ZB_FUZZ_CHECK(file.add_message_type()->ParseFromString(proto->descriptor_proto), "descriptor does not parse");
  google::protobuf::DescriptorPool pool;
  ZB_FUZZ_CHECK(pool.BuildFile(file) != nullptr, "descriptor does not build in a package-less file");
  return 0;
}
