#!/usr/bin/env bash
set -euo pipefail
. tests/integration/lib/common.sh
cl_start 3
wait_for 20 settle leaders_settled
for i in $(seq 1 50); do cli put k$i v$i >/dev/null; done
victim=$(top_leader)
s=(); for i in 1 2 3; do [ $i = $victim ] || s+=($i); done
say "killing $victim"
node_kill $victim
t0=$(now_ms)
for n in $(seq 1 60); do
  if out=$(leaders_settled "${s[@]}"); then say "settled after $(( $(now_ms) - t0 )) ms"; break; fi
  p=$(grep -o "partition [0-9]*" <<<"$out" | head -1 | cut -d' ' -f2)
  line="t+$(( $(now_ms) - t0 )) p$p:"
  for i in "${s[@]}"; do line="$line $(python3 -c "
import json,sys,urllib.request
st=json.loads(urllib.request.urlopen('http://127.0.0.1:$(node_http $i)/status').read())
x=[x for x in st['partitions'] if x['partition']==$p][0]
print('n$i', x['role'], 't', x['term'], 'c', x['commit'], 'a', x['applied'], 'l', x['last_index'], 'L', x['leader'])")"; done
  echo "$line"
  sleep 0.5
done
grep -h "\"part\":$p," $(node_log 1) $(node_log 2) $(node_log 3) | cut -c1-220 | tail -20
