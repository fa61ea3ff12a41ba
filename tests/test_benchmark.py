"""tools/benchmark.py runs and prints its columns (a smoke test on a tiny net; no timing is asserted)."""
import os
import re
import subprocess
import sys

import utils
from conftest import REPO
from runner import user_env


def test_benchmark_prints_a_row_per_configuration_and_order():
    env = user_env()
    proc = subprocess.run([sys.executable, str(REPO / 'tools' / 'benchmark.py'), '--configs', 'tiny', '--steps', '2',
                           '--warmup', '1', '--eval_configs', 'tiny', '--eval_tasks', '2'],
                          capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = {tuple(line.split()[:2]): line.split() for line in proc.stdout.splitlines()
            if line.startswith('tiny ')}
    assert set(rows) >= {('tiny', 'second'), ('tiny', 'first')}, proc.stdout
    for order in ('second', 'first'):
        seconds = float(rows[('tiny', order)][2])
        assert seconds > 0
    # evaluation as main.py's test: 10 tasks for each core, a group each; the first batch counted in
    cores = len(os.sched_getaffinity(0))
    _, groups, per_task, first, whole = rows[('tiny', str(10 * cores))][1:6]
    assert int(groups) == cores and float(per_task) > 0, proc.stdout
    assert float(whole) >= float(first) > 0, proc.stdout
    assert re.search(r'matmul ceiling .* median [0-9.]+ GFLOP/s', proc.stdout)
    assert 'error' not in proc.stdout.lower(), proc.stdout
    if utils.grouped_conv_gradients_work():  # the worker must get them too (utils before TensorFlow)
        assert 'grouped convolutions unavailable' not in proc.stdout, proc.stdout


def test_kernel_table_gives_every_layer_and_the_bound():
    proc = subprocess.run([sys.executable, str(REPO / 'tools' / 'benchmark.py'), '--configs', 'none', '--eval_configs', 'none',
                           '--kernels', 'tiny', '--steps', '2'],
                          capture_output=True, text=True, env=user_env(), timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    layers = [line.split() for line in proc.stdout.splitlines() if line.startswith('tiny ')]
    assert [int(cols[1]) for cols in layers] == [1, 2, 3, 4], proc.stdout
    # input sizes of Omniglot with stride-2 convolutions: 28 -> 14 -> 7 -> 4
    assert [cols[2] for cols in layers] == ['28x28x1', '14x14x8', '7x7x8', '4x4x8'], proc.stdout
    assert all(float(v) > 0 for cols in layers for v in cols[5:11]), proc.stdout
    bound = re.search(r'tiny: a second-order step is ([0-9.]+) GFLOP; at the fastest rate above '
                      r'\(([0-9.]+) GFLOP/s.*take at least ([0-9.]+) s', proc.stdout)
    assert bound, proc.stdout
    flops, rate, seconds = (float(g) for g in bound.groups())
    assert flops > 0 and abs(seconds - flops / rate) <= 0.02 * seconds  # printed to 3-4 digits


def test_replicas_row_measures_the_strategy_and_projects_by_its_formula():
    proc = subprocess.run([sys.executable, str(REPO / 'tools' / 'benchmark.py'), '--replicas', '2', '--configs', 'tiny',
                           '--orders', 'second', '--steps', '2', '--warmup', '1'],
                          capture_output=True, text=True, env=user_env(), timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith('tiny ')]
    assert len(rows) == 1 and 'ERROR' not in rows[0], proc.stdout
    cells = re.split(r'\s{2,}', rows[0].strip())
    # config, order, tasks, 1 process, 2 workers, speedup, all-reduce ms, MB, overhead, then k=1, 2, 4, 8, 16
    assert cells[:3] == ['tiny', 'second', '2'], cells
    one, two, allreduce, overhead = float(cells[3]), float(cells[4]), float(cells[6]) / 1000, float(cells[8])
    assert one > 0 and two > 0 and allreduce > 0
    # the speedup comes from the unrounded times: it may differ from the ratio of the printed ones
    # by their rounding (4 decimals, relative error half / time each) and its own (2 decimals)
    half = 0.00005
    bound = 1.01 * one / two * (half / one + half / two) + 0.005 + 1e-9
    assert abs(float(cells[5].rstrip('x')) - one / two) <= bound, cells
    k1 = cells[9].replace(',', '').split()
    assert k1[0] == k1[1] == cells[3] and k1[2] == '(%.1f)' % (one * 60000 / 3600)  # k=1: the single process
    share2, projected2 = (float(v) for v in cells[10].replace(',', '').split()[:2])
    # k=2 is the measured 2-worker step: share(2) + overhead + all-reduce (to the printed digits)
    assert abs(projected2 - two) <= 2e-4 and abs(share2 + overhead + allreduce - two) <= 3e-4, cells
    assert cells[11:] == ['- (2 tasks)'] * 3  # a worker needs a task: tiny's 2 tasks stop at 2 workers


def test_op_kinds_of_tensorflow_and_onednn_op_types():
    import benchmark
    kinds = {t: benchmark.op_kind(t) for t in (
        'Conv2D', '_MklNativeFusedConv2D', '_MklNativeConv2DBackpropFilter', 'Conv2DBackpropInput',
        '_MklNativeFusedBatchNormEx', 'FusedBatchNormGradV3', '_MklTranspose', 'Tile', 'Sum', 'Mul',
        'ResourceApplyAdam', '_MklBatchMatMulV2')}
    assert kinds == {
        'Conv2D': 'conv forward', '_MklNativeFusedConv2D': 'conv forward',
        '_MklNativeConv2DBackpropFilter': 'conv backprop-filter', 'Conv2DBackpropInput': 'conv backprop-input',
        '_MklNativeFusedBatchNormEx': 'fused batch norm', 'FusedBatchNormGradV3': 'fused batch norm',
        '_MklTranspose': benchmark.OP_CATEGORIES[5][0], 'Tile': benchmark.OP_CATEGORIES[5][0],
        'Sum': 'reductions', 'Mul': 'elementwise and other', 'ResourceApplyAdam': 'variables and Adam',
        '_MklBatchMatMulV2': 'matmul'}


def test_profile_breaks_a_step_down_by_kind_of_op():
    proc = subprocess.run([sys.executable, str(REPO / 'tools' / 'benchmark.py'), '--profile', 'tiny,tiny:eval',
                           '--orders', 'second', '--steps', '2', '--warmup', '1'],
                          capture_output=True, text=True, env=user_env(), timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    blocks = proc.stdout.split('Op profile: ')[1:]
    cores = len(os.sched_getaffinity(0))  # main.py's test: 10 tiny tasks for each core, a group each
    assert [b.split(';')[0] for b in blocks] == [
        'tiny, second order', 'tiny, %d test tasks at once in %d group(s)' % (10 * cores, cores)], proc.stdout
    for block in blocks:
        total = float(re.search(r'op time ([0-9.]+) s/step', block).group(1))
        kinds = {}
        for line in filter(str.strip, block.split('op type (costliest')[0].splitlines()[2:]):
            name, seconds, share, runs = re.match(r'\s+(.+?)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9]+)$', line).groups()
            kinds[name] = (float(seconds), float(runs))
        # every op of a step lands in one kind: the kinds add up to the total
        assert abs(sum(s for s, _ in kinds.values()) - total) <= 0.0001 * len(kinds) + 1e-9, block
        for kind in ('conv forward', 'conv backprop-filter', 'conv backprop-input'):
            assert kinds[kind][0] > 0 and kinds[kind][1] >= 4, (kind, block)  # four conv layers
