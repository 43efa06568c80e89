#!/usr/bin/env bash
set -euo pipefail
. tests/integration/lib/common.sh
cl_start 3
wait_for 20 settle leaders_settled
for i in $(seq 1 50); do cli put k$i v$i >/dev/null; done
victim=$(top_leader)
s=(); for i in 1 2 3; do [ $i = $victim ] || s+=($i); done
node_kill $victim
t0=$(now_ms)
for n in $(seq 1 100); do
  if out=$(leaders_settled "${s[@]}"); then say "settled after $(( $(now_ms) - t0 )) ms"; exit 0; fi
  [ $((n % 10)) = 0 ] && say "t+$(( $(now_ms) - t0 )): $out"
  sleep 0.2
done
say "NOT SETTLED: $out"
p=$(grep -o "partition [0-9]*" <<<"$out" | head -1 | cut -d' ' -f2)
for i in "${s[@]}"; do python3 -c "
import json,sys,urllib.request
st=json.loads(urllib.request.urlopen('http://127.0.0.1:$(node_http $i)/status').read())
print($i, [x for x in st['partitions'] if x['partition']==$p])"; done
grep -h "\"part\":$p," $(node_log 1) $(node_log 2) $(node_log 3) | cut -c1-200
cp -r $CL_DIR /tmp/stuck-$$ ; echo "copied to /tmp/stuck-$$"
exit 1
