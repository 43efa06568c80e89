#!/usr/bin/env python3
"""dedupe.py - the checks of dedupe.sh: a write re-sent with the same
(client_id, seq) is applied once, however it is re-sent.

  dedupe.py CLUSTER_DIR BASE_PORT N

Raw put_req frames (lib/wire.py) from one made-up client id:
  1. the same frame twice in a row to the primary      -> both replies version 1
  2. the same frame again through another node          -> version 1 (the forward is deduped)
  3. three copies pipelined in one write (before the first applies)
  4. a fast put re-sent                                 -> one version step
  5. a re-send with the same seq but ANOTHER value      -> the first value stays
  6. the primary killed (-9) right after acknowledging; the re-send goes to a
     survivor and is answered once a new primary is elected: still one version
     (the dedupe record is replicated state, decided at apply on every replica)
After each step a strong get checks version and value. Exit 0 = all held.
"""
import json
import os
import random
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wire  # noqa: E402

cl_dir, base, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
certs = os.path.join(cl_dir, "certs")
ep = {i: "127.0.0.1:%d" % (base + i - 1) for i in range(1, n + 1)}
client_id = random.getrandbits(63) | 1
seq = 1000
failures = []


def say(msg):
    print("dedupe: " + msg, flush=True)


def check(cond, msg):
    if not cond:
        failures.append(msg)
        say("FAIL: " + msg)


def conn(node):
    return wire.Conn(ep[node], certs)


def get(node, key):
    c = conn(node)
    try:
        return c.request(wire.get_msg(1, key, "strong"))
    finally:
        c.close()


def leader_of(key):
    """The node that serves a strong put of key (a put with no client id, not deduped)."""
    c = conn(1)
    try:
        r = c.request(wire.put_msg(1, key, "init", "strong"))
        assert r["status"] == "OK", r
        return r["served_by"]
    finally:
        c.close()


def put_frame(key, value, s, cons="strong", req_id=7):
    return wire.pack(wire.put_msg(req_id, key, value, cons, client_id=client_id, seq=s))


def send(node, frame, copies=1):
    c = conn(node)
    try:
        for _ in range(copies):
            c.send_body(frame)
        return [c.recv_reply() for _ in range(copies)]
    finally:
        c.close()


def expect_key(key, version, value, what):
    for node in ep:
        if not alive(node):
            continue
        r = get(node, key)
        check(r["status"] == "OK" and r["version"] == version and r["value"] == value,
              "%s: node %d reads version %s value %r, want version %d value %r" % (
                  what, node, r.get("version"), r.get("value"), version, value))


def pid(node):
    try:
        with open(os.path.join(cl_dir, "node-%d" % node, "pid")) as f:
            return int(f.read())
    except (OSError, ValueError):
        return 0


def alive(node):
    p = pid(node)
    if not p:
        return False
    try:
        os.kill(p, 0)
        with open("/proc/%d/stat" % p) as f:
            return f.read().split(")")[-1].split()[0] != "Z"  # a zombie is not alive
    except OSError:
        return False


def wait_gone(node):
    p = pid(node)
    for _ in range(100):
        try:
            os.kill(p, 0)
        except OSError:
            return
        time.sleep(0.1)


def dump_partition_status(message):
    """Prints the /status rows of the partition a refusal names, from every live node."""
    import re
    import urllib.request
    m = re.search(r"partition (\d+)", message)
    if not m:
        return
    part = int(m.group(1))
    for node in ep:
        if not alive(node):
            continue
        url = "http://127.0.0.1:%d/status" % (base + 100 + node - 1)
        try:
            st = json.loads(urllib.request.urlopen(url, timeout=5).read())
            row = [x for x in st["partitions"] if x["partition"] == part]
            say("node %d /status of partition %d: %s" % (node, part, json.dumps(row)))
        except OSError as e:
            say("node %d /status: %s" % (node, e))


key = "dd-%x" % client_id
L = leader_of(key)
other = L % n + 1
say("key %s, primary node %d, client id %x" % (key, L, client_id))

