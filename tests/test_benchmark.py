"""benchmark.py runs and prints its columns (a smoke test on a tiny net; no timing is asserted)."""
import re
import subprocess
import sys

import utils
from conftest import REPO
from runner import user_env


def test_benchmark_prints_a_row_per_configuration_and_order():
    env = user_env()
    proc = subprocess.run([sys.executable, str(REPO / 'benchmark.py'), '--configs', 'tiny', '--steps', '2',
                           '--warmup', '1', '--eval_configs', 'tiny', '--eval_tasks', '2'],
                          capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = {tuple(line.split()[:2]): line.split() for line in proc.stdout.splitlines()
            if line.startswith('tiny ')}
    assert set(rows) >= {('tiny', 'second'), ('tiny', 'first')}, proc.stdout
    for order in ('second', 'first'):
        seconds = float(rows[('tiny', order)][2])
        assert seconds > 0
    assert re.search(r'matmul ceiling .* median [0-9.]+ GFLOP/s', proc.stdout)
    assert 'error' not in proc.stdout.lower(), proc.stdout
    if utils.grouped_conv_gradients_work():  # the worker must get them too (utils before TensorFlow)
        assert 'grouped convolutions unavailable' not in proc.stdout, proc.stdout
