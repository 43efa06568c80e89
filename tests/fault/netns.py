"""netns.py - the fault harness's private network (tests/fault).

One network namespace per node plus a hub namespace holding a bridge; each
node has a veth pair whose other end is a port of the bridge. Addresses are in
SUBNET, which exists only inside these namespaces: nothing is routed out of
them, so no packet can reach any address outside this harness. The harness
process itself joins the hub namespace (setns) after creating the network, so
its HTTP probes and the client workers reach the nodes while the root
namespace never sees this traffic.

Faults live in two iptables chains in each node namespace, hooked from INPUT
and OUTPUT: tfpart (partitions: DROP to/from a peer's address) and tfloss
(random packet loss, `-m statistic --mode random`). Healing flushes a chain.

Names: tf<run>h (hub), tf<run>n<i> (node i), veths tf<run>v<i> / tf<run>b<i>
(at most 15 characters). Leftovers of killed runs (namespaces with this
pattern, no live owner in /run/trine-fault/<run> and no process inside) are
removed at the next start.
"""
import ctypes
import os
import re
import subprocess

SUBNET = "10.213.0"  # /24, only inside the harness's namespaces
HUB_ADDR = SUBNET + ".1"
CLONE_NEWNET = 0x40000000
NAME_RE = re.compile(r"^tf[0-9a-f]{4}(h|n\d+)$")
OWNERS = "/run/trine-fault"  # <run id> -> pid of the harness that owns its namespaces


def sh(*args, check=True):
    r = subprocess.run(list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if check and r.returncode != 0:
        raise RuntimeError("%s: %s" % (" ".join(args), r.stderr.strip()))
    return r


def node_addr(i):
    return "%s.%d" % (SUBNET, 10 + i)


def owner_alive(run_id):
    try:
        with open(os.path.join(OWNERS, run_id)) as f:
            os.kill(int(f.read().strip()), 0)
        return True
    except (OSError, ValueError):
        return False


def clean_stale():
    """Deletes namespaces of earlier runs whose harness process is gone (a run
    writes its pid to OWNERS/<run>; concurrent runs are left alone)."""
    out = sh("ip", "netns", "list", check=False).stdout
    for line in out.splitlines():
        name = line.split()[0] if line.split() else ""
        if not NAME_RE.match(name) or owner_alive(name[2:6]):
            continue
        if sh("ip", "netns", "pids", name, check=False).stdout.strip():
            continue
        sh("ip", "netns", "del", name, check=False)


class Net:
    def __init__(self, run_id, n):
        self.run = run_id
        self.n = n
        self.hub = "tf%sh" % run_id
        self.created = []

    def ns(self, i):
        return "tf%sn%d" % (self.run, i)

    def up(self):
        clean_stale()
        os.makedirs(OWNERS, exist_ok=True)
        with open(os.path.join(OWNERS, self.run), "w") as f:
            f.write("%d\n" % os.getpid())
        sh("ip", "netns", "add", self.hub)
        self.created.append(self.hub)
        h = self.hub
        sh("ip", "-n", h, "link", "set", "lo", "up")
        sh("ip", "-n", h, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", h, "addr", "add", HUB_ADDR + "/24", "dev", "br0")
        sh("ip", "-n", h, "link", "set", "br0", "up")
        for i in range(1, self.n + 1):
            ns = self.ns(i)
            sh("ip", "netns", "add", ns)
            self.created.append(ns)
            v, b = "tf%sv%d" % (self.run, i), "tf%sb%d" % (self.run, i)
            sh("ip", "link", "add", "name", v, "netns", ns, "type", "veth", "peer", "name", b,
               "netns", h)
            sh("ip", "-n", h, "link", "set", b, "master", "br0")
            sh("ip", "-n", h, "link", "set", b, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "addr", "add", node_addr(i) + "/24", "dev", v)
            sh("ip", "-n", ns, "link", "set", v, "up")
            for chain in ("tfpart", "tfloss"):
                self.ipt(i, "-N", chain)
                self.ipt(i, "-A", "INPUT", "-j", chain)
                self.ipt(i, "-A", "OUTPUT", "-j", chain)

    def enter_hub(self):
        """Moves this process (and its future children) into the hub namespace."""
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open("/run/netns/" + self.hub, os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns " + self.hub)
        finally:
            os.close(fd)

    def ipt(self, i, *args):
        return sh("ip", "netns", "exec", self.ns(i), "iptables", "-w", *args)

    def cut(self, a, b):
        """Drops every packet between nodes a and b (both directions, both sides)."""
        for x, y in ((a, b), (b, a)):
            self.ipt(x, "-A", "tfpart", "-s", node_addr(y), "-j", "DROP")
            self.ipt(x, "-A", "tfpart", "-d", node_addr(y), "-j", "DROP")

    def loss(self, i, prob):
        self.ipt(i, "-A", "tfloss", "-m", "statistic", "--mode", "random", "--probability",
                 "%.3f" % prob, "-j", "DROP")

    def heal(self, chain):
        for i in range(1, self.n + 1):
            self.ipt(i, "-F", chain)

    def down(self):
        for name in reversed(self.created):
            sh("ip", "netns", "del", name, check=False)
        self.created = []
        try:
            os.unlink(os.path.join(OWNERS, self.run))
        except OSError:
            pass
