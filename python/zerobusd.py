"""Send records to zerobusd from Python (standard library only).

zerobusd makes each record durable in its spool before it answers, then
drains the spool into Databricks Zerobus. This module speaks its intake
protocol (docs/intake-protocol.md) over the Unix socket:

    import zerobusd

    with zerobusd.Producer("/run/zerobusd/zerobusd.sock", client="sensor/1.0") as producer:
        producer.send("readings", [{"device": "d1", "temp": 21.5}])  # returns once durable

`Producer.send` uses framed mode: records go in batches, each acknowledged
once every record in it is durable, or refused as a whole. A full spool
(SPOOL_FULL) or a daemon that cannot take the batch now (BUSY) is retried
with capped exponential backoff until `retry_timeout` runs out
(`RetryTimeout`); a refused record raises `RecordRefused`, saying which
record and why, and nothing of its batch was spooled. `send_lines` is the
line-mode (NDJSON) helper for quick scripts.

Delivery is at least once: when the connection breaks before a batch's
answer arrives, the batch is sent again on a new connection.
"""

import json
import random
import socket
import struct
import time

__all__ = [
    "Producer",
    "send_lines",
    "ZerobusdError",
    "RecordRefused",
    "RetryTimeout",
    "ProtocolError",
    "RETRYABLE_REASONS",
]

# NackReason (proto/intake.proto).
NACK_REASONS = {
    0: "NACK_REASON_UNSPECIFIED",
    1: "SPOOL_FULL",
    2: "INVALID_RECORD",
    3: "TOO_LARGE",
    4: "UNKNOWN_ROUTE",
    5: "NOT_ALLOWED",
    6: "BUSY",
    7: "INTERNAL",
    8: "BAD_FRAME",
}
RETRYABLE_REASONS = frozenset({"SPOOL_FULL", "BUSY"})

MAX_FRAME_BYTES = 16 << 20  # the daemon refuses larger frames


class ZerobusdError(Exception):
    """Base of this module's errors."""


class RecordRefused(ZerobusdError):
    """The daemon refused a batch for good; nothing of it was spooled.

    reason: the NackReason name (INVALID_RECORD, TOO_LARGE, UNKNOWN_ROUTE,
    NOT_ALLOWED, INTERNAL, BAD_FRAME); message: the daemon's words;
    record_index: the refused record's index in the records given to send()
    (None when the batch as a whole was refused); accepted: how many records
    of that send() were durable before it.
    """

    def __init__(self, reason, message, record_index, accepted):
        where = "" if record_index is None else " (record %d)" % record_index
        super().__init__("%s%s: %s" % (reason, where, message))
        self.reason = reason
        self.message = message
        self.record_index = record_index
        self.accepted = accepted


class RetryTimeout(ZerobusdError):
    """SPOOL_FULL or BUSY (or a lost connection) lasted past retry_timeout."""

    def __init__(self, message, accepted):
        super().__init__(message)
        self.accepted = accepted


class ProtocolError(ZerobusdError):
    """The daemon's answer does not follow the protocol."""


# ---------------------------------------------------------------- protobuf


def _varint(n):
    n &= (1 << 64) - 1  # negative int32/int64 are ten bytes
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number, wire_type, payload):
    key = _varint(number << 3 | wire_type)
    if wire_type == 2:
        return key + _varint(len(payload)) + payload
    return key + payload


def _fields(data):
    """Yields (number, wire_type, value) of a serialized message."""
    i = 0
    while i < len(data):
        key, i = _read_varint(data, i)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, i = _read_varint(data, i)
        elif wire_type == 2:
            length, i = _read_varint(data, i)
            if i + length > len(data):
                raise ProtocolError("truncated field in a ServerFrame")
            value, i = data[i : i + length], i + length
        elif wire_type == 1:
            value, i = data[i : i + 8], i + 8
        elif wire_type == 5:
            value, i = data[i : i + 4], i + 4
        else:
            raise ProtocolError("unknown wire type %d in a ServerFrame" % wire_type)
        yield number, wire_type, value


