"""Time the meta-training step of every paper configuration, and the 600-task evaluation.

    python tools/benchmark.py                                     # everything (about 30 minutes on 2 cores)
    taskset -c 0 python tools/benchmark.py --configs omniglot_5w1s --orders second --steps 10
    python tools/benchmark.py --configs tiny --steps 2 --warmup 1 --eval_tasks 2   # smoke test
    python tools/benchmark.py --configs none --eval_configs none --kernels all     # conv kernels, layer by layer
    python tools/benchmark.py --replicas 2 --orders second --steps 5 --warmup 2    # tf.distribute, and the projection
    taskset -c 0 python tools/benchmark.py --profile omniglot_5w1s,omniglot_5w1s:eval --steps 10   # op by op

What is timed. For each configuration (the paper's hyperparameters: meta-batch
size, K, N, inner steps, filters, max pooling, 15 queries per class for
miniImagenet training) and each order (second: the full meta-gradient; first:
--stop_grad), one meta-training iteration, MAML.metatrain_step: the inner
loop, the meta-gradient and the Adam update, on synthetic in-memory batches of
the right shapes (random pixels, random one-hot labels; no data set needed,
and the time of one step does not depend on the pixel values). Each
configuration runs in its own subprocess, so that its peak memory is its own:
W warm-up steps (the first traces and compiles the step), then the median of
--steps timed steps. Training asks for the query losses of the inner steps
beyond num_updates only at report iterations (every 100th, see main.py's
Trainer); those cost more and are timed separately ("report s/iter", median of
a few). The projection for 60,000 iterations is 59,400 ordinary steps plus
600 report steps (validation every 500 iterations and data loading excluded).

Evaluation (--eval_configs) is main.py's test: 600 tasks, 10 inner steps
each, through MAML.evaluate_tasks in batches of main.TEST_TASKS_PER_BATCH
tasks (Omniglot 10, miniImagenet 1) for each core the run may use, in one
group per core with one thread per op, as main.py runs it. The 600 tasks'
time is the first batch (tracing and optimising the graph, then running it)
plus the median batch over --eval_tasks tasks for each further batch
(extrapolated, not 600 tasks actually run; main.py draws the tasks from the
data set while the previous batch runs, so that is not timed).

--profile runs TensorFlow's profiler over --steps steps of a configuration
(training, each of --orders; CONFIG:eval for its test batches) and prints
where the time goes: seconds per step by kind of op (convolution forward,
backprop-input, backprop-filter, fused batch norm, layout copies such as
transposes and tiles, reductions, the rest) and the costliest op types. Op
seconds are summed over threads, so on 2 cores they can exceed the wall time;
the gap between one core's wall time and its op seconds is the executor's own
time between ops. The profiler adds some overhead of its own: the wall time
it prints is under the profiler, above the untraced s/iter of the rows.

FLOPs are counted from the traced graph of the step: 2 x multiply-adds of
every convolution (forward and both backward kinds; grouped convolutions
count their groups' sizes) and every matrix product. Elementwise work (batch
norm, ReLU, losses, Adam) is not counted, so the rate is that of the dense
work only. The ceiling is one large float32 tf.matmul (2048 x 2048), timed in
each subprocess right after the configuration, so that both rates see the
same machine load; "% matmul" is the ratio of the two.

--kernels times the convolution kernels of each layer of the query pass
(forward, backprop-input, backprop-filter) as training runs them, one grouped
convolution over the tasks, and as one plain convolution with the tasks in
the batch (the same FLOPs). The fastest of these rates turns the FLOPs of a
second-order step into a lower bound on its time with these kernels, as if
every FLOP ran at that rate and the elementwise work were free.

Reference figures are those of the reference implementation (TF1 code under
TF 2.21 compat mode) with 2 cores, as the performance issue reports them
(2026-12-01, on an earlier machine than that of the afternoon run of
2026-12-02 in docs/log/performance-log-2026-12-02-afternoon.md); "speedup" is
reference time / our time (a range when the reference's is a range). If this
benchmark runs on fewer cores than the reference figures (taskset), the
speedups are understated. To time the reference beside this code in one run,
on the same machine, use tools/implementations/compare.py.

--replicas N times the step under tf.distribute.MultiWorkerMirroredStrategy:
N worker processes on this host (TF_CONFIG on free localhost ports), worker i
pinned to core i of this run's cores, each running its meta_batch_size / N
tasks; and, in the same workers, the all-reduce of the model's variables
alone (the meta-gradient's size). Beside them, one process pinned to the
first core runs the share of 1, 2, 4, 8 and 16 workers (meta_batch_size / k
tasks) without a strategy. The projection for k workers of one core each is
share(k) + overhead + (k - 1) x allreduce / (N - 1): overhead = (N-worker
step) - share(N) - allreduce is what the strategy added beyond the
all-reduce at N workers (its function calls, waiting for the slower worker),
taken as constant; the all-reduce, latency-bound at these sizes, grows with
the k - 1 sequential steps of each half of a ring all-reduce. Measured here,
over localhost; a real network's latency comes on top.

TensorFlow's CPU kernels use as many threads as the process may use cores:
run under `taskset -c 0` for one core. The header prints the cores, the
oneDNN setting and the machine. --onednn on/off sets TF_ENABLE_ONEDNN_OPTS in
the subprocesses (default: what main.py gets, unless the environment says
otherwise: off for sinusoid and the Omniglot evaluation, on for the rest). Without oneDNN the grouped convolutions
have no gradient, the step falls back to one convolution per task, and the
row says so.
"""
import argparse
import contextlib
import json
import os
import platform
import re
import resource
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

