#!/usr/bin/env bash
# The demo's full preset on a lent GPU machine (device tool), in calls of at most 10 minutes:
#   benchmarks/demo_full_gpu.sh start SECONDS   # install carried wheels, start the run, wait
#   benchmarks/demo_full_gpu.sh wait SECONDS    # the next call: wait on, then collect
# The run is started in its own process session, so it outlives a call while the machine
# stays warm. Wheels the image lacks (grain, ml-collections, tensorboardX, av, and flax
# in our range) travel in .whl (see the device tool's README). Results land in $OUT.
set -u
mode=${1:-start}
limit=${2:-500}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
work=/tmp/demo_full
if [ "$mode" = start ]; then
  { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc;
    python3 -c "import jax, flax, grain; print('jax', jax.__version__, 'flax', flax.__version__, jax.devices())"; } \
    | tee "$OUT/env.txt"
  setsid nohup bash -c "s=\$(date +%s); python3 -m sama_jax.demo --preset full --workdir $work > /tmp/full.log 2>&1; \
    echo \"rc \$? seconds \$((\$(date +%s) - s))\" > /tmp/full.done" > /dev/null 2>&1 &
fi
while [ ! -f /tmp/full.done ] && [ "$SECONDS" -lt "$limit" ]; do
  sleep 15
  tr '\r' '\n' < /tmp/full.log | grep -v '^\s*$' | tail -1 | cut -c1-160
done
cat /tmp/full.done 2>/dev/null || echo "still running after ${SECONDS}s"
tr '\r' '\n' < /tmp/full.log | grep -v '^\s*$' | grep -v 'it/s\]$' | tail -60 > "$OUT/full_log.txt"
tr '\r' '\n' < /tmp/full.log | grep -v '^\s*$' | tail -40
for f in results.md results.json previews/clip00.png previews/clip01.png; do
  [ -f "$work/$f" ] && cp "$work/$f" "$OUT/"
done
for s in stage1 stage2; do
  [ -f "$work/$s/metrics.jsonl" ] && cp "$work/$s/metrics.jsonl" "$OUT/${s}_metrics.jsonl"
done
exit 0
