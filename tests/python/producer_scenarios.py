"""What tests/integration/python_producer_test.cc asks of python/zerobusd.py.

    producer_scenarios.py SCENARIO SOCKET [ARGS...]

prints one JSON object with what happened; the C++ test checks it against
the daemon and the dev server's rows.
"""

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))
import zerobusd  # noqa: E402


def records(prefix, n, size=200):
    return [{"id": "%s-%d" % (prefix, i), "payload": "x" * size} for i in range(n)]


def main():
    scenario, sock = sys.argv[1], sys.argv[2]
    out = {}
    if scenario == "send":  # ROUTE N PREFIX [SIZE] [RETRY_TIMEOUT] [BATCH_RECORDS]
        route, n, prefix = sys.argv[3], int(sys.argv[4]), sys.argv[5]
        size = int(sys.argv[6]) if len(sys.argv) > 6 else 200
        retry_timeout = float(sys.argv[7]) if len(sys.argv) > 7 else 300.0
        batch = int(sys.argv[8]) if len(sys.argv) > 8 else 1000
        print(json.dumps({"started": True}), flush=True)
        with zerobusd.Producer(sock, client="scenarios/1", retry_timeout=retry_timeout, max_batch_records=batch,
                               backoff_max=0.5) as p:
            try:
                out["accepted"] = p.send(route, records(prefix, n, size))
            except zerobusd.RetryTimeout as e:
                out = {"timeout": str(e), "accepted": e.accepted}
    elif scenario == "refused":  # ROUTE
        with zerobusd.Producer(sock, max_batch_records=2) as p:
            try:
                p.send(sys.argv[3], [{"id": "ok-0"}, {"id": "ok-1"}, {"id": "ok-2"}, "not json", {"id": "ok-4"}])
                out["refused"] = False
            except zerobusd.RecordRefused as e:
                out = {"refused": True, "reason": e.reason, "index": e.record_index, "accepted": e.accepted,
                       "message": e.message}
    elif scenario == "lines":  # ROUTE
        accepted, errors = zerobusd.send_lines(sock, sys.argv[3], [{"id": "l-0"}, "{broken", {"id": "l-2"}])
        out = {"accepted": accepted, "errors": errors}
    else:
        raise SystemExit("unknown scenario " + scenario)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
