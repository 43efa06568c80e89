package main

// The checker must catch what it claims to catch: each test builds a small
// history with a known anomaly (or a known-legal tricky case) and asserts the
// verdict. tests/fault/short.sh runs these before every fault run.

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func str(s string) *string { return &s }
func u64(v uint64) *uint64 { return &v }

func verdict(t *testing.T, h []rec) string {
	t.Helper()
	rep := report{}
	checkRegister(h, 10*time.Second, filepath.Join(t.TempDir(), "v.html"), &rep)
	return rep.Verdict
}

func TestSequentialHistoryIsLinearizable(t *testing.T) {
	h := []rec{
		{C: 0, Op: "get", Key: "r/0/0", Call: 1, Ret: 2, St: "ok", Err: "NOT_FOUND"},
		{C: 0, Op: "put", Key: "r/0/0", V: str("a"), Call: 3, Ret: 4, St: "ok", Ver: 1},
		{C: 1, Op: "cas", Key: "r/0/0", V: str("b"), Ev: u64(1), Call: 5, Ret: 6, St: "ok", Ver: 2},
		{C: 1, Op: "cas", Key: "r/0/0", V: str("c"), Ev: u64(1), Call: 7, Ret: 8, St: "ok",
			Ver: 2, Err: "CAS_FAILED"},
		{C: 0, Op: "get", Key: "r/0/0", Call: 9, Ret: 10, St: "ok", Out: str("b"), Ver: 2},
		{C: 0, Op: "del", Key: "r/0/0", Call: 11, Ret: 12, St: "ok"},
		{C: 0, Op: "del", Key: "r/0/0", Call: 13, Ret: 14, St: "ok", Err: "NOT_FOUND"},
		{C: 0, Op: "put", Key: "r/0/0", V: str("d"), Call: 15, Ret: 16, St: "ok", Ver: 1},
	}
	if v := verdict(t, h); v != "linearizable" {
		t.Fatalf("verdict %s", v)
	}
}

func TestStaleReadIsAViolation(t *testing.T) {
	h := []rec{
		{C: 0, Op: "put", Key: "r/0/0", V: str("a"), Call: 1, Ret: 2, St: "ok", Ver: 1},
		{C: 0, Op: "put", Key: "r/0/0", V: str("b"), Call: 3, Ret: 4, St: "ok", Ver: 2},
		{C: 1, Op: "get", Key: "r/0/0", Call: 5, Ret: 6, St: "ok", Out: str("a"), Ver: 1},
	}
	if v := verdict(t, h); v != "VIOLATION" {
		t.Fatalf("verdict %s", v)
	}
}

func TestWrongVersionIsAViolation(t *testing.T) {
	h := []rec{
		{C: 0, Op: "put", Key: "r/0/0", V: str("a"), Call: 1, Ret: 2, St: "ok", Ver: 1},
		{C: 1, Op: "get", Key: "r/0/0", Call: 3, Ret: 4, St: "ok", Out: str("a"), Ver: 7},
	}
	if v := verdict(t, h); v != "VIOLATION" {
		t.Fatalf("verdict %s", v)
	}
}

func TestLostAcknowledgedWriteIsAViolation(t *testing.T) {
	h := []rec{
		{C: 0, Op: "put", Key: "r/0/0", V: str("a"), Call: 1, Ret: 2, St: "ok", Ver: 1},
		{C: 1, Op: "get", Key: "r/0/0", Call: 3, Ret: 4, St: "ok", Err: "NOT_FOUND"},
	}
	if v := verdict(t, h); v != "VIOLATION" {
		t.Fatalf("verdict %s", v)
	}
}

func TestUnknownWriteMayOrMayNotHappen(t *testing.T) {
	seen := []rec{ // the timed-out put took effect later
		{C: 0, Op: "put", Key: "r/0/0", V: str("a"), Call: 1, Ret: 2, St: "unknown", Err: "TIMEOUT"},
		{C: 1, Op: "get", Key: "r/0/0", Call: 3, Ret: 4, St: "ok", Err: "NOT_FOUND"},
		{C: 1, Op: "get", Key: "r/0/0", Call: 5, Ret: 6, St: "ok", Out: str("a"), Ver: 1},
	}
	if v := verdict(t, seen); v != "linearizable" {
		t.Fatalf("observed unknown write: verdict %s", v)
	}
	never := []rec{ // it never did
		{C: 0, Op: "put", Key: "r/0/0", V: str("a"), Call: 1, Ret: 2, St: "unknown", Err: "TIMEOUT"},
		{C: 1, Op: "get", Key: "r/0/0", Call: 3, Ret: 40, St: "ok", Err: "NOT_FOUND"},
	}
	if v := verdict(t, never); v != "linearizable" {
		t.Fatalf("unobserved unknown write: verdict %s", v)
	}
	// But an unknown write cannot happen before it was called.
	early := []rec{
		{C: 1, Op: "get", Key: "r/0/0", Call: 1, Ret: 2, St: "ok", Out: str("a"), Ver: 1},
		{C: 0, Op: "put", Key: "r/0/0", V: str("a"), Call: 3, Ret: 4, St: "unknown", Err: "TIMEOUT"},
	}
	if v := verdict(t, early); v != "VIOLATION" {
		t.Fatalf("read from the future: verdict %s", v)
	}
}

