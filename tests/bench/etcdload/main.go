// etcdload drives an etcd cluster with the same closed-loop workload that
// `trine-bench cluster` runs against Trine, for scripts/bench-compare.sh.
//
// N clients, each one goroutine with one call outstanding (like trine-bench
// --pipeline 1), share C gRPC connections (etcd's own benchmark tool shares
// connections the same way). Keys are drawn uniformly from --keys; values
// are --value-size random bytes. Reads are linearizable (etcd's default) or
// serializable with --serializable. Latencies go into a log-linear
// histogram with <=3.2% relative error; the result is one JSON object.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"math/bits"
	"math/rand"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// hist: buckets of 64 sub-buckets per power of two, in microseconds.
type hist struct {
	counts [64 * 64]uint64
	n      uint64
	max    uint64
}

func bucket(us uint64) int {
	if us < 64 {
		return int(us)
	}
	e := 63 - bits.LeadingZeros64(us) // floor(log2)
	shift := e - 5
	sub := (us >> uint(shift)) & 63
	return (shift+1)*64 + int(sub)
}

func bucketUpper(b int) uint64 {
	if b < 64 {
		return uint64(b)
	}
	shift := b/64 - 1
	sub := uint64(b % 64)
	return ((sub + 1) << uint(shift)) - 1
}

func (h *hist) add(us uint64) {
	b := bucket(us)
	if b >= len(h.counts) {
		b = len(h.counts) - 1
	}
	h.counts[b]++
	h.n++
	if us > h.max {
		h.max = us
	}
}

func (h *hist) merge(o *hist) {
	for i := range h.counts {
		h.counts[i] += o.counts[i]
	}
	h.n += o.n
	if o.max > h.max {
		h.max = o.max
	}
}

func (h *hist) quantile(q float64) uint64 {
	if h.n == 0 {
		return 0
	}
	want := uint64(math.Ceil(q * float64(h.n)))
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= want {
			return bucketUpper(i)
		}
	}
	return h.max
}

func main() {
	endpoints := flag.String("endpoints", "127.0.0.1:2379", "comma-separated etcd client URLs or host:port")
	workload := flag.String("workload", "write", "write | read")
	clients := flag.Int("clients", 16, "concurrent clients (one call outstanding each)")
	conns := flag.Int("conns", 0, "gRPC connections shared by the clients (default: min(clients, 16))")
	keys := flag.Int("keys", 100000, "key space (read preloads it)")
	valueSize := flag.Int("value-size", 256, "bytes per value")
	seconds := flag.Float64("seconds", 10, "measured time")
	serializable := flag.Bool("serializable", false, "serializable (non-linearizable) reads")
	seed := flag.Int64("seed", 1, "key choice seed")
	flag.Parse()
	if *clients <= 0 || *keys <= 0 || *seconds <= 0 || *clients > 4096 || *seconds > 3600 {
		fmt.Fprintln(os.Stderr, "etcdload: --clients 1..4096, --keys > 0, --seconds 0..3600")
		os.Exit(2)
	}
	if *conns <= 0 {
		*conns = *clients
		if *conns > 16 {
			*conns = 16
		}
	}
	eps := strings.Split(*endpoints, ",")
	cls := make([]*clientv3.Client, *conns)
	for i := range cls {
		c, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second})
		if err != nil {
			fmt.Fprintln(os.Stderr, "etcdload: connect:", err)
			os.Exit(1)
		}
		defer c.Close()
		cls[i] = c
	}
	rnd := rand.New(rand.NewSource(*seed))
	value := make([]byte, *valueSize)
	rnd.Read(value)
	val := string(value) // once: not a conversion per call in the measured loop
	key := func(i int) string { return fmt.Sprintf("bench:%012d", i) }

	if *workload == "read" {
		// preload the key space with bounded concurrency
		var next int64 = -1
		var wg sync.WaitGroup
		for w := 0; w < 64; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				for {
					i := int(atomic.AddInt64(&next, 1))
					if i >= *keys {
						return
					}
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					_, err := cls[w%len(cls)].Put(ctx, key(i), val)
					cancel()
					if err != nil {
						fmt.Fprintln(os.Stderr, "etcdload: preload:", err)
						os.Exit(1)
					}
				}
			}(w)
		}
		wg.Wait()
	} else if *workload != "write" {
		fmt.Fprintln(os.Stderr, "etcdload: --workload write|read")
		os.Exit(2)
	}

	var stop int32
	hs := make([]hist, *clients)
	errs := make([]map[string]uint64, *clients)
	var wg sync.WaitGroup
	start := time.Now()
	for c := 0; c < *clients; c++ {
		wg.Add(1)
		errs[c] = map[string]uint64{}
		go func(c int) {
			defer wg.Done()
			r := rand.New(rand.NewSource(*seed + int64(c)*7919 + 1))
			cl := cls[c%len(cls)]
			var opts []clientv3.OpOption
			if *serializable {
				opts = append(opts, clientv3.WithSerializable())
			}
			for atomic.LoadInt32(&stop) == 0 {
				k := key(r.Intn(*keys))
				t0 := time.Now()
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				var err error
				if *workload == "write" {
					_, err = cl.Put(ctx, k, val)
				} else {
					_, err = cl.Get(ctx, k, opts...)
				}
				cancel()
				if err != nil {
					errs[c][err.Error()]++
					continue
				}
				hs[c].add(uint64(time.Since(t0).Microseconds()))
			}
		}(c)
	}
	time.Sleep(time.Duration(*seconds * float64(time.Second)))
	atomic.StoreInt32(&stop, 1)
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	var h hist
	errTotal := map[string]uint64{}
	for c := range hs {
		h.merge(&hs[c])
		for k, v := range errs[c] {
			errTotal[k] += v
		}
	}
	level := "linearizable"
	if *serializable {
		level = "serializable"
	}
	out := map[string]any{
		"system": "etcd", "workload": *workload, "level": level, "clients": *clients,
		"conns": *conns, "value_size": *valueSize, "seconds": elapsed,
		"ops": h.n, "ops_per_s": float64(h.n) / elapsed,
		"p50_us": h.quantile(0.50), "p99_us": h.quantile(0.99), "p999_us": h.quantile(0.999),
		"max_us": h.max, "errors": errTotal,
	}
	enc := json.NewEncoder(os.Stdout)
	if err := enc.Encode(out); err != nil {
		os.Exit(1)
	}
}
