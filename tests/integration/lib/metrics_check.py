#!/usr/bin/env python3
"""metrics_check.py - checks a node's /metrics (docs/operations.md, "Metrics").

  metrics_check.py format PORT [puts]     the text parses as Prometheus exposition format
                                          0.0.4, follows the naming rules, and every family
                                          the operations guide lists is there with its type,
                                          with sane values (see check_format); with `puts`,
                                          the node must also have counted client puts
  metrics_check.py lag PORT FOLLOWER MIN  exit 0 when this node leads some partition whose
                                          follower FOLLOWER lacks >= MIN entries with a lag
                                          in seconds > 0; prints the worst
  metrics_check.py caught-up PORT FOLLOWER
                                          exit 0 when every follower-lag series of FOLLOWER
                                          on this node is 0 (entries and seconds)

Exit status: 0 pass, 1 failed check (reason on stderr), 2 usage.
"""
import math
import re
import sys
import urllib.request

NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(,|$)')

# family -> type; the list in docs/operations.md
REQUIRED = {
    "trine_requests_total": "counter",
    "trine_request_duration_seconds": "histogram",
    "trine_request_errors_total": "counter",
    "trine_forwards_total": "counter",
    "trine_fast_rollbacks_total": "counter",
    "trine_snapshots_sent_total": "counter",
    "trine_snapshots_received_total": "counter",
    "trine_partitions_hosted": "gauge",
    "trine_partitions_led": "gauge",
    "trine_raft_role": "gauge",
    "trine_raft_term": "gauge",
    "trine_raft_commit_index": "gauge",
    "trine_raft_applied_index": "gauge",
    "trine_raft_last_index": "gauge",
    "trine_raft_follower_lag_entries": "gauge",
    "trine_raft_follower_lag_seconds": "gauge",
    "trine_wal_appends_total": "counter",
    "trine_wal_records_total": "counter",
    "trine_wal_bytes_total": "counter",
    "trine_wal_fsyncs_total": "counter",
    "trine_wal_fsync_duration_seconds": "histogram",
    "trine_wal_batch_records": "histogram",
    "trine_store_applied_ops_total": "counter",
    "trine_leveldb_files": "gauge",
    "trine_leveldb_level_bytes": "gauge",
    "trine_leveldb_compaction_seconds_total": "counter",
    "trine_leveldb_approximate_memory_bytes": "gauge",
    "trine_connections": "gauge",
    "trine_tls_handshake_failures_total": "counter",
    "trine_network_received_bytes_total": "counter",
    "trine_network_sent_bytes_total": "counter",
}


class Bad(Exception):
    pass


def fetch(port):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % int(port), timeout=10) as r:
        ctype = r.headers.get("Content-Type", "")
        if not ctype.startswith("text/plain"):
            raise Bad("Content-Type %r" % ctype)
        return r.read().decode()


def parse_labels(text, line):
    labels, pos = {}, 0
    while pos < len(text):
        m = LABEL.match(text, pos)
        if not m:
            raise Bad("bad labels: %s" % line)
        if m.group(1) in labels:
            raise Bad("label %s twice: %s" % (m.group(1), line))
        labels[m.group(1)] = m.group(2)
        pos = m.end()
    return labels


