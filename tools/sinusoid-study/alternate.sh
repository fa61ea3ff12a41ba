#!/bin/bash
# ours seeds 10..19 and global-stream seeds 0..9, alternating, one training at a time
cd "$(dirname "$0")/../.."  # the repository root (this is tools/sinusoid-study/)
for i in 0 1 2 3 4 5 6 7 8 9; do
  /usr/bin/time -f "ours seed $((10+i)): %e s wall" python tools/sinusoid_study.py --train $((10+i)) --no-test
  /usr/bin/time -f "global seed $i: %e s wall" python tools/sinusoid_study.py --train $i --stream global --logdir 'logs/sinusoid-study/global-seed{seed}' --no-test
done
