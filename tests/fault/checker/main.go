// Command checker judges what the clients of a fault run saw (tests/fault).
//
//	checker -dir RUN_DIR [-timeout 120s] [-rollbacks f1,f2,...] [-html out.html]
//
// It reads RUN_DIR/hist/hist-*.jsonl (worker.c's histories), RUN_DIR/hist/final.jsonl
// (reads after the faults healed) and RUN_DIR/faults.jsonl (the nemesis log), and
// checks:
//
//   - register: the strong get/put/cas/del history of every key "r/..." is
//     linearizable (Porcupine, partitioned by key). An unknown outcome is an
//     operation that may or may not have happened: it returns at +infinity and
//     its output is accepted in any state, so Porcupine may place it anywhere
//     after its call, including after everything else (not observed at all).
//   - set: every acknowledged add ("s/..." keys) is in the key's final value,
//     no element appears that nobody tried to add, and none appears twice.
//   - fast: every acknowledged fast put ("f/..." unique keys) that is missing
//     from the final scan was rolled back, and must be named in one of the
//     rollbacks.jsonl files given with -rollbacks.
//   - heal-to-write: for each healed fault, the time from its heal to the
//     first strong write acknowledged after it.
//
// It prints one JSON object (the harness's input for the summary line) and
// exits 0 if everything holds, 1 on any anomaly, 2 on bad input. On a
// linearizability violation it writes Porcupine's HTML visualisation.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
)

// rec is one line of a worker history (see worker.c).
type rec struct {
	C    int     `json:"c"`
	Op   string  `json:"op"`
	Key  string  `json:"key"`
	V    *string `json:"v"`
	Ev   *uint64 `json:"ev"`
	Call int64   `json:"call"`
	Ret  int64   `json:"ret"`
	St   string  `json:"st"`
	Out  *string `json:"out"`
	Ver  uint64  `json:"ver"`
	Rev  uint64  `json:"rev"`
	Srv  uint64  `json:"srv"`
	Err  string  `json:"err"`
}

type fault struct {
	Kind  string `json:"kind"`
	What  string `json:"what"`
	Start int64  `json:"start"`
	Heal  int64  `json:"heal"`
}

type report struct {
	Verdict          string               `json:"verdict"` // linearizable | VIOLATION | UNKNOWN
	Ops              int                  `json:"ops"`
	RegisterOps      int                  `json:"register_ops"`
	SetAdds          int                  `json:"set_adds"`
	FastPuts         int                  `json:"fast_puts"`
	Unknown          int                  `json:"unknown"`
	Keys             int                  `json:"keys"`
	BadKeys          []string             `json:"bad_keys,omitempty"`
	Lost             int                  `json:"lost"`
	LostSamples      []string             `json:"lost_samples,omitempty"`
	Phantom          int                  `json:"phantom"`
	Duplicates       int                  `json:"duplicates"`
	FinalReadsFailed int                  `json:"final_reads_failed"`
	FastAcked        int                  `json:"fast_acked"`
	Rollbacks        int                  `json:"rollbacks"`
	RollbackRecords  int                  `json:"rollback_records"`
	Unrecorded       int                  `json:"unrecorded_rollbacks"`
	UnrecordedSample []string             `json:"unrecorded_samples,omitempty"`
	HealToWriteMs    []float64            `json:"heal_to_write_ms"`
	HealByKind       map[string][]float64 `json:"heal_to_write_ms_by_kind"`
	NeverWrote       int                  `json:"heals_without_write"`
	HTML             string               `json:"html,omitempty"`
	CheckSeconds     float64              `json:"check_seconds"`
}

func readJSONL[T any](path string, out *[]T) error {
	return eachJSONL(path, func(v T) { *out = append(*out, v) })
}

// eachJSONL decodes a JSON-lines file one line at a time (histories of long
// runs are gigabytes: only what a check needs is kept).
func eachJSONL[T any](path string, fn func(T)) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for ln := 1; sc.Scan(); ln++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		var v T
		if err := json.Unmarshal([]byte(line), &v); err != nil {
			// A worker killed mid-line leaves a torn last line: skip only that.
			if !sc.Scan() {
				break
			}
			return fmt.Errorf("%s:%d: %v", path, ln, err)
		}
		fn(v)
	}
	return sc.Err()
}

