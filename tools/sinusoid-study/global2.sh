#!/bin/bash
# global-stream seeds 20..29: twins (same initial weights) of ours 20..29
cd "$(dirname "$0")/../.."  # the repository root (this is tools/sinusoid-study/)
for s in 20 21 22 23 24 25 26 27 28 29; do
  /usr/bin/time -f "global seed $s: %e s wall" python tools/sinusoid_study.py --train $s --stream global --logdir 'logs/sinusoid-study/global-seed{seed}' --no-test
done
