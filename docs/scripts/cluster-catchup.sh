#!/bin/bash
# How long a new node takes to be ready: cluster "cs" (a snapshot every $EVERY entries) against
# "cn" (snapshots off), given the same writes: $PUTS PUTs of $PER registers over $NAMES names,
# 16 writers. Needs the nats-servers of cluster-up.sh; run from the repository root.
# Figures in docs/benchmarks.md#snapshots-and-catch-up:
#   EVERY=5000 PER=50 PUTS=20000 NAMES=100000  bash docs/scripts/cluster-catchup.sh
#   EVERY=5000 PER=50 PUTS=20000 NAMES=1000000 bash docs/scripts/cluster-catchup.sh
D=${D:-/tmp/reg-cluster}; R=${REG:-target/release/reg}
URLS=nats://127.0.0.1:4301,nats://127.0.0.1:4302,nats://127.0.0.1:4303
export PER=${PER:-50} PUTS=${PUTS:-20000} NAMES=${NAMES:-100000}
$R serve --addr 127.0.0.1:18090 --nats $URLS --cluster-name cs --cluster-snapshot-every ${EVERY:-5000} >$D/cs0.log 2>&1 & echo $! >>$D/pids
$R serve --addr 127.0.0.1:18091 --nats $URLS --cluster-name cn --cluster-snapshot-every 0 >$D/cn0.log 2>&1 & echo $! >>$D/pids
for p in 18090 18091; do for k in $(seq 300); do curl -sf http://127.0.0.1:$p/healthz >/dev/null && break; sleep 0.2; done; done
python3 - <<'PY'
import concurrent.futures as cf, json, os, requests
PER, PUTS, NAMES = (int(os.environ[k]) for k in ("PER", "PUTS", "NAMES"))
def run(port, lo, hi):
    s = requests.Session()
    for i in range(lo, hi):
        regs = {f"dev{(i * PER + j) % NAMES}": {"value": i, "ttl": "1h"} for j in range(PER)}
        r = s.put(f"http://127.0.0.1:{port}/provider", data=json.dumps({"registers": regs}))
        assert r.status_code == 204, r.text
for port in (18090, 18091):
    with cf.ThreadPoolExecutor(16) as ex:
        list(ex.map(lambda k: run(port, k * (PUTS // 16), (k + 1) * (PUTS // 16)), range(16)))
PY
for c in cs cn; do
  port=$([ $c = cs ] && echo 18092 || echo 18093)
  start=$(date +%s.%N)
  $R serve --addr 127.0.0.1:$port --nats $URLS --cluster-name $c >$D/${c}1.log 2>&1 & echo $! >>$D/pids
  for k in $(seq 3000); do curl -sf http://127.0.0.1:$port/healthz >/dev/null && break; sleep 0.02; done
  echo "$c: a new node ready after $(echo "$(date +%s.%N) - $start" | bc) s"
  curl -s "http://127.0.0.1:$port/metrics?registers=false" | grep -E "^reg_registers |^reg_cluster_(applied|snapshot)_sequence"
done
grep -h "snapshot stored" $D/cs0.log | tail -1