# The repository root, one folder up: the program's modules (main, maml, utils). It is put first
# on sys.path where they are imported (worker, test_tasks_per_batch), not at import time:
# tools/implementations/run_reference.py loads this file beside the reference's main.py and
# maml.py, which the project's would hide.
REPO = str(Path(__file__).resolve().parents[1])

# name: (model flags, meta-batch size, support examples per class K, query examples per class)
CONFIGS = {
    'sinusoid': (dict(datasource='sinusoid', norm='None', update_batch_size=10, update_lr=0.001,
                      num_updates=1), 25, 10, 10),
    'omniglot_5w1s': (dict(datasource='omniglot', num_classes=5, update_batch_size=1, update_lr=0.4,
                           num_updates=1), 32, 1, 1),
    'omniglot_5w5s': (dict(datasource='omniglot', num_classes=5, update_batch_size=5, update_lr=0.4,
                           num_updates=1), 32, 5, 5),
    'omniglot_20w1s': (dict(datasource='omniglot', num_classes=20, update_batch_size=1, update_lr=0.1,
                            num_updates=5), 16, 1, 1),
    'omniglot_20w5s': (dict(datasource='omniglot', num_classes=20, update_batch_size=5, update_lr=0.1,
                            num_updates=5), 16, 5, 5),
    'omniglot_5w1s_fc': (dict(datasource='omniglot', num_classes=5, update_batch_size=1, update_lr=0.4,
                              num_updates=1, conv=False), 32, 1, 1),
    'omniglot_5w5s_fc': (dict(datasource='omniglot', num_classes=5, update_batch_size=5, update_lr=0.4,
                              num_updates=1, conv=False), 32, 5, 5),
    'miniimagenet_5w1s': (dict(datasource='miniimagenet', num_classes=5, update_batch_size=1, update_lr=0.01,
                               num_updates=5, num_filters=32, max_pool=True), 4, 1, 15),
    'miniimagenet_5w5s': (dict(datasource='miniimagenet', num_classes=5, update_batch_size=5, update_lr=0.01,
                               num_updates=5, num_filters=32, max_pool=True), 4, 5, 15),
    # not a paper configuration: a small conv net for the smoke test
    'tiny': (dict(datasource='omniglot', num_classes=3, update_batch_size=1, update_lr=0.4,
                  num_updates=1, num_filters=8), 2, 1, 1),
}
PAPER_CONFIGS = [name for name in CONFIGS if name != 'tiny']
CONV_CONFIGS = [name for name, (flags, *_) in CONFIGS.items()
                if flags['datasource'] != 'sinusoid' and flags.get('conv', True)]
EVAL_CONFIGS = ['omniglot_5w1s', 'miniimagenet_5w1s']

# Inner steps recorded while training (main.recorded_steps) and at test time.
TRAIN_RECORDED = {'sinusoid': 5, 'omniglot': 10, 'miniimagenet': 1}
TEST_NUM_UPDATES = 10
NUM_TEST_TASKS = 600
ITERATIONS = 60000
REPORT_INTERVAL = 100

# The performance issue's figures for the reference (s/iteration, 2 cores): (low, high).
REFERENCE = {
    ('sinusoid', 'second'): (0.0125, 0.0125),
    ('omniglot_5w1s', 'second'): (0.28, 0.30),
    ('omniglot_5w1s', 'first'): (0.17, 0.29),
    ('omniglot_20w1s', 'second'): (2.8, 2.8),
    ('miniimagenet_5w1s', 'second'): (3.2, 4.0),
    ('miniimagenet_5w1s', 'first'): (2.65, 2.65),
}


## The worker: one configuration in its own process ---------------------------------------------

def dims(flags):
    if flags['datasource'] == 'sinusoid':
        return 1, 1
    if flags['datasource'] == 'omniglot':
        return 28 * 28, flags['num_classes']
    return 84 * 84 * 3, flags['num_classes']


def synthetic_batch(flags, tasks, k_support, k_query, rng):
    """(inputa, inputb, labela, labelb) of the right shapes, float32 numpy."""
    import numpy as np
    dim_input, dim_output = dims(flags)
    if flags['datasource'] == 'sinusoid':
        amp = rng.uniform(0.1, 5.0, (tasks, 1, 1))
        phase = rng.uniform(0, np.pi, (tasks, 1, 1))
        x = rng.uniform(-5.0, 5.0, (tasks, k_support + k_query, 1))
        y = amp * np.sin(x - phase)
        x, y = x.astype(np.float32), y.astype(np.float32)
        return x[:, :k_support], x[:, k_support:], y[:, :k_support], y[:, k_support:]
    n = dim_output

    def part(k):
        images = rng.random((tasks, n * k, dim_input), dtype=np.float32)
        classes = np.stack([np.concatenate([rng.permutation(n) for _ in range(k)]) for _ in range(tasks)])
        return images, np.eye(n, dtype=np.float32)[classes]

    (inputa, labela), (inputb, labelb) = part(k_support), part(k_query)
    return inputa, inputb, labela, labelb


