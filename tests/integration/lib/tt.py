#!/usr/bin/env python3
"""tt.py - helpers the integration scripts call: admin HTTP queries, requests
aimed at one node, bulk verification. Every subcommand prints plain text or
JSON and exits 0 on success, 1 on a failed check, 2 on usage errors.

  tt.py http PORT PATH                    body of GET 127.0.0.1:PORT/PATH
  tt.py roles PORT...                     per node (admin port): "node leads hosts"
  tt.py led-by PORT NODE                  partitions that node NODE leads (as PORT's node sees)
  tt.py leaders-agree PORT...             exit 0 when every partition has one leader all agree on
  tt.py metric PORT NAME                  sum of a metric's samples on that node
  tt.py get EP CERTS KEY [CONS [MINREV]]  one get aimed at node EP; the reply as JSON
  tt.py put EP CERTS KEY VAL [CONS]       one put aimed at node EP; the reply as JSON
  tt.py verify CERTS FILE CONS EP...      every "key<TAB>value" line of FILE read from every EP
  tt.py hash-converged TIMEOUT_S PORT...  every partition's content hash equal on all its nodes
  tt.py key-led-by EP CERTS NODE PREFIX   a key (PREFIX<i>) whose strong put node NODE serves
  tt.py probe-write EP CERTS KEY T0_MS TIMEOUT_S
                                          strong puts of KEY via EP until one succeeds; prints
                                          the ms from T0_MS (wall clock) to that success
  tt.py balance P REPLICAS PORT...        placement and leadership balanced (see cmd_balance)
  tt.py failover T0_MS TIMEOUT_S PARTS PORT...
                                          polls the nodes' /status until every partition in PARTS
                                          (comma list) has a leader among them; prints the ms from
                                          T0_MS for each, slowest first
  tt.py lagging-read FOLLOWER_ID FOLLOWER_EP FOLLOWER_PID LEADER_EP CERTS KEY
                                          session token on a lagging follower (see below)
"""
import json
import os
import select
import signal
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wire  # noqa: E402


def http(port, path, timeout=5.0):
    with urllib.request.urlopen("http://127.0.0.1:%d%s" % (int(port), path),
                                timeout=timeout) as r:
        return r.read().decode()


def status(port):
    return json.loads(http(port, "/status"))


def cmd_http(a):
    sys.stdout.write(http(a[0], a[1]))


def cmd_roles(ports):
    for p in ports:
        s = status(p)
        parts = s["partitions"]
        leads = sum(1 for x in parts if x["role"] == "leader")
        print(s["node"], leads, len(parts))


def cmd_led_by(a):
    s = status(a[0])
    print(" ".join(str(x["partition"]) for x in s["partitions"] if x["leader"] == int(a[1])))


def cmd_leaders_agree(ports):
    """Every partition hosted anywhere has exactly one node in role leader, and each
    of its replicas names that node as leader."""
    lead, seen = {}, {}
    for p in ports:
        s = status(p)
        for x in s["partitions"]:
            seen.setdefault(x["partition"], set()).add(x["leader"])
            if x["role"] == "leader":
                if x["partition"] in lead:
                    print("partition %d has two leaders" % x["partition"])
                    return 1
                lead[x["partition"]] = s["node"]
    for part, names in seen.items():
        if part not in lead or names != {lead[part]}:
            print("partition %d: leader %s, replicas name %s" % (part, lead.get(part), names))
            return 1
    return 0


def metric(port, name):
    total, found = 0.0, False
    for line in http(port, "/metrics").splitlines():
        if line.startswith("#"):
            continue
        head = line.split(" ")[0]
        if head == name or head.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
            found = True
    return total if found else None


def cmd_metric(a):
    v = metric(a[0], a[1])
    if v is None:
        print("metric %s not found" % a[1], file=sys.stderr)
        return 1
    print(int(v) if v == int(v) else v)
    return 0


def cmd_get(a):
    c = wire.Conn(a[0], a[1])
    cons = a[3] if len(a) > 3 else "strong"
    minrev = int(a[4]) if len(a) > 4 else 0
    print(json.dumps(c.request(wire.get_msg(2, a[2], cons, minrev))))


def cmd_put(a):
    c = wire.Conn(a[0], a[1])
    cons = a[4] if len(a) > 4 else "strong"
    print(json.dumps(c.request(wire.put_msg(2, a[2], a[3], cons))))


