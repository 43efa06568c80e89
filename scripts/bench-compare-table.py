#!/usr/bin/env python3
"""Markdown table of scripts/bench-compare.sh results (one JSON object per line).

usage: bench-compare-table.py RESULTS.jsonl MACHINE VERSIONS SECONDS "CLIENTS"
"""
import datetime
import json
import sys


def cell(r):
    if r is None:
        return "-"
    p99 = r.get("p99_us")
    p999 = r.get("p999_us")
    lat = "p99 %.1f ms" % (p99 / 1000.0) if p99 is not None else ""
    if p999:
        lat += ", p999 %.1f" % (p999 / 1000.0)
    return "%s/s (%s)" % (format(int(round(r["ops_per_s"])), ","), lat)


def main():
    path, machine, versions, seconds, clients = sys.argv[1:6]
    rows = [json.loads(l) for l in open(path) if l.strip()]
    counts = [int(c) for c in clients.split()]

    def find(system, workload, level, c):
        for r in rows:
            if (r["system"] == system and r["workload"] == workload and r["clients"] == c
                    and (level is None or r.get("level") == level)):
                return r
        return None

    out = []
    out.append("Measured %s UTC on %s; %s. `scripts/bench-compare.sh --seconds %s --clients \"%s\"`: "
               "%s s per run, 256-byte values, each client one request outstanding (closed loop), "
               "everything on loopback and one disk, fsync on everywhere."
               % (datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M"), machine, versions,
                  seconds, clients, seconds))
    out.append("")
    out.append("Writes (100,000 keys, uniform):")
    out.append("")
    out.append("| clients | Trine `strong` | Trine `fast` | etcd (3 members) | Redis, appendfsync always (1 node) |")
    out.append("|---:|---|---|---|---|")
    for c in counts:
        out.append("| %d | %s | %s | %s | %s |" % (
            c, cell(find("trine", "write", "strong", c)), cell(find("trine", "write", "fast", c)),
            cell(find("etcd", "write", None, c)), cell(find("redis", "write", None, c))))
    out.append("")
    out.append("Reads (10,000 preloaded keys, uniform):")
    out.append("")
    out.append("| clients | Trine `strong` (ReadIndex) | etcd linearizable | Redis GET (1 node) |")
    out.append("|---:|---|---|---|")
    for c in counts:
        out.append("| %d | %s | %s | %s |" % (
            c, cell(find("trine", "read", "strong", c)), cell(find("etcd", "read", None, c)),
            cell(find("redis", "read", None, c))))
    out.append("")
    c = max(counts)
    ts, tf, tr = (find("trine", "write", "strong", c), find("trine", "write", "fast", c),
                  find("trine", "read", "strong", c))
    ew, er, rw = find("etcd", "write", None, c), find("etcd", "read", None, c), find("redis", "write", None, c)
    out.append("Against the goals, at %d clients:" % c)
    out.append("")

    def ratio(a, b):
        return a["ops_per_s"] / b["ops_per_s"] if a and b and b["ops_per_s"] else float("nan")

    if ts and ew:
        r = ratio(ts, ew)
        out.append("- Trine `strong` writes = **%.2f×** etcd's writes (goal ≥ 3×: %s); p99 %.1f ms vs %.1f ms "
                   "(goal: lower: %s)." % (r, "met" if r >= 3 else "not met", ts["p99_us"] / 1000.0,
                                           ew["p99_us"] / 1000.0,
                                           "met" if ts["p99_us"] < ew["p99_us"] else "not met"))
    if tr and er:
        r = ratio(tr, er)
        out.append("- Trine `strong` reads = **%.2f×** etcd's linearizable reads (goal ≥ 3×: %s)."
                   % (r, "met" if r >= 3 else "not met"))
    if tf and rw:
        r = ratio(tf, rw)
        out.append("- Trine `fast` writes = **%.2f×** Redis with appendfsync always (goal ≥ 0.5×: %s)."
                   % (r, "met" if r >= 0.5 else "not met"))
    print("\n".join(out))


if __name__ == "__main__":
    main()
