package main

// The register model: one key's state is (exists, value, version), with the
// store's version rules (store.h): 1 on create, +1 per update, back to 0
// (absent) on delete; cas(expected) succeeds iff expected == current version
// (0 = absent). Versions reported by the cluster are checked too, not just
// values.

import (
	"fmt"

	"github.com/anishathalye/porcupine"
)

type regInput struct {
	key   string
	op    string // get | put | cas | del
	value string
	ev    uint64
}

type regOutput struct {
	unknown   bool // the call's outcome is unknown: accepted in any state
	exists    bool // get: a value came back
	value     string
	ver       uint64 // get: version read; put/cas: new version; cas failure: current
	casFailed bool
	notFound  bool // del: the key was absent
}

type regState struct {
	exists bool
	value  string
	ver    uint64
}

func regStep(st regState, in regInput, out regOutput) (bool, regState) {
	switch in.op {
	case "get":
		if out.exists {
			return st.exists && st.value == out.value && st.ver == out.ver, st
		}
		return !st.exists, st
	case "put":
		next := regState{exists: true, value: in.value, ver: st.ver + 1}
		if out.unknown {
			return true, next
		}
		return out.ver == 0 || out.ver == next.ver, next
	case "del":
		// The store answers NOT_FOUND for a delete of an absent key.
		if out.unknown {
			return true, regState{}
		}
		return st.exists != out.notFound, regState{}
	case "cas":
		match := st.ver == in.ev // absent has ver 0, and cas(0) means "must be absent"
		next := st
		if match {
			next = regState{exists: true, value: in.value, ver: st.ver + 1}
		}
		if out.unknown {
			return true, next
		}
		if out.casFailed {
			return !match && out.ver == st.ver, st
		}
		return match && (out.ver == 0 || out.ver == next.ver), next
	}
	return false, st
}

var registerModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var order []string
		for _, op := range history {
			k := op.Input.(regInput).key
			if _, ok := byKey[k]; !ok {
				order = append(order, k)
			}
			byKey[k] = append(byKey[k], op)
		}
		out := make([][]porcupine.Operation, 0, len(order))
		for _, k := range order {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() interface{} { return regState{} },
	Step: func(state, input, output interface{}) (bool, interface{}) {
		ok, next := regStep(state.(regState), input.(regInput), output.(regOutput))
		return ok, next
	},
	Equal: func(a, b interface{}) bool { return a.(regState) == b.(regState) },
	DescribeOperation: func(input, output interface{}) string {
		in, out := input.(regInput), output.(regOutput)
		res := "ok"
		switch {
		case out.unknown:
			res = "unknown"
		case out.casFailed:
			res = fmt.Sprintf("CAS_FAILED(v%d)", out.ver)
		case in.op == "get" && out.exists:
			res = fmt.Sprintf("%q v%d", out.value, out.ver)
		case in.op == "get":
			res = "absent"
		case out.ver > 0:
			res = fmt.Sprintf("ok v%d", out.ver)
		}
		switch in.op {
		case "get":
			return fmt.Sprintf("get(%s) -> %s", in.key, res)
		case "put":
			return fmt.Sprintf("put(%s, %q) -> %s", in.key, in.value, res)
		case "cas":
			return fmt.Sprintf("cas(%s, v%d, %q) -> %s", in.key, in.ev, in.value, res)
		}
		return fmt.Sprintf("del(%s) -> %s", in.key, res)
	},
	DescribeState: func(state interface{}) string {
		st := state.(regState)
		if !st.exists {
			return "absent"
		}
		return fmt.Sprintf("%q v%d", st.value, st.ver)
	},
}
