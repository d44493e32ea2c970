#!/bin/bash
# Three clustered nats-servers (client ports 4301-4303) and three `reg serve --nats` nodes
# (:18080-18082, cluster "cb") plus one stand-alone node (:18089), for docs/benchmarks.md#cluster.
# Run from the repository root after `bash .ci/run` (it puts nats-server in target/nats) and
# `cargo build --release --features cluster --bin reg`. Extra arguments go to every node.
# State in $D (default /tmp/reg-cluster); `kill $(cat $D/pids)` stops everything.
D=${D:-/tmp/reg-cluster}; N=${NATS:-target/nats/nats-server}; R=${REG:-target/release/reg}
[ -f $D/pids ] && kill $(cat $D/pids) 2>/dev/null && sleep 1
mkdir -p $D; rm -rf $D/js* $D/pids
for i in 1 2 3; do
  routes=$(for j in 1 2 3; do if [ $j != $i ]; then echo -n "nats://127.0.0.1:630$j,"; fi; done)
  $N -a 127.0.0.1 -p 430$i -n n$i -js -sd $D/js$i --cluster_name cl \
     --cluster nats://127.0.0.1:630$i --routes ${routes%,} >$D/nats$i.log 2>&1 & echo $! >>$D/pids
done
sleep 3
URLS=nats://127.0.0.1:4301,nats://127.0.0.1:4302,nats://127.0.0.1:4303
for i in 0 1 2; do
  $R serve --addr 127.0.0.1:1808$i --nats $URLS --cluster-name cb --max-connections 20000 "$@" \
     >$D/reg$i.log 2>&1 & echo $! >>$D/pids
done
$R serve --addr 127.0.0.1:18089 --max-connections 20000 >$D/single.log 2>&1 & echo $! >>$D/pids
for p in 18080 18081 18082 18089; do
  for k in $(seq 300); do curl -sf http://127.0.0.1:$p/healthz >/dev/null && break; sleep 0.2; done
  echo ":$p $(curl -s http://127.0.0.1:$p/healthz)"
done
