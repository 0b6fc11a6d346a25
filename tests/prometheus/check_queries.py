"""Every metric the shipped alert rules and Grafana dashboard query is one
zerobusd exports (a family lib/metrics/metrics.cc registers; histograms
with their _bucket, _sum and _count series), and each is queried by at least
one of them only through names that exist.

    check_queries.py SOURCE_DIR
"""

import json
import re
import sys

root = sys.argv[1]
metrics_cc = open(root + "/lib/metrics/metrics.cc").read()
exported = set()
for kind, name in re.findall(r'Build(Counter|Gauge|Histogram|Summary)\(\)\s*\.Name\("(zerobusd_[a-z0-9_]+)"\)', metrics_cc):
    exported.add(name)
    if kind in ("Histogram", "Summary"):
        exported.update({name + "_bucket", name + "_sum", name + "_count"})
if len(exported) < 20:
    sys.exit("found only %d metric families in metrics.cc: the pattern is stale" % len(exported))

queries = []
dashboard = json.load(open(root + "/packaging/grafana/zerobusd-dashboard.json"))
def walk(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "definition") and isinstance(value, str):
                queries.append(("dashboard", value))
            elif key == "query" and isinstance(value, str) and "zerobusd_" in value:
                queries.append(("dashboard", value))
            else:
                walk(value)
    elif isinstance(node, list):
        for item in node:
            walk(item)
walk(dashboard)
for line in open(root + "/packaging/prometheus/zerobusd-alerts.yml"):
    m = re.match(r"\s*expr:\s*(.*)$", line)
    if m:
        queries.append(("alerts", m.group(1)))

problems = []
used = set()
for where, query in queries:
    for name in re.findall(r"\bzerobusd_[a-z0-9_]+", query):
        used.add(name)
        if name not in exported:
            problems.append("%s: %s is not a metric zerobusd exports (in: %s)" % (where, name, query))
if not queries:
    problems.append("no queries found")
for p in problems:
    print(p)
print("%d queries, %d metric names, all exported" % (len(queries), len(used)) if not problems else "")
sys.exit(1 if problems else 0)
