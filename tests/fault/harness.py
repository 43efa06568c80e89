#!/usr/bin/env python3
"""harness.py - runs a real Trine cluster under faults and checks what its clients saw.

    tests/fault/harness.py [--nodes 3|5] [--seconds D] [--seed S] [--faults LIST]
                           [--mode mixed|alone] [--keep] [--dir DIR]

A run: build a private network (netns.py: one namespace per node, a bridge in a
hub namespace), start N trined nodes on it, run the client workers (worker.c:
register, set and fast workloads) for D seconds while the nemesis injects
seeded faults at random intervals, heal everything, wait until every replica
of every partition reports the same content hash at the same applied index
(/hash), read the sets and fast keys back, and run the checker (Porcupine for
the register histories, lost-write and rollback accounting for the others).

Faults (--faults, comma-separated; default kill,pause,partition,loss,clock,fsync):
  kill       kill -9 of a random node or of a partition's primary, restart at heal
  pause      SIGSTOP of a random node or a primary, SIGCONT at heal
  partition  isolate one node | isolate a primary | majority/minority split |
             bridge (two halves that share one node)
  loss       random packet loss (10-40 %) on one or two nodes
  clock      the wall clock of one node jumps (libfaketime, +-5 min)
  fsync      fdatasync fails on one node (libfiu): the node must stop, not ack
--mode alone runs one fault at a time; mixed (default) may overlap a network
fault with a process fault.

The last line is the summary:
  fault: seed=S ops=N faults=K (kill=a pause=b partition=c clock=d fsync=e) verdict=...
         lost=0 rollbacks=R unrecorded_rollbacks=0 converged=yes
(one line). Exit 0 only if verdict=linearizable, lost=0, unrecorded_rollbacks=0
and converged=yes. On a failure the run directory (histories, the checker's
report and HTML, every node's log and data) is kept and named.
"""
import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import netns  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PORT = 7001
HTTP = 7101
FAKETIME_LIB = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1"
FIU_LIBS = "/usr/lib/fiu/fiu_run_preload.so /usr/lib/fiu/fiu_posix_preload.so"
ALL_FAULTS = ["kill", "pause", "partition", "loss", "clock", "fsync"]
PROCESS_FAULTS = {"kill", "pause", "fsync"}


def mono_ns():
    return time.monotonic_ns()  # CLOCK_MONOTONIC, the workers' clock


def log(msg):
    print("[fault %7.1fs] %s" % (time.monotonic() - T0, msg), flush=True)


T0 = time.monotonic()


