#!/usr/bin/env python3
"""Writes the seed corpora in fuzz/corpus/<target>/ (committed; rerun after
changing a target's input layout). Each seed is a small, meaningful input in
its target's layout (see the comment at the top of each *_fuzz.cc)."""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def fdp(stream, back):
    """FuzzedDataProvider layout: bytes from the front, integers from the back
    (the first integer is the last byte)."""
    return stream + bytes(reversed(back))


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(num, wire, payload):
    key = varint(num << 3 | wire)
    if wire == 2:
        return key + varint(len(payload)) + payload
    return key + payload


def s(text):
    return text.encode() if isinstance(text, str) else text


# ---- line_decoder: back = [max (0..200), chunk lengths...; 0 = Reset]
ndjson = b'@route readings\n{"id":1,"temp_c":21.5}\r\n{"id":2}\nnot json\n'
write("line_decoder", "ndjson_crlf", fdp(ndjson, [64, 7, 3, 50, 255]))
write("line_decoder", "oversize_then_short", fdp(b"x" * 40 + b"\r\n" + b'{"a":1}\n', [16, 20, 21, 1, 200]))
write("line_decoder", "cr_split_from_lf", fdp(b"abcdefghijklmnopqrstu\r" + b"\n" + b"ok\n", [8, 22, 1, 3]))
write("line_decoder", "empty_lines_and_tail", fdp(b"\n\n\r\n\r\nlast line without newline", [8, 1, 1, 2, 2, 40]))
write("line_decoder", "exactly_at_limit", fdp(b"0123456789abcdef\n0123456789abcdef\r\n0123456789abcdefg\n", [16, 17, 18, 18]))
write("line_decoder", "reset_mid_line", fdp(b'{"partial":' + b'{"id":3}\n', [32, 11, 0, 9]))
write("line_decoder", "one_byte_chunks", fdp(b'{"a":"b"}\r\n{}\n', [4] + [1] * 15))

# ---- frame_decoder: back = [small? (bool), limit (2 bytes, 0..1024) if small, chunk lengths...; 0 = Reset]
hello = field(1, 2, field(1, 2, s("zerobusctl/0.1")) + field(2, 0, varint(1)))
batch = field(2, 2, field(1, 0, varint(7)) + field(2, 2, s("readings")) +
              field(3, 2, s('{"id":1}')) + field(3, 2, s('{"id":2,"t":21.5}')))
proto_batch = field(2, 2, field(1, 0, varint(8)) + field(2, 2, s("typed")) +
                    field(3, 2, field(1, 2, s("dev-1")) + field(2, 0, varint(42))))


def frame(body):
    return struct.pack(">I", len(body)) + body


big = 1  # ConsumeBool: lowest bit set = the 16 MiB server limit
write("frame_decoder", "hello_batch", fdp(frame(hello) + frame(batch), [big, 200, 200]))
write("frame_decoder", "batch_one_byte_chunks", fdp(frame(batch), [big] + [1] * 60))
write("frame_decoder", "proto_batch_split_header", fdp(frame(proto_batch) + frame(hello), [big, 2, 3, 40, 40]))
write("frame_decoder", "too_large_small_limit", fdp(struct.pack(">I", 300) + b"x" * 10, [0, 0x00, 0x40, 20]))
write("frame_decoder", "zero_length_and_garbage", fdp(frame(b"") + frame(b"\xff\xff\xff") + frame(batch), [big, 9, 255]))
write("frame_decoder", "reset_mid_body", fdp(frame(batch)[:10] + frame(hello), [big, 10, 0, 100]))
write("frame_decoder", "huge_announced", fdp(b"\xff\xff\xff\xff" + b"tail", [big, 8]))