def _read_varint(data, i):
    shift = result = 0
    while True:
        if i >= len(data) or shift > 63:
            raise ProtocolError("bad varint in a ServerFrame")
        byte = data[i]
        i += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, i
        shift += 7


def _int32(n):
    n &= (1 << 64) - 1
    return n - (1 << 64) if n >= 1 << 63 else n


def _hello(client, no_wait):
    body = b""
    if client:
        body += _field(1, 2, client.encode())
    body += _field(2, 0, _varint(1 if no_wait else 0))
    return _field(1, 2, body)


def _batch(seq, route, records):
    body = _field(1, 0, _varint(seq)) + _field(2, 2, route.encode())
    for record in records:
        body += _field(3, 2, record)
    return _field(2, 2, body)


def _answer(frame):
    """("ack", seq, records) or ("nack", seq, reason, message, retry_after_ms, record_index)."""
    for number, wire_type, value in _fields(frame):
        if wire_type != 2:
            continue
        fields = {}
        for n, _, v in _fields(value):
            fields[n] = v
        if number == 1:
            return ("ack", fields.get(1, 0), fields.get(2, 0))
        if number == 2:
            reason = NACK_REASONS.get(fields.get(2, 0), "NACK_REASON_%d" % fields.get(2, 0))
            message = bytes(fields.get(3, b"")).decode("utf-8", "replace")
            index = _int32(fields[5]) if 5 in fields else -1
            return ("nack", fields.get(1, 0), reason, message, fields.get(4, 0), index)
    raise ProtocolError("a ServerFrame that is neither Ack nor Nack")


# ---------------------------------------------------------------- producer