func main() {
	dir := flag.String("dir", "", "run directory (hist/, faults.jsonl)")
	timeout := flag.Duration("timeout", 120*time.Second, "Porcupine time limit")
	rbs := flag.String("rollbacks", "", "comma-separated rollbacks.jsonl files")
	html := flag.String("html", "", "visualisation file on a violation (default DIR/linearizability.html)")
	flag.Parse()
	if *dir == "" {
		fmt.Fprintln(os.Stderr, "usage: checker -dir RUN_DIR [-timeout D] [-rollbacks F,...]")
		os.Exit(2)
	}
	if *html == "" {
		*html = filepath.Join(*dir, "linearizability.html")
	}
	t0 := time.Now()
	rep := report{Verdict: "linearizable", HealByKind: map[string][]float64{}}
	// One pass; each record is kept only as far as a check needs it.
	var reg, adds, fast, final []rec
	files, _ := filepath.Glob(filepath.Join(*dir, "hist", "hist-*.jsonl"))
	for _, f := range files {
		err := eachJSONL(f, func(r rec) {
			rep.Ops++
			if r.St == "unknown" {
				rep.Unknown++
			}
			switch {
			case strings.HasPrefix(r.Key, "r/"):
				rep.RegisterOps++
				reg = append(reg, r)
			case r.Op == "add":
				rep.SetAdds++
				adds = append(adds, rec{Op: r.Op, Key: r.Key, V: r.V, St: r.St, Ret: r.Ret, Err: r.Err})
			case strings.HasPrefix(r.Key, "f/"):
				rep.FastPuts++
				if r.St == "ok" {
					fast = append(fast, rec{Op: r.Op, Key: r.Key, St: r.St})
				}
			}
		})
		if err != nil {
			fail(err)
		}
	}
	if _, err := os.Stat(filepath.Join(*dir, "hist", "final.jsonl")); err == nil {
		if err := readJSONL(filepath.Join(*dir, "hist", "final.jsonl"), &final); err != nil {
			fail(err)
		}
	}
	var faults []fault
	if _, err := os.Stat(filepath.Join(*dir, "faults.jsonl")); err == nil {
		if err := readJSONL(filepath.Join(*dir, "faults.jsonl"), &faults); err != nil {
			fail(err)
		}
	}
	checkRegister(reg, *timeout, *html, &rep)
	checkSet(adds, final, &rep)
	checkFast(fast, final, *rbs, &rep)
	healToWrite(faults, &rep, reg, adds)
	rep.CheckSeconds = time.Since(t0).Seconds()
	b, _ := json.MarshalIndent(rep, "", "  ")
	fmt.Println(string(b))
	if rep.Verdict != "linearizable" || rep.Lost > 0 || rep.Phantom > 0 || rep.Duplicates > 0 ||
		rep.Unrecorded > 0 || rep.FinalReadsFailed > 0 {
		os.Exit(1)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "checker:", err)
	os.Exit(2)
}

// checkRegister runs Porcupine over the register operations, partitioned by key.
func checkRegister(reg []rec, timeout time.Duration, htmlPath string, rep *report) {
	var ops []porcupine.Operation
	keys := map[string]bool{}
	for _, r := range reg {
		if r.St == "fail" {
			continue // certainly no effect (a failed read, a refused write)
		}
		keys[r.Key] = true
		in := regInput{key: r.Key, op: r.Op}
		if r.V != nil {
			in.value = *r.V
		}
		if r.Ev != nil {
			in.ev = *r.Ev
		}
		out := regOutput{unknown: r.St == "unknown", ver: r.Ver}
		if r.Out != nil {
			out.exists = true
			out.value = *r.Out
		}
		out.casFailed = r.Err == "CAS_FAILED"
		out.notFound = r.Op == "del" && r.Err == "NOT_FOUND"
		ret := r.Ret
		if out.unknown {
			ret = math.MaxInt64
		}
		ops = append(ops, porcupine.Operation{ClientId: r.C, Input: in, Call: r.Call,
			Output: out, Return: ret})
	}
	rep.Keys = len(keys)
	// One key at a time (not all partitions at once: Porcupine's search state
	// for a long run's 200 keys in parallel does not fit in memory).
	byKey := map[string][]porcupine.Operation{}
	for _, op := range ops {
		k := op.Input.(regInput).key
		byKey[k] = append(byKey[k], op)
	}
	ops = nil
	order := make([]string, 0, len(byKey))
	for k := range byKey {
		order = append(order, k)
	}
	sort.Strings(order)
	deadline := time.Now().Add(timeout)
	unknown := false
	for _, k := range order {
		left := time.Until(deadline)
		if left <= 0 {
			unknown = true
			break
		}
		res, info := porcupine.CheckOperationsVerbose(registerModel, byKey[k], left)
		switch res {
		case porcupine.Illegal:
			rep.BadKeys = append(rep.BadKeys, k)
			if rep.HTML == "" && porcupine.VisualizePath(registerModel, info, htmlPath) == nil {
				rep.HTML = htmlPath
			}
		case porcupine.Unknown:
			unknown = true
		}
		delete(byKey, k)
	}
	switch {
	case len(rep.BadKeys) > 0:
		rep.Verdict = "VIOLATION"
	case unknown:
		rep.Verdict = "UNKNOWN" // Porcupine ran out of time: no verdict, not a pass
	default:
		rep.Verdict = "linearizable"
	}
}

