#pragma once
// Inside the schema module: what a stream's DescriptorProto names look like.

#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/descriptor.pb.h"

namespace zb {

// Rewrites ".pkg.Msg.Inner" type references into names relative to the
// message, so the DescriptorProto resolves without the file's package (the
// server wraps it in a package-less file). Every proto route's descriptor,
// loaded from a .proto or generated from a table, goes through it, so the
// two give the same bytes for the same message.
inline void StripPackage(google::protobuf::DescriptorProto* message, const std::string& package) {
  const std::string prefix = package.empty() ? "." : absl::StrCat(".", package, ".");
  for (auto& field : *message->mutable_field()) {
    if (field.has_type_name() && absl::StartsWith(field.type_name(), prefix)) {
      field.set_type_name(field.type_name().substr(prefix.size()));
    }
  }
  for (auto& nested : *message->mutable_nested_type()) StripPackage(&nested, package);
}

}  // namespace zb