def _encode(record):
    if isinstance(record, (bytes, bytearray, memoryview)):
        return bytes(record)
    if isinstance(record, str):
        return record.encode("utf-8")
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class Producer:
    """One framed connection to zerobusd. Not thread-safe: one per thread.

    socket_path: the daemon's intake.socket. client: free text the daemon
    logs. timeout: seconds to wait for any one answer (a batch is durable
    after an fsync; the daemon's own timeouts are longer). retry_timeout:
    how long send() keeps retrying SPOOL_FULL, BUSY and lost connections.
    max_batch_records / max_batch_bytes: how send() splits its records (a
    batch is spooled whole or not at all, so keep it well under
    spool.max_bytes).
    """

    def __init__(self, socket_path, client="zerobusd.py", timeout=60.0, retry_timeout=300.0,
                 max_batch_records=1000, max_batch_bytes=4 << 20, backoff_initial=0.05, backoff_max=5.0):
        if max_batch_bytes > MAX_FRAME_BYTES - 1024:
            raise ValueError("max_batch_bytes must leave room in a 16 MiB frame")
        self.socket_path = socket_path
        self.client = client
        self.timeout = timeout
        self.retry_timeout = retry_timeout
        self.max_batch_records = max_batch_records
        self.max_batch_bytes = max_batch_bytes
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self._sock = None
        self._seq = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    def send(self, route, records):
        """Sends `records` to `route`; returns how many are durable (all of them).

        A record is a dict or list (sent as compact JSON), a str (JSON text)
        or bytes (as is: a serialized message on a proto route). Raises
        RecordRefused, RetryTimeout, or OSError when the socket cannot be
        reached at all.
        """
        encoded = [_encode(r) for r in records]
        for i, record in enumerate(encoded):
            if len(record) + 1024 > MAX_FRAME_BYTES:
                raise RecordRefused("TOO_LARGE", "%d bytes: more than a frame carries (16 MiB)" % len(record), i, 0)
        accepted = 0
        start = 0
        while start < len(encoded):
            end, size = start, 0
            while end < len(encoded) and end - start < self.max_batch_records:
                record_size = len(encoded[end]) + 8
                if end > start and size + record_size > self.max_batch_bytes:
                    break
                size += record_size
                end += 1
            self._send_batch(route, encoded[start:end], start, accepted)
            accepted += end - start
            start = end
        return accepted

    def _send_batch(self, route, batch, first_index, accepted):
        deadline = time.monotonic() + self.retry_timeout
        delay = self.backoff_initial
        while True:
            self._seq += 1
            answer_hint = False
            retry_after_ms = 0
            try:
                answer = self._exchange(_batch(self._seq, route, batch), self._seq)
            except (FileNotFoundError, PermissionError):
                # No daemon there, or this user may not write to it (not in
                # the socket's group): waiting will not help.
                self.close()
                raise
            except (OSError, ProtocolError) as e:
                # No answer: the batch may or may not be durable; sending it
                # again is the at-least-once choice.
                self.close()
                why = "connection to %s lost: %s" % (self.socket_path, e)
            else:
                if answer[0] == "ack":
                    return
                _, _, reason, message, retry_after_ms, index = answer
                if reason == "BAD_FRAME":
                    self.close()  # the daemon closes the connection after it
                if reason not in RETRYABLE_REASONS:
                    raise RecordRefused(reason, message, None if index < 0 else first_index + index, accepted)
                why = "%s: %s" % (reason, message)
                answer_hint = retry_after_ms > 0
            now = time.monotonic()
            if now >= deadline:
                raise RetryTimeout("gave up after %.0f s: %s" % (self.retry_timeout, why), accepted)
            pause = max(random.uniform(0, delay) + delay / 2, retry_after_ms / 1000.0 if answer_hint else 0)
            time.sleep(min(pause, deadline - now))
            delay = min(delay * 2, self.backoff_max)

    def _connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
            # no_wait: a full spool answers BUSY at once instead of pausing
            # the connection, so the retry (and its deadline) is ours.
            self._write_frame(sock, _hello(self.client, no_wait=True))
        except BaseException:
            sock.close()
            raise
        self._sock = sock

    def _exchange(self, frame, seq):
        if self._sock is None:
            self._connect()
        self._write_frame(self._sock, frame)
        while True:
            answer = _answer(self._read_frame(self._sock))
            # seq 0: an answer to the connection, not a batch (a frame the
            # daemon could not read).
            if answer[1] == seq or (answer[0] == "nack" and answer[1] == 0):
                return answer
            # An answer to an earlier attempt (its batch was given up on): skip.

    @staticmethod
    def _write_frame(sock, body):
        sock.sendall(struct.pack(">I", len(body)) + body)

    @staticmethod
    def _read_exactly(sock, n):
        data = bytearray()
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise ConnectionResetError("zerobusd closed the connection")
            data += chunk
        return bytes(data)

    def _read_frame(self, sock):
        (length,) = struct.unpack(">I", self._read_exactly(sock, 4))
        if length > MAX_FRAME_BYTES:
            raise ProtocolError("an answer of %d bytes" % length)
        return self._read_exactly(sock, length)


def send_lines(socket_path, route, lines, timeout=60.0):
    """Line mode (NDJSON): sends `lines` (dicts or JSON strings) to `route`.

    Returns (accepted, errors): how many lines are durable, and a list of
    (line_number, reason) for the refused ones (numbered from 1; 0 is the
    route itself, e.g. one that does not exist). Nothing is retried: a full
    spool refuses lines (when_full: reject) or makes the daemon wait (block).
    """
    body = ["@route %s" % route]
    for line in lines:
        text = line if isinstance(line, str) else json.dumps(line, separators=(",", ":"), ensure_ascii=False)
        if "\n" in text or "\r" in text:
            raise ValueError("a line-mode record cannot contain a line break")
        if not text.strip() or text.startswith("@"):
            raise ValueError("a line-mode record cannot be blank or start with @ (a directive): %r" % text[:40])
        body.append(text)
    payload = ("\n".join(body) + "\n").encode("utf-8")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(socket_path)
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        reply = bytearray()
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    errors = []
    last_ok = 0
    for answer in reply.decode("utf-8", "replace").splitlines():
        if answer.startswith("ok "):
            last_ok = int(answer.split()[1])
        elif answer.startswith("error "):
            _, number, reason = answer.split(" ", 2)
            errors.append((int(number) - 1, reason))  # the @route line is line 1
    refused_lines = {n for n, _ in errors}
    accepted = sum(1 for n in range(1, last_ok) if n not in refused_lines) if last_ok else 0
    return accepted, errors
