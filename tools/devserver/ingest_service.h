#pragma once
// The dev server's Zerobus EphemeralStream service (gRPC callback API), as
// faithful to the real service as the protocol notes allow: headers first,
// create_stream validation, strict wire offsets, JSON and proto decoding, the
// 10 MiB request limit, coalesced cumulative ACKs, rotation with
// CloseStreamSignal and the 6002 close. Rows are stored before the ACK that
// covers them.

#include <memory>

#include "tools/devserver/dev_state.h"
#include "zerobus_service.grpc.pb.h"

namespace zb::devserver {

class IngestService final : public databricks::zerobus::Zerobus::CallbackService {
 public:
  explicit IngestService(DevState& state);
  ~IngestService() override;

  grpc::ServerBidiReactor<databricks::zerobus::EphemeralStreamRequest,
                          databricks::zerobus::EphemeralStreamResponse>*
  EphemeralStream(grpc::CallbackServerContext* context) override;

  struct Impl;  // the live streams and their ACK/rotation ticker

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace zb::devserver