def parse(text):
    """Returns {family: {"type", "help", "samples": [(name, labels, value)]}}."""
    if not text.endswith("\n"):
        raise Bad("text does not end with a newline")
    fams, cur = {}, None
    for line in text.split("\n")[:-1]:
        if line.startswith("# HELP "):
            name = line[7:].split(" ", 1)[0]
            if not NAME.match(name):
                raise Bad("bad family name: %s" % line)
            if name in fams:
                raise Bad("family %s declared twice" % name)
            cur = fams[name] = {"type": None, "help": line[8 + len(name):], "samples": []}
            cur["name"] = name
            continue
        if line.startswith("# TYPE "):
            parts = line[7:].split(" ")
            if cur is None or len(parts) != 2 or parts[0] != cur["name"]:
                raise Bad("TYPE without its HELP: %s" % line)
            if parts[1] not in ("counter", "gauge", "histogram"):
                raise Bad("unknown type: %s" % line)
            cur["type"] = parts[1]
            continue
        if line.startswith("#") or not line:
            raise Bad("unexpected line: %r" % line)
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$", line)
        if not m:
            raise Bad("bad sample line: %s" % line)
        name, labels, value = m.group(1), parse_labels(m.group(3) or "", line), m.group(4)
        if value not in ("+Inf", "-Inf", "NaN"):
            float(value)  # raises on garbage
        if cur is None or cur["type"] is None:
            raise Bad("sample before any TYPE: %s" % line)
        fam = cur["name"]
        ok = name == fam or (cur["type"] == "histogram" and
                             name in (fam + "_bucket", fam + "_sum", fam + "_count"))
        if not ok:
            raise Bad("sample %s outside its family %s" % (name, fam))
        cur["samples"].append((name, labels, float(value)))
    return fams


def check_family(f):
    name, typ = f["name"], f["type"]
    if name.endswith("_total") != (typ == "counter"):
        raise Bad("%s %s: counters, and only counters, end in _total" % (typ, name))
    seen = set()
    for sname, labels, v in f["samples"]:
        key = (sname, tuple(sorted(labels.items())))
        if key in seen:
            raise Bad("series %s%s twice" % (sname, labels))
        seen.add(key)
        if typ == "counter" and (v < 0 or math.isnan(v)):
            raise Bad("counter %s%s = %s" % (sname, labels, v))
    if typ != "histogram":
        return
    series = {}
    for sname, labels, v in f["samples"]:
        base = tuple(sorted((k, x) for k, x in labels.items() if k != "le"))
        series.setdefault(base, {"buckets": [], "sum": None, "count": None})
        s = series[base]
        if sname.endswith("_bucket"):
            le = labels.get("le")
            if le is None:
                raise Bad("%s bucket without le" % name)
            s["buckets"].append((math.inf if le == "+Inf" else float(le), v))
        elif sname.endswith("_sum"):
            s["sum"] = v
        else:
            s["count"] = v
    for base, s in series.items():
        b = s["buckets"]
        if not b or b[-1][0] != math.inf:
            raise Bad("%s%s: no +Inf bucket" % (name, dict(base)))
        for (le0, c0), (le1, c1) in zip(b, b[1:]):
            if not le1 > le0 or c1 < c0:
                raise Bad("%s%s: buckets not increasing/cumulative" % (name, dict(base)))
        if s["count"] != b[-1][1] or s["sum"] is None:
            raise Bad("%s%s: _count %s != +Inf bucket %s" % (name, dict(base), s["count"], b[-1][1]))


def value(fams, name, **labels):
    """Sum of a family's plain samples matching labels."""
    return sum(v for n, lab, v in fams[name]["samples"]
               if n == name and all(lab.get(k) == str(x) for k, x in labels.items()))


def hist(fams, name, what):
    return sum(v for n, _, v in fams[name]["samples"] if n == name + "_" + what)