def count_flops(graph):
    """(dense FLOPs, number of ops) of a traced graph: convolutions and matrix products only."""
    flops = 0
    for op in graph.get_operations():
        kind = op.type
        try:
            if kind == 'Conv2D':
                k = op.inputs[1].shape
                flops += 2 * op.outputs[0].shape.num_elements() * k[0] * k[1] * k[2]
            elif kind == 'Conv2DBackpropInput':
                k, dy = op.inputs[1].shape, op.inputs[2].shape
                flops += 2 * dy.num_elements() * k[0] * k[1] * k[2]
            elif kind == 'Conv2DBackpropFilter':
                k, dy = op.outputs[0].shape, op.inputs[2].shape
                flops += 2 * dy.num_elements() * k[0] * k[1] * k[2]
            elif kind == 'MatMul':
                a = op.inputs[0].shape
                inner = a[0] if op.get_attr('transpose_a') else a[1]
                flops += 2 * op.outputs[0].shape.num_elements() * inner
            elif kind in ('BatchMatMul', 'BatchMatMulV2', 'BatchMatMulV3'):
                a = op.inputs[0].shape
                inner = a[-2] if op.get_attr('adj_x') else a[-1]
                flops += 2 * op.outputs[0].shape.num_elements() * inner
        except (TypeError, ValueError):  # an unknown static shape: not counted
            pass
    return flops, len(graph.get_operations())


def graph_ops(graph):
    """Ops of a traced graph, counting those of the functions it calls (a loop body once)."""
    return len(graph.get_operations()) + sum(len(f.node_def) for f in graph.as_graph_def().library.function)


def matmul_ceiling(tf, size=2048, repeats=9, parts=1):
    """GFLOP/s of one large float32 tf.matmul in a tf.function (median of repeats); with parts,
    that many independent ones side by side (the ceiling of the test's groups, one thread per op)."""
    a = tf.random.uniform([size, size])
    b = tf.random.uniform([size, size])
    f = tf.function(lambda x, y: [tf.matmul(x + i if i else x, y) for i in range(parts)])
    [c.numpy() for c in f(a, b)]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        [c.numpy() for c in f(a, b)]
        times.append(time.perf_counter() - start)
    return parts * 2 * size ** 3 / statistics.median(times) / 1e9


def timed(call, count):
    """Seconds of each of `count` steps, each waited for as the training loop's first read would."""
    return timed_calls(lambda: float(call()['total_loss1']), count)


