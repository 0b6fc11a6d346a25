// A producer built on the official Zerobus SDK's native core (a client we
// did not write), for sdk_test.cc: it sends RECORDS JSON records with ids
// PREFIX-0 .. PREFIX-(RECORDS-1) to TABLE in requests of BATCH, waits for
// every ACK, and prints one JSON line: {"ok":true,"first_ack_ms":..,"ms":..}
// or {"ok":false,"error":".."}.
//   ZEROBUS_SDK_MODULE=<dir of the package> node sdk_client.js \
//     GRPC_URL TOKEN_URL TABLE RECORDS BATCH PREFIX
"use strict";
const [grpcUrl, tokenUrl, table, records, batch, prefix] = process.argv.slice(2);
const { ZerobusSdk, RecordType } = require(process.env.ZEROBUS_SDK_MODULE);

async function main() {
  const sdk = new ZerobusSdk(grpcUrl, tokenUrl);
  const stream = await sdk.createStream({ tableName: table }, "dev-client", "dev-secret", {
    recordType: RecordType.Json,
    recovery: true,
    recoveryRetries: 1000,
    recoveryBackoffMs: 50,
  });
  const started = Date.now();
  // One record alone first: how long its ACK takes.
  const first = await stream.ingestRecordOffset({ id: `${prefix}-0`, seq: 0 });
  await stream.waitForOffset(first);
  const firstAckMs = Date.now() - started;
  for (let i = 1; i < Number(records); i += Number(batch)) {
    const requests = [];
    for (let j = i; j < Math.min(i + Number(batch), Number(records)); j++) requests.push({ id: `${prefix}-${j}`, seq: j });
    await stream.ingestRecordsOffset(requests);
  }
  await stream.flush();
  await stream.close();
  console.log(JSON.stringify({ ok: true, first_ack_ms: firstAckMs, ms: Date.now() - started }));
}

main().catch((e) => {
  console.log(JSON.stringify({ ok: false, error: String((e && e.message) || e) }));
  process.exit(1);
});
