#!/bin/bash
# global-stream seeds 10..19 and ours seeds 20..29, alternating, one training at a time
cd "$(dirname "$0")/../.."  # the repository root (this is tools/sinusoid-study/)
for i in 0 1 2 3 4 5 6 7 8 9; do
  /usr/bin/time -f "global seed $((10+i)): %e s wall" python tools/sinusoid_study.py --train $((10+i)) --stream global --logdir 'logs/sinusoid-study/global-seed{seed}' --no-test
  /usr/bin/time -f "ours seed $((20+i)): %e s wall" python tools/sinusoid_study.py --train $((20+i)) --no-test
done