def timed_calls(call, count):
    times = []
    for _ in range(count):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def conv_layers(flags, images):
    """(input size, channels in, filters, stride) of the four conv layers of a pass over `images` per task."""
    size, channels = (84, 3) if flags['datasource'] == 'miniimagenet' else (28, 1)
    filters, max_pool = flags.get('num_filters', 64), flags.get('max_pool', False)
    layers = []
    for _ in range(4):
        stride = 1 if max_pool else 2
        layers.append((size, channels, filters, stride))
        size = -(-size // stride) // (2 if max_pool else 1)
        channels = filters
    return layers


def kernel_rates(tf, flags, tasks, images, repeats):
    """GFLOP/s of each conv layer's three kernels (forward, backprop-input, backprop-filter),
    as one grouped convolution over the tasks and as one plain convolution with the tasks
    folded into the batch (what the same FLOPs cost without the per-task kernels)."""
    rows = []
    for size, cin, filters, stride in conv_layers(flags, images):
        out = -(-size // stride)
        flops = 2 * tasks * images * out * out * filters * 9 * cin
        rates = {}
        for layout, (batch, groups) in (('grouped', (images, tasks)), ('folded', (tasks * images, 1))):
            x = tf.random.uniform([batch, size, size, groups * cin])
            k = tf.random.uniform([3, 3, cin, groups * filters])
            dy = tf.random.uniform([batch, out, out, groups * filters])
            strides = [1, stride, stride, 1]
            kernels = {
                'forward': (tf.function(lambda x, k: tf.nn.conv2d(x, k, stride, 'SAME')), (x, k)),
                'backprop-input': (tf.function(lambda k, dy: tf.raw_ops.Conv2DBackpropInput(
                    input_sizes=x.shape, filter=k, out_backprop=dy, strides=strides, padding='SAME')), (k, dy)),
                'backprop-filter': (tf.function(lambda x, dy: tf.raw_ops.Conv2DBackpropFilter(
                    input=x, filter_sizes=k.shape, out_backprop=dy, strides=strides, padding='SAME')), (x, dy))}
            for kind, (f, args) in kernels.items():
                f(*args).numpy()
                times = timed_calls(lambda: f(*args).numpy(), repeats)
                rates[layout + ' ' + kind] = flops / statistics.median(times) / 1e9
        rows.append({'input': '%dx%dx%d' % (size, size, cin), 'filters': filters, 'stride': stride,
                     'gflop': flops / 1e9, 'rates': rates})
    return rows


def allreduce_times(tf, strategy, variables, count):
    """Seconds of each of count all-reduces (sums) of tensors shaped as the variables, alone."""
    values = [tf.ones(v.shape) for v in variables]
    context = tf.distribute.get_replica_context

    @tf.function
    def allreduce():
        summed = strategy.run(lambda: context().all_reduce(tf.distribute.ReduceOp.SUM, values))
        return strategy.experimental_local_results(summed)[0][0]
    timed_calls(lambda: allreduce().numpy(), 3)
    return timed_calls(lambda: allreduce().numpy(), max(count, 10))


OP_EVENT = re.compile(r'^[^:\s]+:(\w+)$')  # the profiler's name for one op run: "node name:OpType"
OP_CATEGORIES = [  # (category, pattern of op types), first match wins
    ('conv backprop-filter', r'Conv2DBackpropFilter'),
    ('conv backprop-input', r'Conv2DBackpropInput'),
    ('conv forward', r'Conv2D'),
    ('matmul', r'MatMul'),
    ('fused batch norm', r'FusedBatchNorm'),
    ('layout: transpose, tile, reshape, concat, slice, pad', r'Transpose|Tile|Reshape|Concat|Split|Slice|Pad|'
     r'Pack|Unpack|Identity|BroadcastTo|Fill|ZerosLike|OnesLike|Squeeze|ExpandDims'),
    ('reductions', r'Sum$|Mean$|Max$|Min$|Prod$|ArgMax|BiasAddGrad'),
    ('variables and Adam', r'VariableOp|AssignSub|AssignAdd|Assign$|ResourceApply'),
]


def op_kind(op_type):
    """The category of an op type (TensorFlow's oneDNN ops drop their _Mkl/_MklNative prefix)."""
    op_type = re.sub(r'^_Mkl(Native)?', '', op_type)
    for category, pattern in OP_CATEGORIES:
        if re.search(pattern, op_type):
            return category
    return 'elementwise and other'


def op_profile(tf, step, count):
    """TensorFlow's profiler over `count` calls of step(): wall seconds per call, and per op type
    the seconds per call (summed over threads: ops that run side by side on 2 cores both count)
    and the runs per call."""
    import glob
    import tempfile
    from tensorflow.tsl.profiler.protobuf import xplane_pb2
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        start = time.perf_counter()
        for _ in range(count):
            step()
        wall = time.perf_counter() - start
        tf.profiler.experimental.stop()
        space = xplane_pb2.XSpace()
        with open(glob.glob(os.path.join(logdir, '**', '*.xplane.pb'), recursive=True)[0], 'rb') as f:
            space.ParseFromString(f.read())
    seconds, runs = {}, {}
    for plane in space.planes:
        for line in plane.lines:
            for event in line.events:
                match = OP_EVENT.match(plane.event_metadata[event.metadata_id].name)
                if match:
                    op_type = match.group(1)
                    seconds[op_type] = seconds.get(op_type, 0.0) + event.duration_ps * 1e-12 / count
                    runs[op_type] = runs.get(op_type, 0) + 1.0 / count
    return {'wall': wall / count, 'seconds': seconds, 'runs': runs}


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def worker(job):
    """Run one job (a dict) and return its results (a dict); TensorFlow is imported here."""
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
    if 'cpu' in job:  # before TensorFlow sizes its thread pools
        os.sched_setaffinity(0, {job['cpu']})
    sys.path.insert(0, REPO)
    import numpy as np
    from main import choose_cpu_kernels, test_parts, use_cores_for_test
    evaluation = job['mode'] == 'eval'
    choose_cpu_kernels(CONFIGS[job['config']][0]['datasource'], train=not evaluation)  # as main.py
    import utils  # noqa: F401  (before TensorFlow, as main.py: it enables the oneDNN kernels)
    import tensorflow as tf
    if evaluation:
        use_cores_for_test(tf)  # as main.py's test
    from maml import MAML, ModelConfig
    result = {}
    flags, tasks, k_support, k_query = CONFIGS[job['config']]
    flags = dict(flags)
    tasks = job.get('tasks', tasks)
    parts = 1
    if evaluation:  # main.py's test: 2K per class, TEST_TASKS_PER_BATCH tasks per core at once
        parts = test_parts()
        tasks, k_query, recorded = job['tasks_per_batch'] * parts, flags['update_batch_size'], TEST_NUM_UPDATES
    else:
        recorded = TRAIN_RECORDED[flags['datasource']]
        flags['stop_grad'] = job['mode'] == 'first'
    config = ModelConfig(**flags)
    dim_input, dim_output = dims(flags)
    strategy = tf.distribute.MultiWorkerMirroredStrategy() if job.get('distribute') else None
    with strategy.scope() if strategy else contextlib.nullcontext():
        model = MAML(dim_input, dim_output, test_num_updates=recorded, config=config, dtype=tf.float32, seed=0)
    rng = np.random.default_rng(0)
    batches = [[tf.constant(x) for x in synthetic_batch(flags, tasks, k_support, k_query, rng)]
               for _ in range(4)]
    cycle = iter(range(10 ** 9))

    def batch():
        return batches[next(cycle) % len(batches)]

    if job['mode'] == 'kernels':
        result['layers'] = kernel_rates(tf, flags, tasks, k_query * dim_output, job['steps'])
        # the FLOPs of an ordinary second-order step, traced but not run
        result['flops'], result['ops'] = count_flops(model.traced_graph('metatrain', batches[0]))
        result['ceiling_gflops'] = matmul_ceiling(tf)
        return result
    if strategy is not None:
        timed(lambda: model.metatrain_step(batch()), job['warmup'])
        result['times'] = timed(lambda: model.metatrain_step(batch()), job['steps'])
        result['allreduce_times'] = allreduce_times(tf, strategy, model.variables_list, job['steps'])
        result['allreduce_bytes'] = sum(v.shape.num_elements() * 4 for v in model.variables_list)
        return result
    if evaluation:
        def step():
            return model.evaluate_tasks(batch(), TEST_NUM_UPDATES, parts=parts)['losses'].numpy()
    else:
        def step():
            return float(model.metatrain_step(batch())['total_loss1'])
    if job.get('profile'):
        timed_calls(step, job['warmup'])
        result['profile'] = op_profile(tf, step, job['steps'])
        result['tasks'], result['parts'] = tasks, parts
        return result
    if evaluation:
        result['first'] = timed_calls(step, 1)[0]  # main.py's first batch: tracing, optimising, running
        timed_calls(step, job['warmup'] - 1)
        result['times'] = timed_calls(step, job['eval_batches'])
        result['tasks'], result['parts'] = tasks, parts
        result['ops'] = graph_ops(model.traced_graph('evaluate_tasks', batches[0], TEST_NUM_UPDATES))
        # the FLOPs of the steps written out (the graph run has them in a loop and in functions)
        unrolled = tf.function(lambda *b: model.task_results(*b, TEST_NUM_UPDATES, loop=False), autograph=False)
        result['flops'], _ = count_flops(unrolled.get_concrete_function(*batches[0]).graph)
    else:
        timed(lambda: model.metatrain_step(batch()), job['warmup'])
        result['times'] = timed(lambda: model.metatrain_step(batch()), job['steps'])
        if job.get('share_only'):  # --replicas: the step time is all that is used
            return result
        result['flops'], result['ops'] = count_flops(model.traced_graph('metatrain', batches[0]))
        if model.num_steps > config.num_updates:  # report iterations record all steps
            timed(lambda: model.metatrain_step(batch(), model.num_steps), 1)
            result['report_times'] = timed(lambda: model.metatrain_step(batch(), model.num_steps),
                                           max(3, job['steps'] // 5))
        else:
            result['report_times'] = result['times']
        if not np.isfinite(float(model.metatrain_step(batch())['total_loss1'])):
            result['warning'] = 'non-finite loss'
    result['ceiling_gflops'] = matmul_ceiling(tf, parts=parts)  # the test: one group per core
    result['rss_peak_mb'] = peak_rss_mb()
    if model.forward == model.forward_conv and not evaluation:
        result['grouped_conv'] = utils.grouped_conv_gradients_work()
    return result


## The driver -----------------------------------------------------------------------------------

def test_tasks_per_batch(flags):
    """How many test tasks main.py evaluates at once for this data source (its default)."""
    sys.path.insert(0, REPO)
    from main import TEST_TASKS_PER_BATCH
    return TEST_TASKS_PER_BATCH[flags['datasource']]


def job_env(onednn):
    env = dict(os.environ)
    env['TF_CPP_MIN_LOG_LEVEL'] = '3'
    if onednn != 'default':
        env['TF_ENABLE_ONEDNN_OPTS'] = '1' if onednn == 'on' else '0'
    return env


def worker_command(job):
    return [sys.executable, os.path.abspath(__file__), '--worker', json.dumps(job)]


def job_result(stdout, stderr, returncode):
    for line in reversed(stdout.splitlines()):
        if line.startswith('RESULT '):
            return json.loads(line[len('RESULT '):])
    lines = [l for l in stderr.strip().splitlines() if l.strip()]
    return {'error': (lines[-1] if lines else 'exit status %d' % returncode)[:300]}


def run_job(job, onednn, timeout):
    try:
        proc = subprocess.run(worker_command(job), capture_output=True, text=True, timeout=timeout,
                              env=job_env(onednn), cwd=REPO)
    except subprocess.TimeoutExpired:
        return {'error': 'timed out after %d s' % timeout}
    return job_result(proc.stdout, proc.stderr, proc.returncode)


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(('127.0.0.1', 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def run_distributed(job, replicas, cores, onednn, timeout):
    """The job on `replicas` worker processes of a localhost cluster, worker i on cores[i]; the chief's results."""
    import tempfile
    cluster = {'worker': ['127.0.0.1:%d' % p for p in free_ports(replicas)]}
    procs = []
    for i in range(replicas):
        env = dict(job_env(onednn), TF_CONFIG=json.dumps({'cluster': cluster, 'task': {'type': 'worker', 'index': i}}))
        out, err = tempfile.TemporaryFile('w+'), tempfile.TemporaryFile('w+')
        command = worker_command(dict(job, distribute=True, cpu=cores[i % len(cores)]))
        procs.append((subprocess.Popen(command, stdout=out, stderr=err, text=True, env=env, cwd=REPO), out, err))
    deadline = time.time() + timeout
    results = []
    for proc, out, err in procs:
        try:
            proc.wait(timeout=max(1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            for p, _, _ in procs:
                p.kill()
            return {'error': 'timed out after %d s' % timeout}
        out.seek(0)
        err.seek(0)
        results.append(job_result(out.read(), err.read(), proc.returncode))
    failed = [r for r in results if 'error' in r]
    return failed[0] if failed else results[0]


WORKER_COUNTS = (1, 2, 4, 8, 16)
REPLICA_COLUMNS = [('config', 18), ('order', 6), ('tasks', 5), ('1 process', 9), ('%d workers', 9), ('speedup', 7),
                   ('all-reduce ms', 13), ('MB', 5), ('overhead', 8)] + [
    ('k=%d share, projected (60k h)' % k, 28) for k in WORKER_COUNTS]


def replica_columns(replicas):
    return [(name.replace('%d', str(replicas)), w) for name, w in REPLICA_COLUMNS]


def replica_row(name, order, replicas, shares, dist):
    """Measured: one process (all tasks, and each share), N workers, the all-reduce; projected: k workers."""
    columns = replica_columns(replicas)
    tasks = CONFIGS[name][1]
    errors = [r['error'] for r in list(shares.values()) + [dist] if 'error' in r]
    if errors:
        return row(columns[:2], [name, order]) + '  ERROR: ' + errors[0]
    share = {k: statistics.median(r['times']) for k, r in shares.items()}
    step = statistics.median(dist['times'])
    allreduce = statistics.median(dist['allreduce_times'])
    overhead = step - share[replicas] - allreduce
    cells = []
    for k in WORKER_COUNTS:
        if k not in share:
            cells.append('- (%d tasks)' % tasks if tasks < k else '- (uneven)')
            continue
        projected = share[1] if k == 1 else share[k] + overhead + (k - 1) * allreduce / max(replicas - 1, 1)
        cells.append('%.4f, %.4f (%.1f)' % (share[k], projected, projected * ITERATIONS / 3600.0))
    return row(columns, [name, order, tasks, fmt(share[1], '.4f'), fmt(step, '.4f'), '%.2fx' % (share[1] / step),
                         fmt(1000 * allreduce, '.2f'), fmt(dist['allreduce_bytes'] / 1e6, '.2f'),
                         fmt(overhead, '.4f')] + cells)


def replica_benchmark(args, configs, orders):
    """--replicas: the step under MultiWorkerMirroredStrategy, the all-reduce alone, the projection."""
    cores = sorted(os.sched_getaffinity(0))
    print('\ntf.distribute.MultiWorkerMirroredStrategy, %d workers on this host (localhost), worker i pinned to '
          'core %s; "1 process": all tasks, no strategy, pinned to core %d. s/iter, median of %d steps. '
          'k=...: share(k), measured: one process of meta_batch_size / k tasks on one core; projected: '
          'share(k) + overhead + (k - 1) x all-reduce / %d, overhead = %d-worker step - share(%d) - all-reduce; '
          '"60k h": 60,000 such iterations.'
          % (args.replicas, cores, cores[0], args.steps, max(args.replicas - 1, 1), args.replicas, args.replicas))
    print(header(replica_columns(args.replicas)), flush=True)
    for name in configs:
        tasks = CONFIGS[name][1]
        for order in orders:
            shares = {}
            for k in WORKER_COUNTS:
                if tasks % k == 0:
                    shares[k] = run_job({'config': name, 'mode': order, 'steps': args.steps, 'warmup': args.warmup,
                                         'tasks': tasks // k, 'cpu': cores[0], 'share_only': True},
                                        args.onednn, args.timeout)
            if tasks % args.replicas:
                print(row(REPLICA_COLUMNS[:2], [name, order]) + '  (%d tasks do not split over %d workers)'
                      % (tasks, args.replicas), flush=True)
                continue
            dist = run_distributed({'config': name, 'mode': order, 'steps': args.steps, 'warmup': args.warmup},
                                   args.replicas, cores, args.onednn, args.timeout)
            print(replica_row(name, order, args.replicas, shares, dist), flush=True)


def fmt(value, spec):
    return '-' if value is None else format(value, spec)


def speedup(ref, ours):
    if ref is None or ours is None:
        return '-'
    low, high = ref[0] / ours, ref[1] / ours
    return '%.1fx' % low if abs(high - low) < 0.05 else '%.1f-%.1fx' % (low, high)


def ref_text(ref):
    if ref is None:
        return '-'
    return '%g' % ref[0] if ref[0] == ref[1] else '%g-%g' % ref


TRAIN_COLUMNS = [('config', 18), ('order', 6), ('s/iter', 8), ('report s/iter', 13), ('60k iters h', 11),
                 ('peak MB', 8), ('GFLOP/iter', 10), ('GFLOP/s', 8), ('% matmul', 8), ('graph ops', 9),
                 ('ref s/iter', 10), ('speedup', 10)]
EVAL_COLUMNS = [('config', 18), ('tasks/batch', 11), ('groups', 6), ('s/task', 8), ('first batch s', 13),
                ('600 tasks s', 11), ('peak MB', 8),
                ('GFLOP/task', 10), ('GFLOP/s', 8), ('% matmul', 8), ('graph ops', 9)]


def row(columns, values):
    return '  '.join(str(v).ljust(w) if i < 2 else str(v).rjust(w)
                     for i, ((_, w), v) in enumerate(zip(columns, values))).rstrip()


def header(columns):
    return row(columns, [name for name, _ in columns]) + '\n' + row(columns, ['-' * w for _, w in columns])


def train_row(name, order, r):
    if 'error' in r:
        return row(TRAIN_COLUMNS[:2], [name, order]) + '  ERROR: ' + r['error']
    t = statistics.median(r['times'])
    t_report = statistics.median(r['report_times'])
    reports = ITERATIONS // REPORT_INTERVAL
    hours = ((ITERATIONS - reports) * t + reports * t_report) / 3600.0
    rate = r['flops'] / t / 1e9
    ref = REFERENCE.get((name, order))
    line = row(TRAIN_COLUMNS, [
        name, order, fmt(t, '.4f'), fmt(t_report, '.4f'), fmt(hours, '.2f'), fmt(r['rss_peak_mb'], '.0f'),
        fmt(r['flops'] / 1e9, '.2f'), fmt(rate, '.1f'), fmt(100 * rate / r['ceiling_gflops'], '.0f'),
        r['ops'], ref_text(ref), speedup(ref, t)])
    return line + notes(r)


def eval_row(name, r):
    if 'error' in r:
        return row(EVAL_COLUMNS[:1], [name]) + '  ERROR: ' + r['error']
    per_batch = r['tasks']
    t = statistics.median(r['times'])  # one batch of per_batch tasks
    rate = r['flops'] / t / 1e9
    batches = -(-NUM_TEST_TASKS // per_batch)
    return row(EVAL_COLUMNS, [name, per_batch, r['parts'], fmt(t / per_batch, '.4f'), fmt(r['first'], '.2f'),
                              fmt(r['first'] + (batches - 1) * t, '.1f'),
                              fmt(r['rss_peak_mb'], '.0f'), fmt(r['flops'] / 1e9 / per_batch, '.3f'), fmt(rate, '.1f'),
                              fmt(100 * rate / r['ceiling_gflops'], '.0f'), r['ops']]) + notes(r)


KERNEL_COLUMNS = [('config', 18), ('layer', 5), ('input', 9), ('stride', 6), ('GFLOP', 6)] + [
    ('%s %s' % (layout, kind), len('%s %s' % (layout, kind)))
    for layout in ('grouped', 'folded') for kind in ('fwd', 'bwd-in', 'bwd-filter')]
KERNEL_KINDS = ['forward', 'backprop-input', 'backprop-filter']


def kernel_rows(name, r):
    if 'error' in r:
        return [row(KERNEL_COLUMNS[:1], [name]) + '  ERROR: ' + r['error']]
    lines = []
    for i, layer in enumerate(r['layers']):
        rates = [layer['rates']['%s %s' % (layout, kind)] for layout in ('grouped', 'folded') for kind in KERNEL_KINDS]
        lines.append(row(KERNEL_COLUMNS, [name, i + 1, layer['input'], layer['stride'], fmt(layer['gflop'], '.3g')]
                         + [fmt(v, '.3g') for v in rates]))
    best = max(max(layer['rates'].values()) for layer in r['layers'])
    ref = REFERENCE.get((name, 'second'))
    target = ' 3x faster than the reference is %.3g s.' % (ref[0] / 3) if ref else ''
    lines.append('  %s: a second-order step is %.4g GFLOP; at the fastest rate above (%.4g GFLOP/s, %.0f %% of '
                 'the matmul ceiling) its convolutions and products alone take at least %.3g s.%s'
                 % (name, r['flops'] / 1e9, best, 100 * best / r['ceiling_gflops'], r['flops'] / 1e9 / best, target))
    return lines


def profile_rows(name, order, r, top=12):
    """The op profile of one run: seconds per step by category, then the costliest op types."""
    if 'error' in r:
        return ['%s %s  ERROR: %s' % (name, order, r['error'])]
    p = r['profile']
    total = sum(p['seconds'].values())
    what = ('%d test tasks at once in %d group(s)' % (r['tasks'], r['parts']) if order == 'eval'
            else '%s order' % order)
    lines = ['Op profile: %s, %s; wall %.4f s/step under the profiler; op time %.4f s/step summed over threads'
             % (name, what, p['wall'], total),
             '  %-52s %8s %7s %9s' % ('kind of op', 's/step', '% ops', 'runs/step')]
    kinds = {}
    for op_type, seconds in p['seconds'].items():
        kind = kinds.setdefault(op_kind(op_type), [0.0, 0.0])
        kind[0] += seconds
        kind[1] += p['runs'][op_type]
    for kind, (seconds, runs) in sorted(kinds.items(), key=lambda kv: -kv[1][0]):
        lines.append('  %-52s %8.4f %7.1f %9.0f' % (kind, seconds, 100 * seconds / total, runs))
    lines.append('  %-52s %8s %7s %9s' % ('op type (costliest %d)' % top, 's/step', '% ops', 'runs/step'))
    for op_type, seconds in sorted(p['seconds'].items(), key=lambda kv: -kv[1])[:top]:
        lines.append('  %-52s %8.4f %7.1f %9.0f' % (op_type, seconds, 100 * seconds / total, p['runs'][op_type]))
    return lines


def notes(r):
    """What makes a row incomparable: a non-finite loss, or the slow convolution fallback."""
    notes = [r['warning']] if 'warning' in r else []
    if r.get('grouped_conv') is False:
        notes.append('one convolution per task: grouped convolutions unavailable')
    return ''.join('  (%s)' % n for n in notes)


def machine_description():
    model = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    model = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else None
    return model, os.cpu_count(), cores


def tf_version():
    try:
        from importlib.metadata import version
        return version('tensorflow')
    except Exception:  # pragma: no cover
        return '?'


def parse_list(text, allowed, default):
    if text in ('all', ''):
        return list(default)
    names = [n.strip() for n in text.split(',') if n.strip()]
    unknown = [n for n in names if n not in allowed]
    if unknown:
        from user_errors import UserError  # tools/, on sys.path where main() runs (not beside the reference)
        raise UserError('unknown: %s (choose from %s)' % (', '.join(unknown), ', '.join(allowed)))
    return names


def main(argv=None):
    import user_errors  # tools/, on sys.path where main() runs (not beside the reference)
    parser = user_errors.ArgumentParser(description=__doc__.split('\n')[0], script=__file__,
                                        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--configs', default='all',
                        help='comma-separated training configurations, "all" (the paper\'s) or "none": %s'
                        % ', '.join(CONFIGS))
    parser.add_argument('--orders', default='second,first', help='second, first or both (comma-separated)')
    parser.add_argument('--steps', type=int, default=20, help='timed meta-training steps per configuration')
    parser.add_argument('--warmup', type=int, default=3, help='untimed steps first (the first one traces)')
    parser.add_argument('--eval_configs', default=','.join(EVAL_CONFIGS),
                        help='configurations whose 600-task evaluation is timed ("none" to skip)')
    parser.add_argument('--eval_tasks', type=int, default=50,
                        help='timed evaluation tasks, in whole batches (median batch x 600 / batch)')
    parser.add_argument('--eval_tasks_per_batch', type=int, default=0,
                        help='test tasks evaluated at once (0: main.py\'s choice, TEST_TASKS_PER_BATCH)')
    parser.add_argument('--kernels', default='none',
                        help='configurations whose convolution kernels are timed layer by layer, with the '
                        'bound they put on a step ("none" to skip, the default)')
    parser.add_argument('--onednn', choices=('default', 'on', 'off'), default='default',
                        help='TF_ENABLE_ONEDNN_OPTS for the subprocesses (default: TensorFlow\'s choice)')
    parser.add_argument('--timeout', type=int, default=3600, help='seconds allowed per configuration')
    parser.add_argument('--profile', default='none',
                        help='configurations to profile op by op: CONFIG (training, each of --orders) or '
                        'CONFIG:eval (test batches), comma-separated; only that is run')
    parser.add_argument('--replicas', type=int, default=0,
                        help='time the step under tf.distribute with this many worker processes on this host, '
                        'the all-reduce alone, and project 1-16 workers (only that; see above)')
    parser.add_argument('--worker', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        result = worker(json.loads(args.worker))
        print('RESULT ' + json.dumps(result), flush=True)
        return 0

    configs = [] if args.configs == 'none' else parse_list(args.configs, CONFIGS, PAPER_CONFIGS)
    orders = parse_list(args.orders, ('second', 'first'), ('second', 'first'))
    eval_configs = [] if args.eval_configs == 'none' else parse_list(args.eval_configs, CONFIGS, EVAL_CONFIGS)
    kernel_configs = [] if args.kernels == 'none' else parse_list(
        args.kernels, CONV_CONFIGS, [n for n in PAPER_CONFIGS if n in CONV_CONFIGS])
    cpu, count, cores = machine_description()
    load = os.getloadavg() if hasattr(os, 'getloadavg') else None
    print('MAML benchmark: %s' % time.strftime('%Y-%m-%d %H:%M:%S'))
    print('machine: %s, %d logical CPUs; this run may use CPU(s) %s; load average at start %s'
          % (cpu, count, cores, '%.2f %.2f %.2f' % load if load else '?'))
    print('python %s, tensorflow %s, TF_ENABLE_ONEDNN_OPTS=%s; float32; subprocess per configuration'
          % (platform.python_version(), tf_version(),
             {'default': os.environ.get('TF_ENABLE_ONEDNN_OPTS',
                                        'as main.py sets it (0 for sinusoid, else 1)'),
              'on': '1', 'off': '0'}[args.onednn]))
    print('warm-up %d steps, then the median of %d steps; evaluation: median of %d tasks x 600'
          % (args.warmup, args.steps, args.eval_tasks), flush=True)

    if args.profile != 'none':
        for entry in args.profile.split(','):
            name, _, mode = entry.strip().partition(':')
            parse_list(name, CONFIGS, [])
            for order in (['eval'] if mode == 'eval' else orders):
                job = {'config': name, 'mode': order, 'steps': args.steps, 'warmup': args.warmup, 'profile': True,
                       'tasks_per_batch': args.eval_tasks_per_batch or test_tasks_per_batch(CONFIGS[name][0])}
                print('\n' + '\n'.join(profile_rows(name, order, run_job(job, args.onednn, args.timeout))),
                      flush=True)
        return 0
    if args.replicas:
        replica_benchmark(args, [n for n in configs if n != 'sinusoid'] if args.configs == 'all' else configs, orders)
        return 0
    ceilings = []
    if configs:
        print('\nMeta-training iteration (synthetic in-memory batches):')
        print(header(TRAIN_COLUMNS), flush=True)
        for name in configs:
            for order in orders:
                job = {'config': name, 'mode': order, 'steps': args.steps, 'warmup': args.warmup}
                r = run_job(job, args.onednn, args.timeout)
                ceilings += [r['ceiling_gflops']] if 'ceiling_gflops' in r else []
                print(train_row(name, order, r), flush=True)
    if eval_configs:
        print('\nEvaluation, as main.py --train=False: %d tasks, %d inner steps, in batches of main.py\'s '
              'TEST_TASKS_PER_BATCH for each core, a group per core (the first batch timed, the others '
              'extrapolated from the median batch):' % (NUM_TEST_TASKS, TEST_NUM_UPDATES))
        print(header(EVAL_COLUMNS), flush=True)
        for name in eval_configs:
            per_batch = args.eval_tasks_per_batch or test_tasks_per_batch(CONFIGS[name][0])
            job = {'config': name, 'mode': 'eval', 'eval_batches': -(-args.eval_tasks // per_batch),
                   'tasks_per_batch': per_batch, 'warmup': args.warmup}
            r = run_job(job, args.onednn, args.timeout)
            ceilings += [r['ceiling_gflops']] if 'ceiling_gflops' in r else []
            print(eval_row(name, r), flush=True)
    if kernel_configs:
        print('\nConvolution kernels of the query pass, GFLOP/s (median of %d calls). grouped: one convolution '
              'over the tasks, as training runs it; folded: the same FLOPs as one plain convolution with the '
              'tasks in the batch:' % args.steps)
        print(header(KERNEL_COLUMNS), flush=True)
        for name in kernel_configs:
            r = run_job({'config': name, 'mode': 'kernels', 'steps': args.steps}, args.onednn, args.timeout)
            ceilings += [r['ceiling_gflops']] if 'ceiling_gflops' in r else []
            print('\n'.join(kernel_rows(name, r)), flush=True)
    if ceilings:
        print('\nmatmul ceiling (float32 2048x2048 tf.matmul, in each subprocess): median %.1f GFLOP/s, '
              'range %.1f-%.1f' % (statistics.median(ceilings), min(ceilings), max(ceilings)))
    print('60k iters h: 59,400 steps + 600 report steps (all recorded inner steps); ref s/iter: the '
          'reference implementation on 2 cores (performance issue); speedup = ref / ours.')
    return 0


if __name__ == '__main__':
    import user_errors
    sys.exit(user_errors.run(main))