def verify_node(ep, certs, items, cons, window=64):
    """Reads every key of items from ep, pipelined `window` deep; returns failures."""
    bad = []
    c = wire.Conn(ep, certs, timeout=30.0)
    try:
        sent = 0
        done = 0
        while done < len(items):
            while sent < len(items) and sent - done < window:
                c.send_body(wire.pack(wire.get_msg(sent + 1, items[sent][0], cons)))
                sent += 1
            r = c.recv_reply()
            k, v = items[r["req_id"] - 1]
            if r["status"] != "OK" or r.get("value") != v:
                bad.append("%s: key %s: want %r, got %s %r (%s)" % (
                    ep, k, v, r["status"], r.get("value"), r["message"]))
            done += 1
    finally:
        c.close()
    return bad


def cmd_verify(a):
    certs, path, cons, eps = a[0], a[1], a[2], a[3:]
    items = []
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if line:
                k, v = line.split("\t", 1)
                items.append((k, v))
    allbad = []
    for ep in eps:
        bad = verify_node(ep, certs, items, cons)
        print("%s: %d keys read %s, %d wrong" % (ep, len(items), cons, len(bad)))
        allbad += bad
    for b in allbad[:20]:
        print("  " + b)
    return 1 if allbad else 0


def cmd_hash_converged(a):
    deadline = time.time() + float(a[0])
    ports = a[1:]
    last = ""
    while True:
        by_part = {}
        for p in ports:
            for x in json.loads(http(p, "/hash", timeout=30))["partitions"]:
                by_part.setdefault(x["partition"], []).append((x["applied"], x["hash"], p))
        diff = [(k, v) for k, v in sorted(by_part.items()) if len({h for _, h, _ in v}) != 1]
        if not diff:
            print("content hashes agree on %d partitions" % len(by_part))
            return 0
        last = "; ".join("partition %d: %s" % (k, v) for k, v in diff[:5])
        if time.time() > deadline:
            print("content hashes differ after %ss: %s" % (a[0], last))
            return 1
        time.sleep(0.5)


def cmd_key_led_by(a):
    ep, certs, node, prefix = a[0], a[1], int(a[2]), a[3]
    c = wire.Conn(ep, certs)
    for i in range(200):
        r = c.request(wire.put_msg(i + 1, "%s%d" % (prefix, i), "probe", "strong"))
        if r["status"] == "OK" and r["served_by"] == node:
            print("%s%d" % (prefix, i))
            return 0
    print("no key among %s0..199 is served by node %d" % (prefix, node), file=sys.stderr)
    return 1


def cmd_probe_write(a):
    """Sends a strong put of KEY every 50 ms on one connection (pipelined: a probe
    stuck in a forward to the dead node does not delay the next) until a reply is
    OK; the figure is that reply's arrival time minus T0_MS."""
    ep, certs, key, t0_ms, timeout_s = a[0], a[1], a[2], int(a[3]), float(a[4])
    deadline = time.time() + timeout_s
    c, sent, last = None, 0, ""
    next_send = 0.0
    while time.time() < deadline:
        try:
            if c is None:
                c = wire.Conn(ep, certs, timeout=2.0)
            now = time.time()
            if now >= next_send:
                sent += 1
                c.send_body(wire.pack(wire.put_msg(sent, key, "after-kill-%d" % sent, "strong",
                                                   timeout_ms=1000)))
                next_send = now + 0.05
            wait = max(0.0, next_send - time.time())
            while c.sock.pending() or select.select([c.sock], [], [], wait)[0]:
                r = c.recv_reply()
                if r["status"] == "OK":
                    print("%d %d %d" % (int(time.time() * 1000) - t0_ms, r["served_by"], sent))
                    return 0
                last = "%s %s" % (r["status"], r["message"])
                wait = max(0.0, next_send - time.time())
        except (OSError, ConnectionError, ValueError) as e:
            last = "connection: %s" % e
            if c:
                c.close()
            c = None
            time.sleep(0.05)
    print("no strong write succeeded within %ss (%d sent; last: %s)" % (
        timeout_s, sent, last), file=sys.stderr)
    return 1