// parseSet splits a set value ("e1 e2 ...") into its elements.
func parseSet(v string) []string {
	if v == "" {
		return nil
	}
	return strings.Split(v, " ")
}

func checkSet(hist, final []rec, rep *report) {
	acked := map[string]map[string]bool{} // key -> element
	tried := map[string]map[string]bool{}
	for _, r := range hist {
		if r.Op != "add" || r.V == nil {
			continue
		}
		if tried[r.Key] == nil {
			tried[r.Key] = map[string]bool{}
			acked[r.Key] = map[string]bool{}
		}
		tried[r.Key][*r.V] = true
		if r.St == "ok" {
			acked[r.Key][*r.V] = true
		}
	}
	seen := map[string]bool{}
	for _, f := range final {
		if f.Op != "final" {
			continue
		}
		if f.St != "ok" {
			rep.FinalReadsFailed++
			continue
		}
		seen[f.Key] = true
		present := map[string]bool{}
		if f.Out != nil {
			for _, e := range parseSet(*f.Out) {
				if present[e] {
					rep.Duplicates++
				}
				present[e] = true
				if !tried[f.Key][e] {
					rep.Phantom++
				}
			}
		}
		for e := range acked[f.Key] {
			if !present[e] {
				rep.Lost++
				if len(rep.LostSamples) < 10 {
					rep.LostSamples = append(rep.LostSamples, f.Key+" "+e)
				}
			}
		}
	}
	for k, a := range acked {
		if !seen[k] && len(a) > 0 {
			rep.FinalReadsFailed++ // acknowledged adds on a key nobody read back
		}
	}
}

// rollbackKeys reads the keys named in rollbacks.jsonl files.
func rollbackKeys(list string, rep *report) map[string]bool {
	keys := map[string]bool{}
	if list == "" {
		return keys
	}
	for _, p := range strings.Split(list, ",") {
		var recs []struct {
			Key string `json:"key"`
			Op  string `json:"op"`
		}
		if err := readJSONL(p, &recs); err != nil {
			if os.IsNotExist(err) {
				continue
			}
			fail(err)
		}
		for _, r := range recs {
			keys[r.Key] = true
			rep.RollbackRecords++
		}
	}
	return keys
}

func checkFast(hist, final []rec, rbs string, rep *report) {
	present := map[string]bool{}
	scanned := false
	for _, f := range final {
		switch f.Op {
		case "fkey":
			present[f.Key] = true
			scanned = true
		case "fscan":
			if f.St != "ok" {
				rep.FinalReadsFailed++
			}
		}
	}
	rolled := rollbackKeys(rbs, rep)
	for _, r := range hist {
		if r.Op != "put" || !strings.HasPrefix(r.Key, "f/") || r.St != "ok" {
			continue
		}
		rep.FastAcked++
		if present[r.Key] {
			continue
		}
		rep.Rollbacks++
		if !rolled[r.Key] {
			rep.Unrecorded++
			if len(rep.UnrecordedSample) < 10 {
				rep.UnrecordedSample = append(rep.UnrecordedSample, r.Key)
			}
		}
	}
	_ = scanned
}

// healToWrite: for each healed fault, the first strong write acknowledged at
// or after the heal, in ms after it.
func healToWrite(faults []fault, rep *report, hists ...[]rec) {
	var acks []int64
	for _, r := range concatIter(hists) {
		if r.St != "ok" || r.Op == "get" || strings.HasPrefix(r.Key, "f/") {
			continue
		}
		if r.Op == "put" || r.Op == "cas" || r.Op == "del" || r.Op == "add" {
			if r.Err == "" { // a CAS_FAILED is answered but writes nothing
				acks = append(acks, r.Ret)
			}
		}
	}
	sort.Slice(acks, func(i, j int) bool { return acks[i] < acks[j] })
	rep.HealToWriteMs = []float64{}
	for _, f := range faults {
		if f.Heal == 0 {
			continue
		}
		i := sort.Search(len(acks), func(i int) bool { return acks[i] >= f.Heal })
		if i == len(acks) {
			rep.NeverWrote++
			continue
		}
		ms := float64(acks[i]-f.Heal) / 1e6
		rep.HealToWriteMs = append(rep.HealToWriteMs, ms)
		rep.HealByKind[f.Kind] = append(rep.HealByKind[f.Kind], ms)
	}
}

// concatIter lists the records of several slices without copying them into one.
func concatIter(hists [][]rec) []rec {
	if len(hists) == 1 {
		return hists[0]
	}
	n := 0
	for _, h := range hists {
		n += len(h)
	}
	out := make([]rec, 0, n)
	for _, h := range hists {
		out = append(out, h...)
	}
	return out
}