class Cluster:
    def __init__(self, args, run_dir, net):
        self.args = args
        self.dir = run_dir
        self.net = net
        self.n = args.nodes
        self.procs = {}
        self.paused = set()
        self.preload = []
        self.env = {}
        self.node_env = {}  # node -> {VAR: value} for its next start (crash matrix)
        if "clock" in args.faults and os.path.exists(FAKETIME_LIB):
            self.preload.append(FAKETIME_LIB)
            self.env.update(FAKETIME_DONT_FAKE_MONOTONIC="1", FAKETIME_NO_CACHE="1")
        if "fsync" in args.faults and os.path.exists("/usr/lib/fiu/fiu_posix_preload.so"):
            self.preload.extend(FIU_LIBS.split())

    def node_dir(self, i):
        return os.path.join(self.dir, "node-%d" % i)

    def members(self):
        return ",".join("%d=%s:%d" % (i, netns.node_addr(i), PORT) for i in range(1, self.n + 1))

    def endpoints(self):
        return ",".join("%s:%d" % (netns.node_addr(i), PORT) for i in range(1, self.n + 1))

    def certs(self):
        c = os.path.join(self.dir, "certs")
        hosts = ",".join(netns.node_addr(i) for i in range(1, self.n + 1))
        subprocess.run([os.path.join(ROOT, "scripts/gen-certs.sh"), "--dir", c, "--nodes",
                        str(self.n), "--hosts", hosts], check=True, stdout=subprocess.DEVNULL)
        return c

    def start(self, i):
        d = self.node_dir(i)
        os.makedirs(os.path.join(d, "data"), exist_ok=True)
        c = os.path.join(self.dir, "certs")
        env = []
        extra = dict(self.env_all) if hasattr(self, "env_all") else {}
        extra.update(self.node_env.get(i, {}))
        if extra:
            env = ["env"] + ["%s=%s" % kv for kv in sorted(extra.items())]
        if self.preload:
            env = (env or ["env"]) + ["LD_PRELOAD=" + " ".join(self.preload)]
            # An ASan build (SAN=1) refuses preloads ahead of its runtime unless told.
            asan = os.environ.get("ASAN_OPTIONS", "")
            env.append("ASAN_OPTIONS=" + ":".join(x for x in (asan, "verify_asan_link_order=0") if x))
            env += ["%s=%s" % kv for kv in self.env.items()]
            if FAKETIME_LIB in self.preload:
                ft = os.path.join(d, "faketime")
                if not os.path.exists(ft):
                    with open(ft, "w") as f:
                        f.write("+0\n")
                env.append("FAKETIME_TIMESTAMP_FILE=" + ft)
            if "/usr/lib/fiu/fiu_posix_preload.so" in self.preload:
                env.append("FIU_CTRL_FIFO=" + os.path.join(d, "fiu"))
        cmd = ["ip", "netns", "exec", self.net.ns(i)] + env + [
            os.path.join(self.args.bindir, "trined"), "--id", str(i),
            "--listen", "%s:%d" % (netns.node_addr(i), PORT),
            "--http", "%s:%d" % (netns.node_addr(i), HTTP),
            "--data-dir", os.path.join(d, "data"), "--initial-cluster", self.members(),
            "--partitions", str(self.args.partitions),
            "--tls-cert", os.path.join(c, "node-%d.pem" % i),
            "--tls-key", os.path.join(c, "node-%d.key" % i), "--tls-ca", os.path.join(c, "ca.pem")]
        out = open(os.path.join(d, "trined.log"), "ab")
        # ip netns exec and env exec trined: the pid is trined's.
        self.procs[i] = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        out.close()
        self.paused.discard(i)

    def alive(self, i):
        p = self.procs.get(i)
        return p is not None and p.poll() is None

    def signal(self, i, sig):
        if self.alive(i):
            os.kill(self.procs[i].pid, sig)

    def kill(self, i):
        self.signal(i, signal.SIGKILL)
        if i in self.procs:
            self.procs[i].wait()

    def pause(self, i):
        self.signal(i, signal.SIGSTOP)
        self.paused.add(i)

    def resume(self, i):
        self.signal(i, signal.SIGCONT)
        self.paused.discard(i)

    def http(self, i, path, timeout=1.0):
        url = "http://%s:%d%s" % (netns.node_addr(i), HTTP, path)
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return json.loads(r.read())

    def wait_up(self, limit_s=30):
        deadline = time.monotonic() + limit_s
        for i in range(1, self.n + 1):
            while True:
                if not self.alive(i):
                    raise RuntimeError("node %d exited; see %s" % (i, self.node_dir(i)))
                try:
                    self.http(i, "/health")
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise RuntimeError("node %d not healthy in %ds" % (i, limit_s))
                    time.sleep(0.1)

    def primary(self, rng):
        """A partition's primary as some reachable node sees it (None if unknown)."""
        for i in rng.sample(range(1, self.n + 1), self.n):
            if i in self.paused or not self.alive(i):
                continue
            try:
                st = self.http(i, "/status", timeout=0.5)
            except Exception:
                continue
            leaders = [p["leader"] for p in st["partitions"] if p.get("leader")]
            if leaders:
                return rng.choice(leaders)
        return None

    def stop_all(self):
        for i in list(self.procs):
            if i in self.paused:
                self.resume(i)
            self.signal(i, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for i, p in self.procs.items():
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


# --- the nemesis ---------------------------------------------------------------


class Nemesis:
    """Seeded faults at random intervals; every fault is logged to faults.jsonl."""

    def __init__(self, cl, net, rng, kinds, mode, log_path):
        self.cl, self.net, self.rng, self.kinds, self.mode = cl, net, rng, kinds, mode
        self.log = open(log_path, "w")
        self.active = []  # (kind, what, start_ns, heal_at_monotonic, heal_fn)
        self.count = {k: 0 for k in ALL_FAULTS}

    def n(self):
        return self.cl.n

    def pick_node(self, primary_ok=True):
        if primary_ok and self.rng.random() < 0.5:
            p = self.cl.primary(self.rng)
            if p:
                return p, "primary"
        return self.rng.randint(1, self.n()), "random"

    def busy_nodes(self):
        return {a[5] for a in self.active if a[5]}

    # Each inject_* applies a fault and returns (what, heal_fn, node or None).
    def inject_kill(self):
        i, why = self.pick_node()
        self.cl.kill(i)
        return "kill -9 node %d (%s)" % (i, why), lambda: self.cl.start(i), i

    def inject_pause(self):
        i, why = self.pick_node()
        self.cl.pause(i)
        return "SIGSTOP node %d (%s)" % (i, why), lambda: self.cl.resume(i), i

    def inject_fsync(self):
        i, why = self.pick_node()
        fifo = os.path.join(self.cl.node_dir(i), "fiu")
        r = subprocess.run(["fiu-ctrl", "-f", fifo, "-c",
                            "enable name=posix/io/sync/fdatasync,failinfo=5",
                            str(self.cl.procs[i].pid)], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError("fiu-ctrl: " + r.stderr.strip())

        logf = os.path.join(self.cl.node_dir(i), "trined.log")
        log_at = os.path.getsize(logf)

        def heal():
            # The node must stop itself on a failed fdatasync, before it acks
            # anything of that batch. A node that logged the failure and still
            # runs is a finding; one that did no fdatasync during the fault
            # (nothing to write) is given 5 s more, then the fault is disabled.
            deadline = time.monotonic() + 5
            while self.cl.alive(i) and time.monotonic() < deadline:
                time.sleep(0.1)
            if self.cl.alive(i):
                with open(logf, "rb") as f:
                    f.seek(log_at)
                    failed = b"fdatasync" in f.read()
                if failed:
                    self.survived_fsync.append(i)
                else:
                    log("nemesis: node %d did no fdatasync during the fault" % i)
                self.cl.kill(i)
            else:
                # It stopped itself: 70 when the WAL's fdatasync failed (its
                # stop hook), 1 when leveldb's did first (the replica fails,
                # the server stops). A signal or a clean exit is a finding.
                rc = self.cl.procs[i].returncode
                if rc is None or rc <= 0:
                    self.bad_exit.append((i, rc))
            self.cl.start(i)
        return "fdatasync fails on node %d (%s)" % (i, why), heal, i

    def inject_clock(self):
        i = self.rng.randint(1, self.n())
        secs = self.rng.choice([-1, 1]) * self.rng.randint(60, 300)
        ft = os.path.join(self.cl.node_dir(i), "faketime")
        with open(ft, "w") as f:
            f.write("%+d\n" % secs)

        def heal():
            with open(ft, "w") as f:
                f.write("+0\n")
        return "wall clock of node %d jumps %+ds" % (i, secs), heal, None

    def inject_partition(self):
        n = self.n()
        nodes = list(range(1, n + 1))
        self.rng.shuffle(nodes)
        shape = self.rng.choice(["isolate", "isolate-primary", "split", "bridge"])
        if shape == "isolate-primary":
            p = self.cl.primary(self.rng)
            if p:
                nodes.remove(p)
                nodes.insert(0, p)
            else:
                shape = "isolate"
        cuts = []
        if shape in ("isolate", "isolate-primary"):
            a = nodes[0]
            cuts = [(a, b) for b in nodes[1:]]
            what = "isolate node %d%s" % (a, " (primary)" if shape == "isolate-primary" else "")
        elif shape == "split":
            k = n // 2  # minority
            small, big = nodes[:k], nodes[k:]
            cuts = [(a, b) for a in small for b in big]
            what = "split %s | %s" % (small, big)
        else:  # bridge: halves share nodes[0]; they cannot talk to each other
            mid = nodes[0]
            rest = nodes[1:]
            left, right = rest[:len(rest) // 2], rest[len(rest) // 2:]
            cuts = [(a, b) for a in left for b in right]
            what = "bridge %s-%d-%s" % (left, mid, right)
        for a, b in cuts:
            self.net.cut(a, b)
        return "partition: " + what, lambda: self.net.heal("tfpart"), None

    def inject_loss(self):
        k = self.rng.choice([1, 1, 2])
        victims = self.rng.sample(range(1, self.n() + 1), k)
        prob = self.rng.choice([0.1, 0.2, 0.3, 0.4])
        for i in victims:
            self.net.loss(i, prob)
        return ("packet loss %d%% on nodes %s" % (prob * 100, victims),
                lambda: self.net.heal("tfloss"), None)

    def category(self, kind):
        return "process" if kind in PROCESS_FAULTS else kind

    def start_one(self, now, t_end):
        cats = {self.category(a[0]) for a in self.active}
        if self.mode == "alone" and self.active:
            return
        if self.active and self.rng.random() > 0.35:
            return  # mixed: overlap sometimes, not always
        choices = [k for k in self.kinds if self.category(k) not in cats]
        if "partition" in cats:  # keep a majority reachable by not also taking a node
            choices = [k for k in choices if k not in PROCESS_FAULTS]
        if any(self.category(a[0]) == "process" for a in self.active):
            choices = [k for k in choices if k != "partition"]
        if not choices:
            return
        # Every kind once before any repeats, so even a short run covers them all.
        fresh = [k for k in choices if self.count[k] == 0]
        kind = self.rng.choice(fresh or choices)
        try:
            what, heal, node = getattr(self, "inject_" + kind)()
        except Exception as e:  # a fault that could not be applied is reported, not counted
            log("nemesis: %s not applied: %s" % (kind, e))
            return
        dur = self.rng.uniform(1.5, 6.0)
        heal_at = min(now + dur, t_end)
        self.count[kind] += 1
        self.active.append([kind, what, mono_ns(), heal_at, heal, node])
        log("nemesis: %s for %.1fs" % (what, heal_at - now))

    def heal_due(self, now, force=False):
        for a in list(self.active):
            if force or now >= a[3]:
                a[4]()
                rec = {"kind": a[0], "what": a[1], "start": a[2], "heal": mono_ns()}
                self.log.write(json.dumps(rec) + "\n")
                self.log.flush()
                self.active.remove(a)
                log("nemesis: healed %s" % a[1])

    def run(self, seconds, stop):
        self.survived_fsync, self.bad_exit = [], []
        t0 = time.monotonic()
        t_end = t0 + seconds
        next_at = t0 + self.rng.uniform(1.0, 3.0)
        while time.monotonic() < t_end and not stop():
            now = time.monotonic()
            self.heal_due(now)
            if now >= next_at:
                self.start_one(now, t_end)
                next_at = now + self.rng.uniform(0.5, 3.0)
            time.sleep(0.05)
        self.heal_due(time.monotonic(), force=True)


# --- convergence ---------------------------------------------------------------


def converge(cl, limit_s):
    """Waits until every replica of every partition reports the same hash at the
    same applied index (read twice, 0.5 s apart, to see a settled state)."""
    deadline = time.monotonic() + limit_s
    last = None
    views = {}
    want = min(3, cl.n)
    while time.monotonic() < deadline:
        views = {}
        ok = True
        for i in range(1, cl.n + 1):
            try:
                h = cl.http(i, "/hash", timeout=5)
            except Exception:
                ok = False
                break
            for p in h["partitions"]:
                views.setdefault(p["partition"], []).append((i, p["applied"], p["hash"]))
        if ok and views:
            same = all(len(v) >= want and len({(a, h) for _, a, h in v}) == 1
                       for v in views.values())
            if same and len(views) == cl.args.partitions:
                snap = sorted((p, tuple(v)) for p, v in views.items())
                if snap == last:
                    return True, len(views), None
                last = snap
            else:
                last = None
        time.sleep(0.5)
    # What disagreed at the end: (node, applied, hash) per partition.
    diff = {p: v for p, v in views.items()
            if len(v) < want or len({(a, h) for _, a, h in v}) != 1}
    return False, 0, diff


# --- a run --------------------------------------------------------------------


def worker_cmd(args, cl, certs, hist, mode, clients, base, seconds, ops_max, keys):
    return [args.worker, "--endpoints", cl.endpoints(), "--ca", os.path.join(certs, "ca.pem"),
            "--cert", os.path.join(certs, "client.pem"), "--key",
            os.path.join(certs, "client.key"), "--out", hist, "--mode", mode, "--clients",
            str(clients), "--client-base", str(base), "--group", "8", "--keys", str(keys),
            "--seed", str(args.seed), "--seconds", "%.1f" % seconds, "--ops-max", str(ops_max),
            "--timeout-ms", str(args.timeout_ms)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, default=3, choices=[3, 5])
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--faults", default=",".join(ALL_FAULTS))
    ap.add_argument("--mode", default="mixed", choices=["mixed", "alone"])
    ap.add_argument("--partitions", type=int, default=16)
    ap.add_argument("--ops-max", type=int, default=20000000)
    ap.add_argument("--min-ops", type=int, default=0, help="fail a run with fewer operations")
    ap.add_argument("--require", default="", help="fault kinds that must have been injected")
    ap.add_argument("--register-clients", type=int, default=16)
    ap.add_argument("--register-keys", type=int, default=0, help="keys per group (0 = auto)")
    ap.add_argument("--set-clients", type=int, default=8)
    ap.add_argument("--fast-clients", type=int, default=4)
    ap.add_argument("--timeout-ms", type=int, default=3000)
    ap.add_argument("--converge-seconds", type=float, default=90)
    ap.add_argument("--check-seconds", type=float, default=300)
    ap.add_argument("--bindir", default=os.environ.get("BINDIR", "bin"))
    ap.add_argument("--worker", default=None)
    ap.add_argument("--checker", default=None)
    ap.add_argument("--dir", default=None, help="run directory (default: a new temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the run directory on success")
    args = ap.parse_args()
    os.chdir(ROOT)
    args.bindir = os.path.abspath(args.bindir)
    build = os.path.abspath(os.environ.get("BUILD", "build/rel"))
    args.worker = os.path.abspath(args.worker or os.path.join(build, "fault", "worker"))
    args.checker = os.path.abspath(args.checker or os.path.join(build, "fault", "checker"))
    if args.seed is None:
        args.seed = int(os.environ.get("TRINE_SEED") or random.SystemRandom().randrange(1, 2**31))
    args.faults = [f for f in args.faults.split(",") if f]
    for f in args.faults:
        if f not in ALL_FAULTS:
            ap.error("unknown fault %s" % f)
    with open(os.path.join(args.bindir, "trined"), "rb") as f:
        asan = b"__asan_init" in f.read()
    for kind in ("clock", "fsync"):
        if kind in args.faults and asan:
            # The preloads (libfaketime, libfiu's POSIX wrappers) crash an ASan
            # binary at start: SAN=1 runs the other faults only.
            log("ASan build: no %s faults (its preload library cannot run under ASan)" % kind)
            args.faults.remove(kind)
            args.require = ",".join(k for k in args.require.split(",") if k != kind)
    if "clock" in args.faults and not os.path.exists(FAKETIME_LIB):
        log("libfaketime missing: no clock faults (apt-get install faketime)")
        args.faults.remove("clock")
    if "fsync" in args.faults and not shutil.which("fiu-ctrl"):
        log("libfiu missing: no fsync faults (apt-get install fiu-utils)")
        args.faults.remove("fsync")
    print("fault: seed=%d nodes=%d seconds=%g faults=%s mode=%s (rerun with SEED=%d)" %
          (args.seed, args.nodes, args.seconds, ",".join(args.faults), args.mode, args.seed),
          flush=True)
    rng = random.Random(args.seed)
    run_dir = os.path.abspath(args.dir or tempfile.mkdtemp(prefix="trine-fault-"))
    os.makedirs(os.path.join(run_dir, "hist"), exist_ok=True)
    # The run uses its own copy of trined: a rebuild in the tree during a long
    # run must not put two versions of the entry format in one cluster.
    os.makedirs(os.path.join(run_dir, "bin"), exist_ok=True)
    shutil.copy2(os.path.join(args.bindir, "trined"), os.path.join(run_dir, "bin", "trined"))
    args.bindir = os.path.join(run_dir, "bin")
    run_id = "%04x" % random.SystemRandom().randrange(0, 0x10000)
    net = netns.Net(run_id, args.nodes)
    cl = None
    workers = []
    result = {"ok": False}
    stopping = {"flag": False}

    def on_signal(signum, frame):
        stopping["flag"] = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        net.up()
        net.enter_hub()
        cl = Cluster(args, run_dir, net)
        certs = cl.certs()
        for i in range(1, args.nodes + 1):
            cl.start(i)
        cl.wait_up()
        log("cluster of %d nodes up in netns %s* (%s)" % (args.nodes, net.hub[:-1], run_dir))
        ok, _, _ = converge(cl, 30)  # every partition elected and in agreement
        if not ok:
            raise RuntimeError("cluster did not settle before the workload")
        hist = os.path.join(run_dir, "hist")
        ops_each = max(1, args.ops_max // 3)
        # Keys per group of 8 register clients grow with the run so that one
        # key's history stays small enough for Porcupine (a few thousand operations).
        reg_keys = args.register_keys or max(8, int(args.seconds / 4))
        spec = [("register", args.register_clients, 0, reg_keys),
                ("set", args.set_clients, 1000, 4), ("fast", args.fast_clients, 2000, 1)]
        for mode, n, base, keys in spec:
            if n <= 0:
                continue
            wl = open(os.path.join(run_dir, "worker-%s.log" % mode), "w")
            workers.append(subprocess.Popen(
                worker_cmd(args, cl, certs, hist, mode, n, base, args.seconds, ops_each, keys),
                stdout=wl, stderr=subprocess.STDOUT))
            wl.close()
        nem = Nemesis(cl, net, rng, args.faults, args.mode, os.path.join(run_dir, "faults.jsonl"))
        nem.run(max(0.0, args.seconds - 5),
                lambda: stopping["flag"] or all(w.poll() is not None for w in workers))
        for w in workers:
            try:
                w.wait(timeout=args.seconds + 60)
            except subprocess.TimeoutExpired:
                w.kill()
                w.wait()
        log("workload done; healed; waiting for convergence")
        for i in range(1, args.nodes + 1):  # anything still down comes back
            if not cl.alive(i):
                cl.start(i)
        cl.wait_up()
        conv, nparts, diff = converge(cl, args.converge_seconds)
        log("convergence: %s" % ("yes, %d partitions" % nparts if conv else "NO %s" % diff))
        r = subprocess.run(worker_cmd(args, cl, certs, hist, "final", args.set_clients, 1000, 30,
                                      0, 4), capture_output=True, text=True)
        if r.returncode != 0:
            log("final reads failed: " + r.stderr.strip())
        rbs = ",".join(os.path.join(cl.node_dir(i), "data", "rollbacks.jsonl")
                       for i in range(1, args.nodes + 1))
        t = time.monotonic()
        chk = subprocess.run([args.checker, "-dir", run_dir, "-rollbacks", rbs, "-timeout",
                              "%ds" % args.check_seconds], capture_output=True, text=True)
        with open(os.path.join(run_dir, "check.json"), "w") as f:
            f.write(chk.stdout)
        if chk.returncode == 2 or not chk.stdout.strip():
            raise RuntimeError("checker failed: " + chk.stderr.strip())
        rep = json.loads(chk.stdout)
        log("checker: %s in %.1fs; %d register ops on %d keys, %d set adds, %d fast puts, "
            "%d unknown outcomes" % (rep["verdict"], time.monotonic() - t, rep["register_ops"],
                                     rep["keys"], rep["set_adds"], rep["fast_puts"],
                                     rep["unknown"]))
        if rep.get("bad_keys"):
            log("non-linearizable keys: %s; visualisation: %s" % (rep["bad_keys"], rep.get("html")))
        if rep["lost"]:
            log("LOST acknowledged set adds: %d, e.g. %s" % (rep["lost"], rep["lost_samples"]))
        if rep["unrecorded_rollbacks"]:
            log("UNRECORDED rollbacks: %s" % rep["unrecorded_samples"])
        for k in ("phantom", "duplicates", "final_reads_failed"):
            if rep[k]:
                log("ANOMALY %s=%d" % (k, rep[k]))
        if nem.survived_fsync:
            log("ANOMALY: nodes kept running after a failed fdatasync: %s" % nem.survived_fsync)
        if nem.bad_exit:
            log("ANOMALY: nodes exited with an unexpected status after a failed fdatasync: %s"
                % nem.bad_exit)
        heals = rep["heal_to_write_ms"]
        if heals:
            hs = sorted(heals)
            log("heal to first strong write: n=%d median=%.0fms p90=%.0fms max=%.0fms%s" % (
                len(hs), hs[len(hs) // 2], hs[int(len(hs) * 0.9)], hs[-1],
                "; %d heals with no write after" % rep["heals_without_write"]
                if rep["heals_without_write"] else ""))
            for kind, v in sorted(rep["heal_to_write_ms_by_kind"].items()):
                log("  after %-9s %s ms" % (kind, " ".join("%.0f" % x for x in v)))
        c = nem.count
        failovers = nem.count["kill"] + nem.count["pause"] + nem.count["partition"]
        log("fast mode: %d acknowledged, %d rolled back (%.2f per kill/pause/partition), "
            "%d rollback records on disk" % (rep["fast_acked"], rep["rollbacks"],
                                             rep["rollbacks"] / max(1, failovers),
                                             rep["rollback_records"]))
        missing = [k for k in args.require.split(",") if k and not c.get(k)]
        if missing:
            log("FAIL: required faults not injected: %s" % missing)
        if rep["ops"] < args.min_ops:
            log("FAIL: %d operations, fewer than --min-ops %d" % (rep["ops"], args.min_ops))
        ok = (not missing and rep["ops"] >= args.min_ops and
              rep["verdict"] == "linearizable" and rep["lost"] == 0 and
              rep["unrecorded_rollbacks"] == 0 and conv and chk.returncode == 0 and
              not nem.survived_fsync and not nem.bad_exit)
        result.update(ok=ok, line="fault: seed=%d ops=%d faults=%d (kill=%d pause=%d partition=%d "
                      "clock=%d fsync=%d loss=%d) verdict=%s lost=%d rollbacks=%d "
                      "unrecorded_rollbacks=%d converged=%s" % (
                          args.seed, rep["ops"], sum(c.values()), c["kill"], c["pause"],
                          c["partition"], c["clock"], c["fsync"], c["loss"], rep["verdict"],
                          rep["lost"], rep["rollbacks"], rep["unrecorded_rollbacks"],
                          "yes" if conv else "no"))
    except KeyboardInterrupt:
        result["line"] = "fault: seed=%d interrupted" % args.seed
    except Exception as e:
        log("harness error: %s" % e)
        result["line"] = ("fault: seed=%d ops=0 faults=0 (kill=0 pause=0 partition=0 clock=0 "
                          "fsync=0) verdict=ERROR lost=0 rollbacks=0 unrecorded_rollbacks=0 "
                          "converged=no" % args.seed)
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait()
        if cl is not None:
            cl.stop_all()
            for i in range(1, args.nodes + 1):  # a sanitizer report fails the run
                with open(os.path.join(cl.node_dir(i), "trined.log"), "rb") as f:
                    text = f.read()
                for pat in (b"ERROR: AddressSanitizer", b"ERROR: LeakSanitizer", b"runtime error:"):
                    if pat in text:
                        log("FAIL: sanitizer report in node %d's log" % i)
                        result["ok"] = False
                        result["line"] = result.get("line", "").replace("converged=yes",
                                                                        "converged=yes sanitizer=FAIL")
        net.down()
    if result["ok"] and not args.keep:
        shutil.rmtree(run_dir, ignore_errors=True)
    else:
        log("run directory kept: %s (node logs in node-*/trined.log)" % run_dir)
    print(result["line"], flush=True)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