# ---- json_codec: last byte = depth pick (0..63: that depth, 64..249: 64, 250..: 1000)
D64, D1000 = 100, 255
for name, text, pick in [
    ("reading", '{"id":1,"temp_c":21.5,"site":"north","ok":true,"tags":["a","b"],"note":null}', D64),
    ("nested_at_limit", '{"a":{"b":[{"c":[1]}]}}', 5),
    ("nested_over_limit", '{"a":{"b":[{"c":[1]}]}}', 4),
    ("empty_past_limit", '{"a":{"b":[{"c":[]}]}}', 4),
    ("deep_arrays", '{"x":' + "[" * 70 + "]" * 70 + "}", D1000),
    ("not_object", '[1,2,3]', D64),
    ("big_int", '{"n":123456789012345678901234567890,"e":1e400,"f":-0.5e-3}', D64),
    ("unicode", '{"s":"caf\u00e9 \\u00e9 \\ud83d\\ude00 \\n\\t\\"","k\\u0041":"\xe2\x82\xac"}', D64),
    ("whitespace_trailing", ' \t{"a" : 1 } \r', D64),
    ("leading_newlines", '\n\r\n {"a":1}\n', D64),  # framed records may start with any JSON whitespace
    ("trailing_garbage", '{"a":1}{"b":2}', D64),
    ("truncated", '{"a":[1,2,{"b":"c', D64),
    ("bad_utf8", b'{"a":"\xc0\xaf\xed\xa0\x80"}', D64),
]:
    write("json_codec", name, s(text) + bytes([pick]))

# ---- proto_codec: last byte = bit 0 schema (0 Reading, 1 Event), bit 1 JSON,
# bits 2+ depth (0: 3, 1: 64, 2: 1000, modulo 3)
def pick(schema, json, depth):
    return bytes([schema | json << 1 | depth << 2])


reading_json = ('{"device_id":"dev-1","id":"42","temp":21.5,"unit":"KELVIN","raw":"AAEC","tags":["a"],'
                '"location":{"site":"roof","lat":1.5},"samples":[{"values":[1,2.5],"previous":{"at_us":"7"},'
                '"children":{"k":{"at_us":"1"}}}],"labels":{"x":1},"parent":{"device_id":"p"},"text":"hi"}')
write("proto_codec", "reading_json", s(reading_json) + pick(0, 1, 1))
write("proto_codec", "reading_json_missing_required", s('{"id":1,"location":{"lat":2}}') + pick(0, 1, 1))
write("proto_codec", "reading_json_unknown_field", s('{"device_id":"d","nope":1}') + pick(0, 1, 1))
write("proto_codec", "reading_json_recursive_deep",
      s('{"device_id":"d"' + ',"parent":{"device_id":"d"' * 8 + "}" * 8 + "}") + pick(0, 1, 0))
event_json = ('{"source":"s","ts":"1700000000","level":"WARN","tree":{"name":"a","children":[{"name":"b",'
              '"attrs":{"1":"x"}}]},"codes":[1,2],"index":{"k":{"name":"n"}},"score":0.5,"body":"aGk=",'
              '"node":{"name":"o"},"cause":{"source":"c"}}')
write("proto_codec", "event_json", s(event_json) + pick(1, 1, 1))
write("proto_codec", "event_json_wrong_types", s('{"ts":"soon","level":7,"codes":"x"}') + pick(1, 1, 2))
reading_wire = (field(1, 2, s("dev-1")) + field(2, 0, varint(42)) + field(3, 1, struct.pack("<d", 21.5)) +
                field(4, 0, varint(2)) + field(13, 2, field(1, 2, s("roof"))) +
                field(14, 2, field(2, 2, struct.pack("<dd", 1.0, 2.0)) + field(3, 2, field(1, 0, varint(5)))) +
                field(15, 2, field(1, 2, s("x")) + field(2, 0, varint(1))) +
                field(16, 2, field(1, 2, s("p"))))
write("proto_codec", "reading_wire", reading_wire + pick(0, 0, 1))
write("proto_codec", "reading_wire_missing_required", field(2, 0, varint(1)) + pick(0, 0, 1))
write("proto_codec", "reading_wire_truncated", reading_wire[:-3] + pick(0, 0, 1))
event_wire = (field(1, 2, s("src")) + field(3, 0, varint(1)) +
              field(4, 2, field(1, 2, s("n")) + field(2, 2, field(1, 2, s("c")))) +
              field(11, 2, field(1, 2, s("cause"))))
