"""wire.py - a small Trine wire client for the integration tests.

Speaks docs/protocol.md directly (frames = u32 big-endian length + one
msgpack array) over mutual TLS, so a test can aim a request at ONE node (the
client library routes to the partition's primary), resend a frame verbatim
(same client_id, seq) or send malformed bytes. A minimal msgpack encoder and
decoder is included: the tests must not depend on a pip package.

Wire numbering (protocol.md): consistency fast=0 strong=1 all=2; a request
with id N is answered by id N+64 (or error_reply, 64).
"""
import os
import socket
import ssl
import struct

PUT_REQ, GET_REQ, DELETE_REQ, CAS_REQ, SCAN_REQ = 1, 2, 3, 4, 5
ERROR_REPLY = 64
CONSISTENCY = {"fast": 0, "strong": 1, "all": 2}
CONSISTENCY_NAME = {v: k for k, v in CONSISTENCY.items()}
STATUS = {0: "OK", 1: "NOT_FOUND", 2: "NOT_LEADER", 3: "UNAVAILABLE", 4: "TIMEOUT",
          5: "CAS_FAILED", 6: "TOO_LARGE", 7: "BAD_REQUEST", 8: "UNAUTHENTICATED",
          9: "INTERNAL", 10: "UNSUPPORTED", 11: "BUSY", 12: "STALE"}


# ---- msgpack --------------------------------------------------------------------------

def pack(v):
    if v is None:
        return b"\xc0"
    if v is True:
        return b"\xc3"
    if v is False:
        return b"\xc2"
    if isinstance(v, int):
        if 0 <= v <= 0x7F:
            return bytes([v])
        if 0 <= v <= 0xFF:
            return b"\xcc" + bytes([v])
        if 0 <= v <= 0xFFFF:
            return b"\xcd" + struct.pack(">H", v)
        if 0 <= v <= 0xFFFFFFFF:
            return b"\xce" + struct.pack(">I", v)
        if 0 <= v:
            return b"\xcf" + struct.pack(">Q", v)
        if v >= -32:
            return struct.pack(">b", v)
        return b"\xd3" + struct.pack(">q", v)
    if isinstance(v, str):
        b = v.encode()
        if len(b) < 32:
            return bytes([0xA0 | len(b)]) + b
        if len(b) <= 0xFF:
            return b"\xd9" + bytes([len(b)]) + b
        if len(b) <= 0xFFFF:
            return b"\xda" + struct.pack(">H", len(b)) + b
        return b"\xdb" + struct.pack(">I", len(b)) + b
    if isinstance(v, (bytes, bytearray)):
        n = len(v)
        if n <= 0xFF:
            return b"\xc4" + bytes([n]) + bytes(v)
        if n <= 0xFFFF:
            return b"\xc5" + struct.pack(">H", n) + bytes(v)
        return b"\xc6" + struct.pack(">I", n) + bytes(v)
    if isinstance(v, (list, tuple)):
        n = len(v)
        if n < 16:
            h = bytes([0x90 | n])
        elif n <= 0xFFFF:
            h = b"\xdc" + struct.pack(">H", n)
        else:
            h = b"\xdd" + struct.pack(">I", n)
        return h + b"".join(pack(x) for x in v)
    raise TypeError("cannot pack %r" % type(v))


class _Reader:
    def __init__(self, b):
        self.b, self.i = b, 0

    def take(self, n):
        if self.i + n > len(self.b):
            raise ValueError("truncated msgpack")
        s = self.b[self.i:self.i + n]
        self.i += n
        return s

    def u(self, n):
        return int.from_bytes(self.take(n), "big")

    def value(self):
        t = self.u(1)
        if t <= 0x7F:
            return t
        if t >= 0xE0:
            return t - 256
        if 0x80 <= t <= 0x8F:
            return {self.value(): self.value() for _ in range(t & 0x0F)}
        if 0x90 <= t <= 0x9F:
            return [self.value() for _ in range(t & 0x0F)]
        if 0xA0 <= t <= 0xBF:
            return self.take(t & 0x1F).decode("utf-8", "replace")
        simple = {0xC0: None, 0xC2: False, 0xC3: True}
        if t in simple:
            return simple[t]
        if t in (0xC4, 0xC5, 0xC6):
            return bytes(self.take(self.u({0xC4: 1, 0xC5: 2, 0xC6: 4}[t])))
        if t in (0xCC, 0xCD, 0xCE, 0xCF):
            return self.u({0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8}[t])
        if t in (0xD0, 0xD1, 0xD2, 0xD3):
            n = {0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8}[t]
            return int.from_bytes(self.take(n), "big", signed=True)
        if t in (0xD9, 0xDA, 0xDB):
            n = self.u({0xD9: 1, 0xDA: 2, 0xDB: 4}[t])
            return self.take(n).decode("utf-8", "replace")
        if t in (0xDC, 0xDD):
            return [self.value() for _ in range(self.u(2 if t == 0xDC else 4))]
        if t in (0xDE, 0xDF):
            n = self.u(2 if t == 0xDE else 4)
            return {self.value(): self.value() for _ in range(n)}
        raise ValueError("unsupported msgpack byte 0x%02x" % t)