# 1. sequential retry, same node
seq += 1
f = put_frame(key, "one", seq)
r1 = send(L, f)[0]
r2 = send(L, f)[0]
say("1. first send: %s version %d; re-send: %s version %d" % (
    r1["status"], r1["version"], r2["status"], r2["version"]))
check(r1["status"] == "OK" and r2["status"] == "OK", "1. status %s / %s" % (r1, r2))
check(r2["version"] == r1["version"], "1. re-send version %d != first %d" % (
    r2["version"], r1["version"]))
check(r2["revision"] == r1["revision"], "1. re-send revision %d != first %d" % (
    r2["revision"], r1["revision"]))
v = r1["version"]
expect_key(key, v, "one", "1")

# 2. retry through another node (forwarded)
r3 = send(other, f)[0]
say("2. re-send via node %d: %s version %d (served by %d)" % (
    other, r3["status"], r3["version"], r3["served_by"]))
check(r3["status"] == "OK" and r3["version"] == v, "2. forwarded re-send: %s" % r3)
expect_key(key, v, "one", "2")

# 3. pipelined copies
seq += 1
rs = send(L, put_frame(key, "three", seq), copies=3)
say("3. three pipelined copies: versions %s" % [x["version"] for x in rs])
check(all(x["status"] == "OK" for x in rs), "3. statuses %s" % rs)
check(len({x["version"] for x in rs}) == 1 and rs[0]["version"] == v + 1,
      "3. versions %s, want all %d" % ([x["version"] for x in rs], v + 1))
v += 1
expect_key(key, v, "three", "3")

# 4. fast put re-sent (its version is decided at apply, so check with a read)
seq += 1
ff = put_frame(key, "four", seq, "fast")
a, b = send(L, ff)[0], send(L, ff)[0]
say("4. fast put and re-send: %s / %s" % (a["status"], b["status"]))
check(a["status"] == "OK" and b["status"] == "OK", "4. statuses %s / %s" % (a, b))
time.sleep(0.5)
v += 1
expect_key(key, v, "four", "4")

# 5. same seq, another value: the first write's result stands
seq += 1
g = send(L, put_frame(key, "five", seq))[0]
h = send(L, put_frame(key, "five-changed", seq))[0]
say("5. same seq, new value: versions %d / %d" % (g["version"], h["version"]))
check(g["status"] == "OK" and h["status"] == "OK" and h["version"] == g["version"] == v + 1,
      "5. %s / %s" % (g, h))
v += 1
expect_key(key, v, "five", "5")

# 6. re-send after the primary died
seq += 1
f6 = put_frame(key, "six", seq)
r6 = send(L, f6)[0]
check(r6["status"] == "OK" and r6["version"] == v + 1, "6. first send %s" % r6)
subprocess.run(["scripts/cluster.sh", "kill", str(L), "--dir", cl_dir], check=True,
               stdout=subprocess.DEVNULL)
say("6. acknowledged version %d by node %d, which is now killed" % (r6["version"], L))
deadline, last, r7 = time.time() + 40, None, None
while time.time() < deadline:
    try:
        r7 = send(other, f6)[0]
    except (OSError, ConnectionError) as e:
        r7 = {"status": "conn", "message": str(e)}
    if r7["status"] == "OK":
        break
    last = r7
    time.sleep(0.1)
say("6. re-send via node %d after the kill: %s version %s (last refusal: %s)" % (
    other, r7["status"], r7.get("version"), last and last["status"]))
check(r7["status"] == "OK" and r7["version"] == r6["version"],
      "6. re-send after the primary died: %s" % json.dumps(r7))
if r7["status"] != "OK":
    dump_partition_status(r7.get("message", ""))
v += 1
expect_key(key, v, "six", "6")
wait_gone(L)  # cluster.sh takes a not yet reaped zombie for a running node
subprocess.run(["scripts/cluster.sh", "restart", str(L), "--dir", cl_dir], check=True,
               stdout=subprocess.DEVNULL)
print(json.dumps({"restarted": L}))
sys.exit(1 if failures else 0)
