#!/usr/bin/env python3
"""bad_input.py - the checks of bad_input.sh: hostile and broken clients against
one node. Each must get a clear error or a disconnect; a steady client on its
own connection must be served throughout; the node's memory must stay bounded.

  bad_input.py EP HTTP_PORT CERTS OTHER_CERTS PID MAX_FRAME RSS_MAX_MIB LATENCY_MAX_S

Prints one line per case ("ok   name: detail" / "FAIL name: detail"); exit 0 if
every case held.
"""
import json
import os
import socket
import ssl
import struct
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wire  # noqa: E402

EP, HTTP, CERTS, OTHER, PID = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
MAX_FRAME, RSS_MAX_MIB, LATENCY_MAX_S = int(sys.argv[6]), int(sys.argv[7]), float(sys.argv[8])
HOST, PORT = wire.addr_of(EP)
failures = []
NBIG = 120
STEADY_ID = int.from_bytes(os.urandom(7), "big") | 1


def report(ok, name, detail):
    print("%s %s: %s" % ("ok  " if ok else "FAIL", name, detail), flush=True)
    if not ok:
        failures.append(name)


def proc_kib(field):
    with open("/proc/%d/status" % PID) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def metric(name):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % HTTP, timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
    return None


def server_side_established(client_port):
    """True while the node's end of the connection from client_port is ESTABLISHED."""
    want_local, want_remote = "%04X" % PORT, "%04X" % client_port
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            p = line.split()
            if p[1].endswith(":" + want_local) and p[2].endswith(":" + want_remote):
                return p[3] == "01"
    return False


def closed_by_node(sock, within_s):
    """Reads until EOF/reset/TLS error; returns (closed, detail)."""
    sock.settimeout(within_s)
    got = 0
    end = time.time() + within_s
    try:
        while time.time() < end:
            b = sock.recv(65536)
            if not b:
                return True, "EOF after %d bytes" % got
            got += len(b)
    except socket.timeout:
        return False, "still open after %ss (%d bytes received)" % (within_s, got)
    except (ssl.SSLError, OSError) as e:
        return True, "%s after %d bytes" % (type(e).__name__ + ": " + str(e)[:80], got)
    return False, "still sending after %ss" % within_s


# ---- the steady client -------------------------------------------------------------------

class Steady(threading.Thread):
    """A well-behaved client on its own connection to the node: a strong put, then a
    fast get carrying the put's revision (served by this node once it applied it),
    every 100 ms; each retried as the library would, within 5 s."""

    def __init__(self):
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.ops, self.errors, self.worst, self.retries = 0, [], 0.0, 0

    RETRY = {"NOT_LEADER", "UNAVAILABLE", "BUSY", "TIMEOUT", "STALE"}

    def call(self, c, msg_fn, deadline):
        """One request, retried like the client library does (same frame: a put keeps
        its client_id/seq) on the statuses it retries, until deadline."""
        body = wire.pack(msg_fn(c.new_id()))
        while True:
            c.send_body(body)
            r = c.recv_reply()
            if r["status"] not in self.RETRY or time.time() > deadline:
                return r
            self.retries += 1
            time.sleep(0.05)

    def run(self):
        c = None
        i = 0
        while not self.stop.is_set():
            i += 1
            t0 = time.time()
            try:
                if c is None:
                    c = wire.Conn(EP, CERTS, timeout=10.0)
                k = "steady-%d" % i
                w = self.call(c, lambda rid: wire.put_msg(rid, k, "v%d" % i, "strong",
                                                          client_id=STEADY_ID, seq=i), t0 + 5)
                # Read-your-writes on this node: fast, with the put's revision as token.
                r = self.call(c, lambda rid: wire.get_msg(rid, k, "fast", w.get("revision", 0)),
                              t0 + 5)
                if w["status"] != "OK" or r["status"] != "OK" or r["value"] != "v%d" % i:
                    self.errors.append("%s: put %s get %s %r" % (k, w["status"], r["status"],
                                                                 r.get("value")))
            except (OSError, ConnectionError, ValueError) as e:
                self.errors.append("op %d: %s" % (i, e))
                c = None
            self.worst = max(self.worst, time.time() - t0)
            self.ops += 1
            self.stop.wait(0.1)


# ---- clients that never read --------------------------------------------------------------

class NonReader:
    """Pipelines requests and never reads the replies."""

    def __init__(self, name, frames):
        self.name = name
        self.c = wire.Conn(EP, CERTS, timeout=3.0)
        self.port = self.c.sock.getsockname()[1]
        self.sent = 0
        self.blocked = False
        data = b"".join(struct.pack(">I", len(f)) + f for f in frames)
        self.t = threading.Thread(target=self._send, args=(data,), daemon=True)
        self.t.start()

    def _send(self, data):
        try:
            for off in range(0, len(data), 65536):
                self.c.sock.sendall(data[off:off + 65536])
                self.sent = off + min(65536, len(data) - off)
        except (socket.timeout, ssl.SSLError, OSError):
            self.blocked = True  # the node stopped reading (backpressure) or closed