write("proto_codec", "event_wire", event_wire + pick(1, 0, 1))
# The top bit: the codec with schema.column_types.
write("proto_codec", "reading_json_column_types",
      s('{"device_id":"dev-1","id":"2026-12-01T10:00:00.5+01:00","raw":"AAEC","tags":["a"],"temp":1.5,'
        '"location":{"site":"roof","lat":1.5},"labels":{"x":1},"text":"hi"}') + bytes([0x80 | 0b10]))
write("proto_codec", "event_json_column_types",
      s('{"source":{"any":[1,2.50]},"ts":"2026-12-01T10:00:00","codes":[1,-2],"body":"aGk=","level":"WARN"}')
      + bytes([0x80 | 0b11]))
write("proto_codec", "event_wire_bad_utf8", field(1, 2, b"\xff\xfe") + pick(1, 0, 1))

# ---- config: YAML text
minimal = """zerobus:
  endpoint: "http://127.0.0.1:50051"
  workspace_url: "http://127.0.0.1:50052"
  tls: false
  client_id: id
  client_secret: secret
spool:
  path: ./spool
intake:
  socket: ./zerobusd.sock
control:
  socket: ./control.sock
routes:
  - name: readings
    table: main.edge.readings
    format: json
"""
write("config", "minimal", minimal)
with open(os.path.join(HERE, "..", "config", "dev.yaml"), "rb") as f:
    write("config", "dev", f.read())
write("config", "proto_route", minimal + """  - name: typed
    table: main.edge.typed
    format: proto
    schema:
      proto_file: ./schemas/reading.proto
      message: Reading
""")
write("config", "bad_values", """zerobus:
  endpoint: 12
  client_id_file: ./missing
  client_secret: ""
spool:
  when_full: sometimes
  max_bytes: 10XB
  sync: never
intake:
  max_json_depth: 100000
routes:
  - name: r
    table: not-a-table
    format: xml
  - name: r
    allow: {uids: [-1, "x"]}
unknown_key: 1
""")
write("config", "anchors_and_flow", """base: &b {name: a, table: c.s.t, format: json}
routes: [*b, {<<: *b, name: b}]
zerobus: {endpoint: "h:1", tls: true, client_id: x, client_secret: y}
spool: {path: /nonexistent/spool, max_bytes: 1GiB}
---
second: document
""")
write("config", "syntax_error", "routes:\n  - name: [unclosed\n    table: {a: \n")
write("config", "scalars_and_tags", "!!map {? [1, 2] : !!binary aGk=, 'q': \"\\u00e9\", |\n  x\n: null}\n")

# uc_record: a JSON record for the every-type table (last byte not 0x01), or
# wire bytes (last byte 0x01).
for name, record in [
    ("every_type", b'{"id":7,"tiny":-128,"small":32767,"count":2147483647,"ratio":1.5,"value":-2.25,"price":12.3,'
                   b'"name":"n","code":"abc","ok":true,"blob":"AAEC","day":"2024-02-29",'
                   b'"ts":"2026-12-01T10:00:00.123456Z","local_ts":"2026-12-01T10:00:00.5",'
                   b'"extra":{"a":[1,2.50,"x"],"big":123456789012345678901234,"n":null},"tags":["a","b"],'
                   b'"readings":[{"at":5,"v":1.0},{"v":2.0}],"attributes":{"k":"v","k2":""},'
                   b'"limits":{"3":{"lo":1,"hi":2}},"device_info":{"vendor":"acme","firmware":{"major":1},"ids":[1,2]}}'),
    ("edges", b'{"id":1,"count":2,"name":"n","ts":"1969-12-31T23:59:59.999999-05:30","price":"-0.5","day":-1}'),
    ("exponent_and_ntz", b'{"id":1,"count":2,"name":"n","ts":0,"price":"1e3","local_ts":-1,"day":"0001-01-01"}'),
    ("unknown_column", b'{"id":1,"count":2,"name":"n","ts":0,"nope":1}'),
]:
    write("uc_record", name, record + b"\x00")
write("uc_record", "wire_partial", field(1, 0, varint(7)) + b"\x01")
write("uc_record", "wire_unknown_field", field(1, 0, varint(7)) + field(99, 0, varint(1)) + b"\x01")
