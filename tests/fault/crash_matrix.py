#!/usr/bin/env python3
"""crash_matrix.py - the WAL crash matrix: kill or fail a node at every step of the write path.

    tests/fault/crash_matrix.py [--seed S] [--cases NAME,...] [--keep]

Needs the fault-point build of trined (`make fault-points`: build/fp/bin/trined,
internal/wal/faultpoint.h) and the fault tools (`make fault-tools`).

Each case starts a fresh 3-node cluster (one partition, so every write goes
through the same group; compaction after 1,500 entries and 256 KiB WAL
segments, so snapshots and segment deletion happen within seconds), arms
one fault point on one node (TRINE_FAULT_POINT, restarting that node with it),
runs the register and set workloads, and waits for the point to fire: the node
dies by SIGKILL at that instruction (or, for a `fail` point, must stop itself
with exit status 70; a `drop` point first truncates the WAL segment to its
durable bytes, losing the unsynced batch as a power cut would). The node is then restarted without the fault, the
workload goes on for a few seconds, stops, and the case passes only if:

  - the point fired and the node died as it should;
  - every replica reports the same content hash at the same applied index
    (the node recovered and rejoined);
  - the register histories are linearizable and no acknowledged set add is
    missing (recovery kept every acknowledged record).

The victim is the partition's primary, except for snap_install (a follower
paused until the primary has compacted past it, so it must take a snapshot).
Ends with `crash-matrix: N cases, N passed, N failed`; exit 0 iff all passed.
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
import types

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import netns  # noqa: E402

CASES = [  # name, TRINE_FAULT_POINT, victim, expected death (-9 SIGKILL | 70 fatal)
    ("append", "wal.append@400", "primary", -9),
    ("fsync-kill", "wal.fsync@400", "primary", -9),
    ("fsync-fail", "wal.fsync@400:fail", "primary", 70),
    ("fsync-fail-follower", "wal.fsync@400:fail", "follower", 70),
    ("lose-unsynced", "wal.fsync@400:drop", "primary", -9),
    ("lose-unsynced-follower", "wal.fsync@400:drop", "follower", -9),
    ("apply", "replica.apply@800", "primary", -9),
    ("snap_build", "replica.snap_build", "primary", -9),
    ("snap_install", "replica.snap_install", "follower", -9),
    ("segment_delete", "wal.segment_delete", "primary", -9),
]
TUNE = {"TRINE_FAULT_TUNE_COMPACT_ENTRIES": "1500", "TRINE_FAULT_TUNE_SEGMENT_BYTES": "262144"}


def log(msg):
    harness.log(msg)


def status0(cl, i):
    st = cl.http(i, "/status", timeout=1)
    return st["partitions"][0]


def leader_of(cl):
    for i in range(1, cl.n + 1):
        try:
            p = status0(cl, i)
            if p.get("leader"):
                return p["leader"], p.get("preferred") or p["leader"]
        except Exception:
            pass
    return None, None


def run_case(case, args, net, base_dir, seed):
    name, point, role, want_exit = case
    d = os.path.join(base_dir, name)
    os.makedirs(os.path.join(d, "hist"))
    cfg = types.SimpleNamespace(nodes=3, faults=[], bindir=args.fp_bindir, partitions=1)
    cl = harness.Cluster(cfg, d, net)
    cl.env_all = dict(TUNE)
    why = []
    workers = []
    conv = False
    try:
        certs = cl.certs()
        for i in (1, 2, 3):
            cl.start(i)
        cl.wait_up()
        if not harness.converge(cl, 30)[0]:
            raise RuntimeError("cluster did not settle")
        leader, preferred = leader_of(cl)
        primary = preferred or leader or 1
        victim = primary if role == "primary" else (primary % 3) + 1
        cl.kill(victim)
        cl.node_env[victim] = {"TRINE_FAULT_POINT": point}
        cl.start(victim)
        cl.wait_up()
        harness.converge(cl, 30)
        log("%s: %s armed on node %d (%s)" % (name, point, victim, role))
        hist = os.path.join(d, "hist")
        stop = os.path.join(d, "stop")
        wargs = types.SimpleNamespace(worker=args.worker, seed=seed, timeout_ms=3000)
        for mode, n, base, keys in (("register", 16, 0, 8), ("set", 8, 1000, 4)):
            cmd = harness.worker_cmd(wargs, cl, certs, hist, mode, n, base, 60, 400000, keys)
            wl = open(os.path.join(d, "worker-%s.log" % mode), "w")
            workers.append(subprocess.Popen(cmd + ["--stop-file", stop], stdout=wl,
                                            stderr=subprocess.STDOUT))
            wl.close()
        if role == "follower" and "snap_install" in point:
            # Lag the follower until the primary compacted past it.
            time.sleep(1)
            cl.pause(victim)
            t = time.monotonic()
            while time.monotonic() - t < 20:
                try:
                    if status0(cl, primary)["snapshot_index"] > 0:
                        break
                except Exception:
                    pass
                time.sleep(0.2)
            time.sleep(1)
            cl.resume(victim)
        t = time.monotonic()
        while cl.alive(victim) and time.monotonic() - t < 30:
            time.sleep(0.05)
        if cl.alive(victim):
            why.append("fault point %s never fired on node %d" % (point, victim))
        else:
            rc = cl.procs[victim].returncode
            with open(os.path.join(cl.node_dir(victim), "trined.log"), "rb") as f:
                fired = b'"faultpoint"' in f.read()
            log("%s: node %d died (status %s) %.1fs into the workload" %
                (name, victim, rc, time.monotonic() - t))
            if not fired:
                why.append("node %d died (status %s) but the point did not fire" % (victim, rc))
            elif rc != want_exit:
                why.append("node %d exited with %s, expected %s" % (victim, rc, want_exit))
        time.sleep(1)
        cl.node_env[victim] = {}
        cl.start(victim)
        cl.wait_up()
        time.sleep(4)  # load on the recovered node
        open(stop, "w").close()
        for w in workers:
            w.wait(timeout=60)
        conv, _, diff = harness.converge(cl, 60)
        if not conv:
            why.append("replicas did not converge: %s" % diff)
        r = subprocess.run(harness.worker_cmd(wargs, cl, certs, hist, "final", 8, 1000, 30, 0, 4),
                           capture_output=True, text=True)
        if r.returncode != 0:
            why.append("final reads failed: " + r.stderr.strip())
        chk = subprocess.run([args.checker, "-dir", d, "-timeout", "120s"], capture_output=True,
                             text=True)
        with open(os.path.join(d, "check.json"), "w") as f:
            f.write(chk.stdout)
        rep = json.loads(chk.stdout) if chk.stdout.strip() else {}
        if chk.returncode != 0:
            why.append("checker: verdict=%s lost=%s (%s)" % (rep.get("verdict"), rep.get("lost"),
                                                            chk.stderr.strip()))
        log("%s: %d ops, verdict=%s lost=%s converged=%s" % (
            name, rep.get("ops", 0), rep.get("verdict"), rep.get("lost"), "yes" if conv else "no"))
    except Exception as e:
        why.append("harness: %s" % e)
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait()
        cl.stop_all()
    return why


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--cases", default="")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    os.chdir(harness.ROOT)
    build = os.path.abspath(os.environ.get("BUILD", "build/rel"))
    args.worker = os.path.join(build, "fault", "worker")
    args.checker = os.path.join(build, "fault", "checker")
    args.fp_bindir = os.path.abspath("build/fp/bin")
    if not os.path.exists(os.path.join(args.fp_bindir, "trined")):
        print("crash-matrix: build/fp/bin/trined missing (make fault-points)")
        return 2
    if args.seed is None:
        args.seed = int(os.environ.get("TRINE_SEED") or random.SystemRandom().randrange(1, 2**31))
    cases = [c for c in CASES if not args.cases or c[0] in args.cases.split(",")]
    print("crash-matrix: seed=%d cases=%s" % (args.seed, ",".join(c[0] for c in cases)),
          flush=True)
    base = tempfile.mkdtemp(prefix="trine-crash-")
    # Its own copy of the fault-point trined: a rebuild in the tree mid-run must not mix versions.
    os.makedirs(os.path.join(base, "bin"))
    shutil.copy2(os.path.join(args.fp_bindir, "trined"), os.path.join(base, "bin", "trined"))
    args.fp_bindir = os.path.join(base, "bin")
    net = netns.Net("%04x" % random.SystemRandom().randrange(0, 0x10000), 3)
    failed = []
    signal.signal(signal.SIGTERM, lambda s, f: sys.exit(130))
    try:
        net.up()
        net.enter_hub()
        for c in cases:
            why = run_case(c, args, net, base, args.seed)
            net.heal("tfpart")
            if why:
                failed.append(c[0])
                for w in why:
                    log("%s: FAIL: %s" % (c[0], w))
            else:
                log("%s: ok" % c[0])
                if not args.keep:
                    shutil.rmtree(os.path.join(base, c[0]), ignore_errors=True)
    finally:
        net.down()
    if failed:
        log("kept %s (failed cases: %s)" % (base, ",".join(failed)))
    elif not args.keep:
        shutil.rmtree(base, ignore_errors=True)
    print("crash-matrix: %d cases, %d passed, %d failed" %
          (len(cases), len(cases) - len(failed), len(failed)), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