def main():
    rss0 = proc_kib("VmRSS")
    steady = Steady()
    steady.start()

    # Fill big values for the readers that never read: 120 x 200 KiB.
    setup = wire.Conn(EP, CERTS, timeout=30.0)
    big = b"x" * (200 << 10)
    for i in range(NBIG):
        r = setup.request(wire.put_msg(setup.new_id(), "big-%03d" % i, big, "strong"))
        if r["status"] != "OK":
            report(False, "setup", "put big-%03d: %s" % (i, r))
            return
    rss1 = proc_kib("VmRSS")

    # Never-reading clients: many gets of a 200 KiB value; 40 pipelined strong scans
    # of ~24 MiB each. Started first, checked last (the node closes a stalled conn
    # only after its stall timeout of 30 s, sooner once its output passes 32 MiB).
    gets = [wire.pack(wire.get_msg(i + 1, "big-%03d" % (i % NBIG), "fast")) for i in range(20000)]
    scans = [wire.pack([wire.SCAN_REQ, wire.hdr(i + 1, "strong"), b"big-", b"", 0, 0, 0])
             for i in range(40)]
    nonreaders = [NonReader("gets-1", gets), NonReader("gets-2", gets),
                  NonReader("scans", scans)]
    t_nr = time.time()

    # A TCP connection that never starts TLS: the handshake timeout (10 s) must end it.
    idle = socket.create_connection((HOST, PORT), timeout=5)
    t_idle = time.time()

    # Plaintext and random bytes on the TLS port.
    for name, payload in (("plaintext", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 4),
                          ("random bytes", os.urandom(65536))):
        s = socket.create_connection((HOST, PORT), timeout=5)
        try:
            s.sendall(payload)
        except OSError:
            pass
        closed, how = closed_by_node(s, 15)
        report(closed, name, how)
        s.close()

    # Client certificates the node must refuse: another CA's, and none at all.
    for name, ctx in (("certificate from another CA", None), ("no client certificate", None)):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(os.path.join(CERTS, "ca.pem"))
        if name.startswith("certificate"):
            ctx.load_cert_chain(os.path.join(OTHER, "client.pem"), os.path.join(OTHER, "client.key"))
        try:
            c = wire.Conn(EP, CERTS, timeout=10.0, ctx=ctx)
            r = c.request(wire.get_msg(1, "steady-1", "fast"))
            report(False, name, "served: %s" % r)
        except (ssl.SSLError, OSError, ConnectionError) as e:
            report(True, name, "refused: %s" % str(e)[:100])

    c = wire.Conn(EP, CERTS, timeout=15.0)

    def still_usable(tag):
        r = c.request(wire.get_msg(c.new_id(), "big-000", "fast"))
        return r["status"] == "OK", "%s; then a get on the same connection: %s" % (tag, r["status"])

    def expect_status(name, body, want):
        c.send_body(body)
        r = c.recv_reply()
        ok = r["status"] in want
        ok2, tail = still_usable("%s (%s)" % (r["status"], r["message"][:90]))
        report(ok and ok2, name, tail)

    expect_status("oversize key", wire.pack(wire.put_msg(c.new_id(), b"k" * 4097, b"v")),
                  {"TOO_LARGE"})
    # The boundary: a value of exactly --max-value (1 MiB) is accepted and reads back.
    # Retried like a client would (a primary may move while the node is loaded).
    end = time.time() + 10
    r = steady.call(c, lambda rid: wire.put_msg(rid, b"max-value", b"m" * (1 << 20), "strong",
                                                client_id=STEADY_ID, seq=1 << 40), end)
    g = steady.call(c, lambda rid: wire.get_msg(rid, b"max-value", "strong"), end) \
        if r["status"] == "OK" else r
    report(r["status"] == "OK" and g["status"] == "OK" and len(g.get("value") or "") == 1 << 20,
           "value of exactly --max-value (1 MiB) accepted", "put %s (%s), get %s" % (
               r["status"], r["message"], g["status"]))
    expect_status("oversize value",
                  wire.pack(wire.put_msg(c.new_id(), b"kv", b"v" * ((1 << 20) + 1))), {"TOO_LARGE"})
    expect_status("2^32-element array", b"\xdd\xff\xff\xff\xff\x01\x02", {"BAD_REQUEST", "TOO_LARGE"})
    expect_status("2^32-entry map", b"\xdf\xff\xff\xff\xff\x01\x02", {"BAD_REQUEST"})
    hdr = wire.pack(wire.hdr(c.new_id()))
    expect_status("key declaring 4 GiB", b"\x95\x01" + hdr + b"\xc6\xff\xff\xff\xff" + b"k" * 16,
                  {"BAD_REQUEST", "TOO_LARGE"})
    deep = wire.pack(wire.put_msg(c.new_id(), b"deep", b"v"))
    deep = bytes([deep[0] + 1]) + deep[1:] + b"\x91" * 100000 + b"\x01"
    # A field more than the node knows is refused before it is read
    # (docs/protocol.md, "Compatibility between versions").
    expect_status("100000 nested arrays", deep, {"BAD_REQUEST", "UNSUPPORTED"})
    expect_status("unknown message type", wire.pack([99, wire.hdr(c.new_id())]),
                  {"UNSUPPORTED", "BAD_REQUEST"})
    # A Raft message from a client certificate must never reach Raft.
    term0 = max(x["term"] for x in json.loads(urllib.request.urlopen(
        "http://127.0.0.1:%d/status" % HTTP, timeout=10).read())["partitions"])
    raft = wire.pack([129, 0, 0, 1, 2, 999999, 999999, 999999, 0, False, 0, 0, 0, [],
                      [0, 0, [], []]])
    expect_status("raft_msg from a client", raft, {"UNSUPPORTED"})
    expect_status("hello from a client", wire.pack([128, 1, 0, 1, 64, "127.0.0.1:1", False]),
                  {"UNSUPPORTED"})
    time.sleep(0.3)
    term1 = max(x["term"] for x in json.loads(urllib.request.urlopen(
        "http://127.0.0.1:%d/status" % HTTP, timeout=10).read())["partitions"])
    report(term1 < 999999, "raft_msg from a client ignored by Raft",
           "highest term %d before, %d after" % (term0, term1))
    c.send_raw(struct.pack(">I", 0))
    try:
        r = c.recv_reply()
        report(r["status"] == "BAD_REQUEST", "zero-length frame", "%s (%s)" % (r["status"], r["message"]))
    except (OSError, ConnectionError) as e:
        report(True, "zero-length frame", "closed: %s" % e)
    c.close()

    # Frames over --max-frame: the connection is closed (nothing allocated for them).
    for name, n in (("frame of max-frame + 1 bytes", MAX_FRAME + 1), ("frame of 4 GiB", 0xFFFFFFFF)):
        before = metric("trine_oversize_frames_total")
        c = wire.Conn(EP, CERTS, timeout=10.0)
        try:
            c.send_raw(struct.pack(">I", n) + b"\x92\x02" + b"\0" * 1000)
        except OSError:
            pass
        closed, how = closed_by_node(c.sock, 10)
        after = metric("trine_oversize_frames_total")
        report(closed and after == before + 1, name,
               "%s; trine_oversize_frames_total %s -> %s" % (how, before, after))
        c.close()

    # A frame cut short by a disconnect.
    c = wire.Conn(EP, CERTS)
    c.send_raw(struct.pack(">I", 1000) + b"\x95\x01")
    c.close()

    # The idle TCP connection: closed by the handshake timeout.
    idle_closed, how = closed_by_node(idle, max(1.0, 15 - (time.time() - t_idle)))
    report(idle_closed, "TCP connection without a TLS handshake",
           "%s (%.1f s after connecting)" % (how, time.time() - t_idle))
    idle.close()

    # The readers that never read: the node must stop reading them (backpressure)
    # and close them; wait up to 75 s from their start (stall timeout 30 s, checked
    # every 30 s).
    closed_at = {}
    deadline = t_nr + 75
    while len(closed_at) < len(nonreaders) and time.time() < deadline:
        for nr in nonreaders:
            if nr.name not in closed_at and not server_side_established(nr.port):
                closed_at[nr.name] = time.time() - t_nr
        time.sleep(0.5)
    for nr in nonreaders:
        gone = nr.name in closed_at
        report(gone, "client never reading (%s)" % nr.name,
               "%s; %d bytes of requests went out%s" % (
                   "disconnected by the node %.0f s after it started" % closed_at[nr.name]
                   if gone else "still connected after %.0f s" % (time.time() - t_nr),
                   nr.sent, ", then the node stopped reading" if nr.blocked else ""))
        nr.c.close()

    steady.stop.set()
    steady.join(15)
    report(not steady.errors and steady.ops > 10, "steady client served throughout",
           "%d put+get rounds, %d retries, %d errors %s, worst round %.2f s" % (
               steady.ops, steady.retries, len(steady.errors), steady.errors[:3], steady.worst))
    report(steady.worst < LATENCY_MAX_S, "steady client latency",
           "worst round %.2f s (bound %.0f s)" % (steady.worst, LATENCY_MAX_S))

    rss2, hwm = proc_kib("VmRSS"), proc_kib("VmHWM")
    grew = (max(rss2, hwm) - rss1) / 1024
    report(grew <= RSS_MAX_MIB, "node memory bounded",
           "VmRSS %d MiB at start, %d MiB after loading 24 MiB, %d MiB at the end, peak %d MiB: "
           "+%.0f MiB (bound %d)" % (rss0 // 1024, rss1 // 1024, rss2 // 1024, hwm // 1024, grew,
                                     RSS_MAX_MIB))


main()
sys.exit(1 if failures else 0)