func TestFailedOpsAreIgnored(t *testing.T) {
	h := []rec{
		{C: 0, Op: "put", Key: "r/0/0", V: str("a"), Call: 1, Ret: 2, St: "ok", Ver: 1},
		{C: 1, Op: "get", Key: "r/0/0", Call: 3, Ret: 4, St: "fail", Err: "UNAVAILABLE"},
	}
	if v := verdict(t, h); v != "linearizable" {
		t.Fatalf("verdict %s", v)
	}
}

func TestSetLostPhantomDuplicate(t *testing.T) {
	hist := []rec{
		{C: 0, Op: "add", Key: "s/0/0", V: str("0.1"), St: "ok"},
		{C: 1, Op: "add", Key: "s/0/0", V: str("1.1"), St: "ok"},
		{C: 1, Op: "add", Key: "s/0/0", V: str("1.2"), St: "unknown"},
	}
	rep := report{}
	checkSet(hist, []rec{{Op: "final", Key: "s/0/0", St: "ok", Out: str("0.1 9.9 0.1")}}, &rep)
	if rep.Lost != 1 || rep.Phantom != 1 || rep.Duplicates != 1 {
		t.Fatalf("lost %d phantom %d duplicates %d", rep.Lost, rep.Phantom, rep.Duplicates)
	}
	rep = report{}
	checkSet(hist, []rec{{Op: "final", Key: "s/0/0", St: "ok", Out: str("1.1 0.1")}}, &rep)
	if rep.Lost != 0 || rep.Phantom != 0 || rep.Duplicates != 0 {
		t.Fatalf("clean set: %+v", rep)
	}
	rep = report{}
	checkSet(hist, nil, &rep)
	if rep.FinalReadsFailed != 1 {
		t.Fatalf("unread set key not reported")
	}
}

func TestFastRollbacksMustBeRecorded(t *testing.T) {
	dir := t.TempDir()
	rb := filepath.Join(dir, "rollbacks.jsonl")
	err := os.WriteFile(rb, []byte(`{"partition":1,"index":9,"term":2,"op":"put","key":"f/1/2",`+
		`"client_id":5,"seq":3,"time_ms":1,"exact":true}`+"\n"), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	hist := []rec{
		{Op: "put", Key: "f/1/1", St: "ok"},
		{Op: "put", Key: "f/1/2", St: "ok"},      // rolled back, recorded
		{Op: "put", Key: "f/1/3", St: "ok"},      // rolled back, NOT recorded
		{Op: "put", Key: "f/1/4", St: "unknown"}, // not acknowledged: may be gone
	}
	final := []rec{{Op: "fkey", Key: "f/1/1", St: "ok"}}
	rep := report{}
	checkFast(hist, final, rb+","+filepath.Join(dir, "absent.jsonl"), &rep)
	if rep.FastAcked != 3 || rep.Rollbacks != 2 || rep.Unrecorded != 1 || rep.RollbackRecords != 1 {
		t.Fatalf("%+v", rep)
	}
}

func TestHealToWrite(t *testing.T) {
	hist := []rec{
		{Op: "put", Key: "r/0/0", St: "ok", Ret: 5_000_000},
		{Op: "cas", Key: "r/0/0", St: "ok", Ret: 12_000_000, Err: "CAS_FAILED"}, // wrote nothing
		{Op: "add", Key: "s/0/0", St: "ok", Ret: 30_000_000},
		{Op: "put", Key: "f/0/0", St: "ok", Ret: 11_000_000}, // fast: not a strong write
	}
	rep := report{HealByKind: map[string][]float64{}}
	healToWrite([]fault{{Kind: "kill", Heal: 10_000_000}, {Kind: "pause", Heal: 40_000_000}}, &rep,
		hist)
	if len(rep.HealToWriteMs) != 1 || rep.HealToWriteMs[0] != 20 || rep.NeverWrote != 1 {
		t.Fatalf("%+v", rep)
	}
}