def cmd_lagging_read(a):
    """With the follower stopped (SIGSTOP), a strong put of KEY goes through the leader;
    a fast get without and one with min_revision = the put's revision are queued on
    an open connection to the follower, which is then resumed. The token read must
    return the new value, served by the follower itself. Prints both replies."""
    fid, fep, fpid, lep, certs, key = int(a[0]), a[1], int(a[2]), a[3], a[4], a[5]
    f = wire.Conn(fep, certs)
    before = f.request(wire.get_msg(1, key, "fast"))
    if before["status"] != "OK" or before["served_by"] != fid:
        print("warm-up read from the follower: %s" % json.dumps(before))
        return 1
    newval = "after-%d" % int(time.time() * 1000)
    os.kill(fpid, signal.SIGSTOP)
    try:
        lc = wire.Conn(lep, certs)
        w = lc.request(wire.put_msg(2, key, newval, "strong"))
        if w["status"] != "OK":
            print("put while the follower is stopped: %s" % json.dumps(w))
            return 1
        rev = w["revision"]
        f.send_body(wire.pack(wire.get_msg(10, key, "fast", 0)))
        f.send_body(wire.pack(wire.get_msg(11, key, "fast", rev, timeout_ms=5000)))
        time.sleep(0.2)
    finally:
        os.kill(fpid, signal.SIGCONT)
    got = {}
    for _ in range(2):
        r = f.recv_reply()
        got[r["req_id"]] = r
    plain, token = got[10], got[11]
    print(json.dumps({"put_revision": rev, "new_value": newval, "old_value": before["value"],
                      "plain_read": plain, "token_read": token}))
    ok = (token["status"] == "OK" and token["value"] == newval and
          token["served_by"] == fid and token["revision"] >= rev)
    return 0 if ok else 1


def cmd_balance(a):
    """Every node hosts about REPLICAS/n of the P partitions (within 15 %: the ring's
    64 vnodes give about +-12 %), every partition has REPLICAS replicas and one
    leader they all name, that leader is the preferred primary, and each node leads
    P/n +- 1 partitions. Prints one summary line; exit 0 if all hold."""
    P, R, ports = int(a[0]), int(a[1]), a[2:]
    n = len(ports)
    hosted, leads, problems = {}, {}, []
    holders, leaders, named = {}, {}, {}
    for p in ports:
        s = status(p)
        node = s["node"]
        hosted[node] = len(s["partitions"])
        leads[node] = 0
        for x in s["partitions"]:
            holders.setdefault(x["partition"], []).append(node)
            named.setdefault(x["partition"], set()).add(x["leader"])
            if x["role"] == "leader":
                leads[node] += 1
                leaders.setdefault(x["partition"], []).append(node)
                if x["leader"] != x["preferred"] or x["leader"] != node:
                    problems.append("partition %d led by %d, preferred %d" % (
                        x["partition"], node, x["preferred"]))
    want = P * R / n
    for node, h in sorted(hosted.items()):
        if abs(h - want) > 0.15 * want:
            problems.append("node %d hosts %d partitions, want about %.1f" % (node, h, want))
        if abs(leads[node] - P / n) > 1:
            problems.append("node %d leads %d partitions, want %.1f +- 1" % (node, leads[node], P / n))
    for part in range(P):
        if len(holders.get(part, [])) != R:
            problems.append("partition %d held by %s" % (part, holders.get(part)))
        if len(leaders.get(part, [])) != 1:
            problems.append("partition %d has leaders %s" % (part, leaders.get(part)))
        elif named.get(part) != set(leaders[part]):
            problems.append("partition %d: replicas name leaders %s" % (part, named.get(part)))
    print("hosted %s leads %s%s" % (
        " ".join("%d:%d" % kv for kv in sorted(hosted.items())),
        " ".join("%d:%d" % kv for kv in sorted(leads.items())),
        ("; " + "; ".join(problems[:6])) if problems else ""))
    return 1 if problems else 0


def cmd_failover(a):
    t0_ms, timeout_s, parts, ports = int(a[0]), float(a[1]), a[2], a[3:]
    want = {int(x) for x in parts.split(",") if x}
    done = {}
    deadline = time.time() + timeout_s
    while want - set(done) and time.time() < deadline:
        for p in ports:
            try:
                st = status(p)
            except OSError:
                continue
            now = int(time.time() * 1000) - t0_ms
            for x in st["partitions"]:
                if x["partition"] in want and x["partition"] not in done and x["role"] == "leader":
                    done[x["partition"]] = (now, st["node"], x["term"])
        time.sleep(0.05)
    rows = sorted(done.items(), key=lambda kv: -kv[1][0])
    for part in sorted(want - set(done)):
        print("partition %d: no leader after %.0f s" % (part, timeout_s))
    for part, (ms, node, term) in rows:
        print("partition %d: %d ms (node %d, term %d)" % (part, ms, node, term))
    return 1 if want - set(done) else 0


CMDS = {"failover": cmd_failover, "balance": cmd_balance, "lagging-read": cmd_lagging_read, "key-led-by": cmd_key_led_by, "probe-write": cmd_probe_write, "http": cmd_http, "roles": cmd_roles, "led-by": cmd_led_by,
        "leaders-agree": cmd_leaders_agree, "metric": cmd_metric, "get": cmd_get,
        "put": cmd_put, "verify": cmd_verify, "hash-converged": cmd_hash_converged}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in CMDS:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(CMDS[sys.argv[1]](sys.argv[2:]) or 0)