def check_format(port, puts):
    fams = parse(fetch(port))
    for f in fams.values():
        check_family(f)
    for name, typ in REQUIRED.items():
        if name not in fams:
            raise Bad("family %s missing" % name)
        if fams[name]["type"] != typ:
            raise Bad("%s is a %s, want %s" % (name, fams[name]["type"], typ))
    # sane values
    if hist(fams, "trine_wal_fsync_duration_seconds", "count") <= 0:
        raise Bad("no WAL fsync observed")
    if abs(hist(fams, "trine_wal_fsync_duration_seconds", "count") -
           value(fams, "trine_wal_fsyncs_total")) > 2:
        raise Bad("fsync histogram count disagrees with trine_wal_fsyncs_total")
    if hist(fams, "trine_wal_batch_records", "sum") < hist(fams, "trine_wal_batch_records", "count"):
        raise Bad("WAL batches with less than one record each")
    if puts and value(fams, "trine_requests_total", op="put") <= 0:
        raise Bad("no put counted in trine_requests_total")
    for lab in ("op", "consistency"):
        if not all(lab in l for n, l, _ in fams["trine_request_duration_seconds"]["samples"]):
            raise Bad("trine_request_duration_seconds without a %s label" % lab)
    roles = [v for _, _, v in fams["trine_raft_role"]["samples"]]
    hosted = value(fams, "trine_partitions_hosted")
    if len(roles) != hosted or hosted <= 0:
        raise Bad("%d trine_raft_role series for %d hosted partitions" % (len(roles), hosted))
    if roles.count(3) != value(fams, "trine_partitions_led"):
        raise Bad("trine_partitions_led disagrees with trine_raft_role")
    for p in (l["partition"] for _, l, _ in fams["trine_raft_role"]["samples"]):
        c, a = value(fams, "trine_raft_commit_index", partition=p), value(
            fams, "trine_raft_applied_index", partition=p)
        if a > c + 0 and a > value(fams, "trine_raft_last_index", partition=p):
            raise Bad("partition %s applied %s beyond its log" % (p, a))
    lag = fams["trine_raft_follower_lag_entries"]["samples"]
    if roles.count(3) and not lag:
        raise Bad("a leader without follower lag series")
    levels = sorted(l["level"] for _, l, _ in fams["trine_leveldb_files"]["samples"])
    if levels != [str(i) for i in range(7)]:
        raise Bad("leveldb levels %s" % levels)
    if value(fams, "trine_network_received_bytes_total") <= 0 or value(fams, "trine_connections") < 1:
        raise Bad("no network traffic counted")
    print("%d families, %d samples; %d fsyncs, %d puts, %d/%d partitions led, %d lag series" % (
        len(fams), sum(len(f["samples"]) for f in fams.values()),
        value(fams, "trine_wal_fsyncs_total"), value(fams, "trine_requests_total", op="put"),
        roles.count(3), hosted, len(lag)))


def lag_of(port, follower):
    fams = parse(fetch(port))
    out = {}
    for fam in ("trine_raft_follower_lag_entries", "trine_raft_follower_lag_seconds"):
        for _, l, v in fams[fam]["samples"]:
            if l["follower"] == str(follower):
                out.setdefault(l["partition"], {})[fam.rsplit("_", 1)[1]] = v
    return out


def main(a):
    try:
        if len(a) in (2, 3) and a[0] == "format" and a[2:] in ([], ["puts"]):
            check_format(a[1], a[2:] == ["puts"])
            return 0
        if len(a) == 4 and a[0] == "lag":
            lags = lag_of(a[1], a[2])
            hit = [(v["entries"], v["seconds"], p) for p, v in lags.items()
                   if v["entries"] >= int(a[3]) and v["seconds"] > 0]
            if not hit:
                raise Bad("no partition led here shows follower %s >= %s entries behind: %s"
                          % (a[2], a[3], lags))
            e, s, p = max(hit)
            print("follower %s: %d partitions behind; worst partition %s: %d entries, %.3f s"
                  % (a[2], len(hit), p, e, s))
            return 0
        if len(a) == 3 and a[0] == "caught-up":
            lags = lag_of(a[1], a[2])
            behind = {p: v for p, v in lags.items() if v["entries"] or v["seconds"]}
            if behind or not lags:
                raise Bad("follower %s: %d series, behind: %s" % (a[2], len(lags), behind))
            print("follower %s caught up on %d partitions" % (a[2], len(lags)))
            return 0
    except (Bad, ValueError, KeyError, OSError) as e:
        print("metrics_check: %s" % e, file=sys.stderr)
        return 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