def unpack(b):
    r = _Reader(b)
    v = r.value()
    if r.i != len(b):
        raise ValueError("bytes after the msgpack value")
    return v


# ---- replies --------------------------------------------------------------------------

def parse_reply(body):
    """A reply as a dict: type, req_id, status (name), code, message, leader_hint,
    revision, served_by, applied_index, acks, consistency, plus per-type fields."""
    m = unpack(body)
    h = m[1]
    r = {"type": m[0], "req_id": h[0], "code": h[1], "status": STATUS.get(h[1], str(h[1])),
         "message": h[2], "leader_hint": h[3][0] if h[3] else 0, "revision": h[4],
         "served_by": h[5], "applied_index": h[6], "acks": h[7],
         "consistency": CONSISTENCY_NAME.get(h[8], h[8])}
    if m[0] in (PUT_REQ + 64, CAS_REQ + 64):
        r["version"] = m[2]
    elif m[0] == GET_REQ + 64:
        v = m[2]
        r["value"] = v.decode("utf-8", "replace") if isinstance(v, bytes) else v
        r["version"], r["create_revision"], r["mod_revision"] = m[3], m[4], m[5]
    return r


# ---- connections ----------------------------------------------------------------------

def tls_context(certs, cert="client.pem", key="client.key"):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(os.path.join(certs, "ca.pem"))
    ctx.load_cert_chain(os.path.join(certs, cert), os.path.join(certs, key))
    return ctx


def addr_of(endpoint):
    host, port = endpoint.rsplit(":", 1)
    return host, int(port)


class Conn:
    """One TLS connection to one node. Not thread-safe."""

    def __init__(self, endpoint, certs, timeout=10.0, ctx=None):
        host, port = addr_of(endpoint)
        raw = socket.create_connection((host, port), timeout=timeout)
        self.sock = (ctx or tls_context(certs)).wrap_socket(raw, server_hostname=host)
        self.sock.settimeout(timeout)
        self.next_id = 1

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send_raw(self, data):
        self.sock.sendall(data)

    def send_body(self, body):
        self.sock.sendall(struct.pack(">I", len(body)) + body)

    def _read_exact(self, n):
        out = bytearray()
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise ConnectionError("connection closed by the node")
            out += chunk
        return bytes(out)

    def recv_body(self):
        n = struct.unpack(">I", self._read_exact(4))[0]
        return self._read_exact(n)

    def recv_reply(self):
        return parse_reply(self.recv_body())

    def request(self, msg):
        self.send_body(pack(msg))
        return self.recv_reply()

    def new_id(self):
        self.next_id += 1
        return self.next_id


def hdr(req_id, consistency="strong", client_id=0, seq=0, timeout_ms=5000):
    return [req_id, client_id, seq, CONSISTENCY[consistency], timeout_ms]


def put_msg(req_id, key, value, consistency="strong", client_id=0, seq=0, timeout_ms=5000):
    return [PUT_REQ, hdr(req_id, consistency, client_id, seq, timeout_ms),
            _b(key), _b(value), 0]


def get_msg(req_id, key, consistency="strong", min_revision=0, timeout_ms=5000):
    return [GET_REQ, hdr(req_id, consistency, 0, 0, timeout_ms), _b(key), min_revision]


def _b(x):
    return x.encode() if isinstance(x, str) else bytes(x)
