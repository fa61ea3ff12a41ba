"""Are this project's trained 5-shot sinusoid models as good as the reference's?

Trains main.py runs with the paper's sinusoid flags, one per seed, then tests
each of them and the reference's own checkpoints on the same 600 test tasks
(the reference's recipe) and compares the spread of our runs with the
reference's runs.

    python tools/sinusoid_study.py --train 0-9          # train the missing seeds, one after another, then compare
    python tools/sinusoid_study.py --seeds 0-9          # compare only (no training)
    python tools/sinusoid_study.py --seeds 0-9 --curves # the training curves beside the reference's (no test)
    python tools/sinusoid_study.py --seeds 0-29 --ours-from OLD.out  # our runs' figures from an earlier output
    python tools/sinusoid_study.py --train-k 10 --train 0-29 --no-test  # the paper's protocol: train at K=10
    python tools/sinusoid_study.py --train-k 10 --seeds 0-29  # test at K=5 and K=10 against ../shared's sinusoid10shot

With --train-k 10 (the paper's own protocol, section 5.1: one model trained at K=10, tested at K=5 for
Table 2 and at K=10) the runs live in logs/sinusoid-study-k10/, each run's per-task test MSEs are saved
in docs/sinusoid-study/k10/seedN.npz (a comparison needs no checkpoint once they are there), and the
comparison follows the rule written in docs/sinusoid-study.md before any run was scored (k10_study).

Why this shape:
- The test tasks are rebuilt from the reference's recipe instead of taken
  from our DataGenerator: the comparison must put every model on the very
  same 600 tasks, and those are the tasks the reference's own test outputs
  (its CSV and pkl) were computed on, so the evaluation can be checked
  against them first (check_reference_run1, and every run's pkl medians).
- Models are built by main.build and loaded by main.Checkpoints (which reads
  the reference's TF1 checkpoints through tf1_checkpoint), so the weights,
  the float32 arithmetic and the CPU kernels are exactly what
  `main.py --train=False` uses.
- A single run's test figures vary a lot from training run to training run
  (the question this answers), so runs are compared by a statistic per run
  (the median MSE over tasks at steps 1/5/10: robust to the few tasks where
  alpha 0.01 diverges) and the spread over runs.
- scipy is not a dependency of the project: the Student t quantiles and
  p-values are computed by a short numeric routine (t_cdf, t_quantile),
  tested against tabulated values in tests/test_sinusoid_study.py.
"""
import argparse
import glob
import itertools
import math
import os
import random
import re
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np

# Run as `python tools/sinusoid_study.py` from a clone, installed or not: the program's modules
# (reproduce, main, data_generator) are in the repository root, one folder up.
REPO = str(Path(__file__).resolve().parents[1])
sys.path.insert(0, REPO)
# The per-run figures (median, mean of the tasks never above 10, ...) are reproduce.py's:
# its --check prints them too, and a user command must not import a tool.
from reproduce import REPORT_STEPS, summarize  # noqa: E402

# The paper's 5-shot sinusoid command (alpha 0.01), as the reference's runs were trained.
PAPER_FLAGS = ['--datasource=sinusoid', '--norm=None', '--metatrain_iterations=70000',
               '--update_batch_size=5', '--update_lr=0.01']
ITERATIONS = 70000
DEFAULT_LOGDIR = 'logs/sinusoid-study/seed{seed}'
# The paper's own protocol (section 5.1): trained with K = 10, the same model then tested at K = 5 and 10.
# Its runs get their own folders, so a K=10 run can never be taken for a K=5 one.
K10_LOGDIR = 'logs/sinusoid-study-k10/seed{seed}'
K10_REFERENCE_DIR_NAME = 'sinusoid10shot'


def paper_flags(train_k=5):
    """PAPER_FLAGS with the training K (main.py's --update_batch_size while training)."""
    return [f if not f.startswith('--update_batch_size=') else '--update_batch_size=%d' % train_k
            for f in PAPER_FLAGS]

# Beside the project (../shared), found from this file's folder so that it is found in any checkout.
REFERENCE_DIR = os.path.normpath(os.path.join(REPO, '..', 'shared', 'reference', 'sinusoid5shot'))
REFERENCE_PKL = 'test_ubs5_stepsize0.01.pkl'
# The reference's third run (seeded with 2) is not in ../shared: only its medians are known (from the issue).
THIRD_REFERENCE_MEDIANS = {'run3 (seed 2, given)': (0.337, 0.168, 0.157)}
# The reference's README figures for run1, which our evaluation must reproduce.
RUN1_EXPECTED = {'median': (0.300, 0.157, 0.142), 'mean1': 0.635, 'divergent': 32,
                 'mean_others': (0.589, 0.391, 0.327)}

NUM_TASKS = 600
K = 5
TEST_STEPS = 10


## Seeds and run folders -----------------------------------------------------------------------

def parse_seeds(text):
    """'0-9', '0,3,5-7' -> sorted list of ints."""
    seeds = set()
    for part in filter(None, (p.strip() for p in text.split(','))):
        if '-' in part:
            lo, hi = (int(v) for v in part.split('-'))
            seeds.update(range(lo, hi + 1))
        else:
            seeds.add(int(part))
    return sorted(seeds)


def experiment_dir(logdir, train_k=5):
    """logdir/<exp_string>: where main.py puts the checkpoints for the paper's flags (trained at train_k)."""
    import main
    # the values main.experiment() derives from paper_flags (train_update_* default to the update ones)
    f = types.SimpleNamespace(num_classes=5, meta_batch_size=25, train_update_batch_size=train_k, num_updates=1,
                              train_update_lr=0.01, num_filters=64, max_pool=False, stop_grad=False,
                              baseline=None, norm='None')
    return os.path.join(logdir, main.experiment_name(f))


def last_iteration(exp_dir):
    """The iteration of our latest checkpoint (model-<ITER>.index) in exp_dir, or -1.

    Read from the file names, so deciding what to train needs no TensorFlow import.
    """
    found = [int(m.group(1)) for m in (re.match(r'^model-(\d+)\.index$', os.path.basename(p))
                                       for p in glob.glob(os.path.join(exp_dir, 'model-*.index'))) if m]
    return max(found, default=-1)


## Training ---------------------------------------------------------------------------------------------

def train_command(seed, logdir, stream='ours', train_k=5):
    """main.py with the paper's flags (trained at train_k); stream='global' runs it through this
    script's --main-with-global-stream (see global_stream_generate)."""
    program = [os.path.join(REPO, 'main.py')] if stream == 'ours' else [os.path.abspath(__file__), GLOBAL_STREAM_MODE]
    return [sys.executable, '-u'] + program + paper_flags(train_k) + ['--seed=%d' % seed, '--logdir=%s' % logdir]


## The reference's task stream, for the experiment that tests whether the stream matters ------------------

GLOBAL_STREAM_MODE = '--main-with-global-stream'


def global_stream_generate(self, train=True, index=0):
    """A sinusoid batch drawn as the reference draws its training tasks.

    One global numpy stream for the whole run (seeded once at start), and in
    the reference's order: the batch's amplitudes, then its phases, then
    each function's 2K inputs in turn. Our DataGenerator instead gives every
    batch its own stream seeded by (seed, split, index) and draws all inputs
    at once; the distributions are the same, the numbers are not. `index`
    is ignored: batch i is whatever the stream gives i-th, so a resumed run
    does not continue the stream it was on (as the reference's does not).
    """
    b, s = self.batch_size, self.num_samples_per_class
    amp = np.random.uniform(self.amp_range[0], self.amp_range[1], [b])
    phase = np.random.uniform(self.phase_range[0], self.phase_range[1], [b])
    inputs = np.zeros([b, s, 1])
    outputs = np.zeros([b, s, 1])
    for func in range(b):
        inputs[func] = np.random.uniform(self.input_range[0], self.input_range[1], [s, 1])
        outputs[func] = amp[func] * np.sin(inputs[func] - phase[func])
    return inputs.astype(np.float32), outputs.astype(np.float32), amp, phase


def run_main_with_global_stream(main_argv):
    """main.py, unchanged, with DataGenerator.generate replaced by global_stream_generate.

    A workaround: main.py and data_generator.py have no option for it (and are
    not this study's to change). numpy's global stream is seeded with --seed.
    """
    import data_generator
    data_generator.DataGenerator.generate = global_stream_generate
    seed = [int(a.split('=', 1)[1]) for a in main_argv if a.startswith('--seed=')]
    np.random.seed(seed[-1] if seed else 0)
    random.seed(seed[-1] if seed else 0)
    import main
    sys.argv = [os.path.join(REPO, 'main.py')] + main_argv
    main.run()


def train(seed, logdir, stream='ours', train_k=5):
    """Train one seed to 70,000 iterations unless done; main.py resumes from its latest checkpoint.

    stdout (the reference's 'Iteration N: pre, post' lines) is appended to
    logdir/train_log.txt, beside the reference's own train_log.txt format, so
    the training curves can be compared line by line. Returns the wall time
    in seconds (0 when skipped).
    """
    exp_dir = experiment_dir(logdir, train_k)
    done = last_iteration(exp_dir)
    if done >= ITERATIONS - 1:
        print('seed %d: already trained to %d iterations in %s; skipped' % (seed, done + 1, exp_dir), flush=True)
        return 0.0
    os.makedirs(logdir, exist_ok=True)
    command = train_command(seed, logdir, stream, train_k)
    print('seed %d: %s%s' % (seed, ' '.join(command[1:]),
                             ' (resuming after iteration %d)' % done if done >= 0 else ''), flush=True)
    start = time.time()
    with open(os.path.join(logdir, 'train_log.txt'), 'a') as out, \
            open(os.path.join(logdir, 'train_stderr.txt'), 'a') as err:
        code = subprocess.call(command, stdout=out, stderr=err, cwd=REPO)
    seconds = time.time() - start
    if code != 0:
        raise SystemExit('seed %d: main.py exited with %d; see %s' % (seed, code, os.path.join(logdir, 'train_stderr.txt')))
    print('seed %d: trained in %.0f s' % (seed, seconds), flush=True)
    return seconds


def train_post_losses(train_log):
    """{iteration: post-update loss} from the 'Iteration N: pre, post' lines of a training log."""
    losses = {}
    if not os.path.exists(train_log):
        return losses
    with open(train_log) as f:
        for line in f:
            m = re.match(r'^Iteration (\d+): (\S+), (\S+)$', line.strip())
            if m:
                losses[int(m.group(1))] = float(m.group(3))
    return losses


CURVE_SEGMENTS = [(1000, 1000), (2000, 2000), (3000, 5000), (6000, 10000), (11000, 20000), (21000, 30000),
                  (31000, 40000), (41000, 50000), (51000, 60000), (61000, 69000)]


def curve_lines(groups, references):
    """The training curves side by side: per stretch of iterations, the mean post-update loss of
    the 'Iteration N' lines, for each group of our runs (mean [min, max] over runs) and for each
    reference run. groups: {name: [train_log, ...]}; references: {name: train_log}."""
    curves = {name: [train_post_losses(p) for p in logs] for name, logs in groups.items()}
    ref_curves = {name: train_post_losses(p) for name, p in references.items()}

    def stretch(losses, lo, hi):
        values = [v for itr, v in losses.items() if lo <= itr <= hi]
        return float(np.mean(values)) if values else float('nan')

    header = '%-13s' % 'iterations' + ''.join('  %-27s' % ('%s (%d runs)' % (n, len(c))) for n, c in curves.items())
    header += ''.join('  %-7s' % n for n in ref_curves)
    lines = ['Post-update training loss, mean of the Iteration lines in each stretch:', header]
    for lo, hi in CURVE_SEGMENTS:
        line = '%-13s' % ('%d-%d' % (lo, hi) if lo != hi else str(lo))
        for runs in curves.values():
            v = np.array([stretch(r, lo, hi) for r in runs])
            line += '  %-27s' % ('%.3f [%.3f, %.3f]' % (v.mean(), v.min(), v.max()) if len(v) else '-')
        line += ''.join('  %-7s' % ('%.3f' % stretch(r, lo, hi)) for r in ref_curves.values())
        lines.append(line)
    return lines


def late_train_loss(train_log, first=40000):
    """Mean post-update training loss of the Iteration lines from `first` on (the last 30,000
    iterations of 70,000): the training-side figure the issue compares."""
    losses = train_post_losses(train_log)
    late = [v for itr, v in losses.items() if itr >= first]
    return float(np.mean(late)) if late else float('nan')


## The reference's test tasks -------------------------------------------------------------------------

def draw_reference_tasks(num_tasks=NUM_TASKS, k=K):
    """The reference's test-task recipe, the one place it is written: (x [tasks, 2K, 1] float64,
    amplitudes [tasks], phases [tasks]).

    The reference seeds numpy with 1 (and Python's random, which its sinusoid
    test does not use) before its test, then draws per task, in this order:
    amplitude U[0.1, 5], phase U[0, pi], 2K inputs U[-5, 5]. A RandomState(1)
    gives the same numbers and leaves the global random states alone.
    """
    rs = np.random.RandomState(1)
    xs, amps, phases = [], [], []
    for _ in range(num_tasks):
        amps.append(rs.uniform(0.1, 5.0, [1])[0])
        phases.append(rs.uniform(0, np.pi, [1])[0])
        xs.append(rs.uniform(-5.0, 5.0, [2 * k, 1]))
    return np.stack(xs), np.array(amps), np.array(phases)


def reference_test_tasks(num_tasks=NUM_TASKS, k=K):
    """The tasks the reference tests on: x, y of shape [tasks, 2K, 1] in float32, y = amp sin(x - phase)
    computed in float64 and then cast (the reference fed float64 arrays into float32 placeholders). The
    first K points of each task are the support set, the last K the query."""
    x, amps, phases = draw_reference_tasks(num_tasks, k)
    y = amps[:, None, None] * np.sin(x - phases[:, None, None])
    return x.astype(np.float32), y.astype(np.float32)


def task_batch(x, y, i, k=K):
    """Task i as main.py's meta-batch of one: (inputa, inputb, labela, labelb), each [1, K, 1]."""
    return x[i:i + 1, :k], x[i:i + 1, k:], y[i:i + 1, :k], y[i:i + 1, k:]


def stream_statistics(seed=0, batches=ITERATIONS, batch_size=25):
    """Lines describing our training task stream (DataGenerator, as main.py draws it) over a whole
    run, against SPEC.md's distributions: amplitude U[0.1, 5], phase U[0, pi], x U[-5, 5], and
    the support/query split of make_batch (first K points, last K). No TensorFlow needed."""
    from data_generator import DataGenerator
    gen = DataGenerator(2 * K, batch_size, datasource='sinusoid', seed=seed)
    amps, phases, xs = [], [], []
    for i in range(batches):
        inputs, outputs, amp, phase = gen.generate(True, i)
        amps.append(amp)
        phases.append(phase)
        xs.append(inputs.ravel())
        if i < 100:
            inputa, inputb, labela, labelb = gen.make_batch(True, i, K)
            assert (inputa == inputs[:, :K]).all() and (inputb == inputs[:, K:]).all()
            assert (labela == outputs[:, :K]).all() and (labelb == outputs[:, K:]).all()
            assert np.allclose(outputs[..., 0], amp[:, None] * np.sin(inputs[..., 0] - phase[:, None]), atol=1e-5)
    lines = ['our training stream, seed %d: %d batches of %d tasks%s; support = first %d points, '
             'query = last %d (checked on the first 100 batches)'
             % (seed, batches, batch_size, ' (a whole run)' if batches == ITERATIONS else '', K, K)]
    for name, v, lo, hi in (('amplitude', np.concatenate(amps), 0.1, 5.0), ('phase', np.concatenate(phases), 0, np.pi),
                            ('x', np.concatenate(xs).astype(np.float64), -5.0, 5.0)):
        lines.append('  %-9s min %.4f max %.4f mean %.4f (uniform: %.4f) sd %.4f (uniform: %.4f) '
                     'KS statistic * sqrt(n) %.2f (5%% critical value 1.36)'
                     % (name, v.min(), v.max(), v.mean(), (lo + hi) / 2, v.std(), (hi - lo) / math.sqrt(12),
                        ks_uniform(v, lo, hi)))
    a = np.concatenate(amps)
    lines.append('  correlation amplitude-phase %+.4f; amplitude of task i and i+1 %+.4f; of the first task of '
                 'batch i and i+1 %+.4f' % (np.corrcoef(a, np.concatenate(phases))[0, 1],
                                           np.corrcoef(a[:-1], a[1:])[0, 1],
                                           np.corrcoef(a[::batch_size][:-1], a[::batch_size][1:])[0, 1]))
    return lines


def ks_uniform(values, lo, hi):
    """Kolmogorov-Smirnov distance of values from U[lo, hi], times sqrt(n)."""
    v = np.sort((np.asarray(values, dtype=np.float64) - lo) / (hi - lo))
    n = len(v)
    return float(max(np.max(np.arange(1, n + 1) / n - v), np.max(v - np.arange(n) / n)) * math.sqrt(n))


## Model and evaluation ----------------------------------------------------------------------------

def build_test_model():
    """main.build(train=False) under the paper's sinusoid flags: the model `main.py --train=False`
    tests (float32, 10 recorded steps, alpha 0.01, main.py's choice of CPU kernels).

    main.FLAGS is parsed here (main.build reads the flags); our own options
    are argparse's, so the two never mix.
    """
    import main
    main.FLAGS(['sinusoid_study'] + PAPER_FLAGS + ['--train=False'])
    _, model = main.build(train=False)
    return model


def load_checkpoint(model, directory):
    """Load the latest checkpoint in directory (ours or the reference's TF1 one) as main.py does.

    Returns Checkpoints.choice: which checkpoint was loaded.
    """
    import main
    ckpt = main.Checkpoints(model, directory)
    path = ckpt.path_for(-1)
    if path is None:
        raise FileNotFoundError('no checkpoint in %s' % directory)
    ckpt.restore(path, optimizer_state=False)
    return ckpt.choice


def evaluate_tasks(model, x, y, num_steps=TEST_STEPS):
    """[tasks, 1 + num_steps] MSEs, one task at a time as main.test: column 0 the pre-update
    support loss, column j the query loss after j inner steps."""
    rows = []
    for i in range(x.shape[0]):
        out = model.evaluate(task_batch(x, y, i), num_steps)
        rows.append([float(out['total_loss1'])] + [float(v) for v in out['total_losses2']])
    return np.array(rows)


def dead_units(model, grid=2001):
    """(layer 1, layer 2) hidden ReLUs of the meta-learned weights that are off for every x in
    [-5, 5]: units the run has lost (their gradient is zero, so plain training does not revive
    them; adaptation from these weights hardly can). From the weights, before any inner step."""
    w = {k: v.numpy().astype(np.float64) for k, v in model.weights.items()}
    x = np.linspace(-5.0, 5.0, grid)[:, None]
    a1 = x @ w['w1'] + w['b1']
    a2 = np.maximum(a1, 0) @ w['w2'] + w['b2']
    return int((a1 <= 0).all(axis=0).sum()), int((a2 <= 0).all(axis=0).sum())


## Student t, numerically ----------------------------------------------------------------------------

def t_pdf(t, df):
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    return math.exp(log_norm - (df + 1) / 2 * math.log1p(t * t / df))


def t_cdf(t, df, intervals=4000):
    """P(T <= t) for Student's t with df (> 0, not necessarily whole) degrees of freedom.

    Simpson's rule on the density from 0 to |t| after the substitution
    t = tan(u) for large |t|, which keeps the integrand smooth and bounded
    (the heavy tails of small df): about 1e-10 accurate, plenty for a p-value.
    """
    a = abs(t)
    if a == 0:
        return 0.5
    top = math.atan(a)
    h = top / intervals

    def f(u):
        return t_pdf(math.tan(u), df) / math.cos(u) ** 2

    total = f(0.0) + f(top)
    total += 4 * sum(f((2 * i - 1) * h) for i in range(1, intervals // 2 + 1))
    total += 2 * sum(f(2 * i * h) for i in range(1, intervals // 2))
    half = total * h / 3
    return 0.5 + half if t > 0 else 0.5 - half


def t_quantile(p, df):
    """The t with P(T <= t) = p, by bisection on t_cdf (p in (0.5, 1))."""
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
    return (lo + hi) / 2


def t_interval(values, level=0.95):
    """(mean, half-width) of the Student t confidence interval of the mean of values."""
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    half = t_quantile(0.5 + level / 2, n - 1) * values.std(ddof=1) / math.sqrt(n)
    return float(values.mean()), float(half)


def welch(a, b):
    """Welch's two-sample t test of equal means: (t, Welch-Satterthwaite df, two-sided p)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    t = (a.mean() - b.mean()) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    return float(t), float(df), float(2 * (1 - t_cdf(abs(t), df)))


PERMUTATION_EXACT_LIMIT = 200000
PERMUTATION_SAMPLES = 100000


def permutation_is_exact(n_a, n_b, exact_limit=PERMUTATION_EXACT_LIMIT):
    return math.comb(n_a + n_b, n_b) <= exact_limit


def permutation_p(a, b, exact_limit=PERMUTATION_EXACT_LIMIT, samples=PERMUTATION_SAMPLES):
    """Two-sided permutation p-value of the difference of means.

    Needs no normality and no variance estimate, which 3 reference runs
    cannot give reliably; with 3 against n it can go no lower than
    1 / C(n + 3, 3). Exact (every relabelling) up to exact_limit
    relabellings; beyond that (e.g. 20 runs against 10) estimated from
    `samples` random relabellings with a fixed seed, as (hits + 1) / (samples + 1).
    """
    pooled = np.concatenate([a, b]).astype(np.float64)
    n, k = len(pooled), len(b)
    observed = abs(np.mean(a) - np.mean(b)) - 1e-12

    def extreme(mask):
        return abs(pooled[~mask].mean() - pooled[mask].mean()) >= observed

    if permutation_is_exact(n - k, k, exact_limit):
        count = total = 0
        for pick in itertools.combinations(range(n), k):
            mask = np.zeros(n, bool)
            mask[list(pick)] = True
            count += extreme(mask)
            total += 1
        return count / total
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(samples):
        mask = np.zeros(n, bool)
        mask[rng.choice(n, k, replace=False)] = True
        hits += extreme(mask)
    return (hits + 1) / (samples + 1)


## Report ------------------------------------------------------------------------------------------------

def fmt3(values):
    return ' / '.join('%.3f' % v for v in values)


def run_line(name, s, train_log, dead):
    train_loss, escape = late_train_loss(train_log), escape_iteration(train_log)
    return ('%-22s %-21s %-15s %4d   %3d   %-21s %-10s %-9s %d/%d'
            % (name, fmt3(s['median']), '%.3f +- %.3f' % (s['mean1'], s['ci1']), s['divergent'],
               s['diverged'], fmt3(s['mean_others']), '%.3f' % train_loss if math.isfinite(train_loss) else '-',
               escape if escape is not None else '-', dead[0], dead[1]))


def check_reference_run1(s):
    """Our evaluation must give the reference's own run1 figures (its README) to the third decimal."""
    got = {'median': s['median'], 'mean1': (s['mean1'],), 'divergent': (s['divergent'],),
           'mean_others': s['mean_others']}
    want = dict(RUN1_EXPECTED, mean1=(RUN1_EXPECTED['mean1'],), divergent=(RUN1_EXPECTED['divergent'],))
    wrong = ['%s %s, expected %s' % (k, fmt3(got[k]), fmt3(want[k])) for k in want
             if any(abs(g - w) > 0.0005 + 1e-9 for g, w in zip(got[k], want[k]))]
    return wrong


def welch_difference(a, b, level=0.95):
    """(mean(a) - mean(b), half-width) of Welch's confidence interval of the difference of means."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    se = math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
    _, df, _ = welch(a, b)
    return float(a.mean() - b.mean()), float(t_quantile(0.5 + level / 2, df) * se)


def compare(ours, reference, name_a='ours', name_b='reference', steps=REPORT_STEPS):
    """Per step: ours' mean of the per-run medians with its 95% t-interval, the reference's mean,
    whether that falls inside, Welch's test and interval of the difference, and the exact
    permutation p. Returns (lines, {step: (inside, difference, Welch p, permutation p)})."""
    lines, results = [], {}
    for j, step in enumerate(steps):
        a = np.array([m[j] for m in ours])
        b = np.array([m[j] for m in reference])
        mean, half = t_interval(a)
        ref_mean = b.mean()
        inside = mean - half <= ref_mean <= mean + half
        t, df, p = welch(a, b)
        diff, diff_half = welch_difference(a, b)
        perm = permutation_p(a, b)
        results[step] = (inside, diff, p, perm)
        values = ', '.join('%.3f' % v for v in b) if len(b) <= 5 else '%.3f..%.3f' % (b.min(), b.max())
        lines.append('step %-2d %s %.3f +- %.3f [%.3f, %.3f] (n=%d)   %s %.3f (%s; n=%d): %s the interval'
                     % (step, name_a, mean, half, mean - half, mean + half, len(a), name_b, ref_mean,
                        values, len(b), 'inside' if inside else 'OUTSIDE'))
        how = ('exact' if permutation_is_exact(len(a), len(b))
               else 'from %d random relabellings' % PERMUTATION_SAMPLES)
        lines.append('        %s - %s %+.3f, Welch 95%% interval [%+.3f, %+.3f], t=%.2f df=%.1f p=%.3f; '
                     'permutation p=%.3f (%s)' % (name_a, name_b, diff, diff - diff_half, diff + diff_half,
                                                  t, df, p, perm, how))
    return lines, results


def paired_t(differences):
    """(mean, 95% half-width, two-sided p) of paired differences (Student t, n - 1 df)."""
    d = np.asarray(differences, dtype=np.float64)
    n = len(d)
    se = d.std(ddof=1) / math.sqrt(n)
    t = d.mean() / se
    return float(d.mean()), float(t_quantile(0.975, n - 1) * se), float(2 * (1 - t_cdf(abs(t), n - 1)))


def paired_lines(ours, other, name):
    """Runs of the same seed in both groups share their initial weights (MAML's own generator),
    so a paired comparison removes what the initial weights contribute to a run's outcome."""
    common = sorted(set(ours) & set(other))
    if len(common) < 3:
        return []
    lines = ['Paired by seed (same initial weights, %d pairs):' % len(common)]
    for j, step in enumerate(REPORT_STEPS):
        a = np.array([ours[s][j] for s in common])
        b = np.array([other[s][j] for s in common])
        mean, half, p = paired_t(a - b)
        lines.append('step %-2d ours - %s %+.3f [%+.3f, %+.3f], paired t p=%.3f; correlation of the pairs %.2f'
                     % (step, name, mean, mean - half, mean + half, p, np.corrcoef(a, b)[0, 1]))
    return lines


def verdict(results, n_ours, n_reference, level=0.05):
    """The plain conclusion from compare's results, in three grades.

    AGREE: the reference runs' mean is inside our interval at every step and
    no step differs significantly. DIFFER: at some step both two-sample tests
    find a difference at the 5% level. Both, because each is weak on its own
    with 3 reference runs: Welch's test leans on normality and on a variance
    estimated from 3 values, the permutation test assumes nothing but cannot
    go below p = 0.1 with 3 runs against 3. (No correction for testing 3
    steps: the steps' medians move together.) Otherwise: NOT SHOWN TO AGREE,
    nor to differ -- the reference's own spread, known from n_reference runs,
    is what keeps the difference from being significant.
    """
    outside = [s for s, r in results.items() if not r[0]]
    significant = [s for s, r in results.items() if max(r[2], r[3]) < level]
    direction = ', '.join('%+.3f' % results[s][1] for s in results)
    steps = '/'.join(str(s) for s in results)
    detail = ('ours - reference at steps %s: %s; the reference mean is %s; steps where Welch and the '
              'permutation test both find a difference at 5%%: %s (%d of our seeds, %d reference runs)'
              % (steps, direction,
                 'inside our 95% interval at every step' if not outside
                 else 'OUTSIDE our 95%% interval at step(s) %s' % ', '.join(map(str, outside)),
                 ', '.join(map(str, significant)) or 'none', n_ours, n_reference))
    if significant:
        return 'Verdict: DIFFER. ' + detail + '.'
    if not outside:
        return 'Verdict: AGREE. ' + detail + '.'
    return ('Verdict: NOT SHOWN TO AGREE (nor to differ). ' + detail + '; with only %d reference runs the '
            'tests have little power against a difference of this size.' % n_reference)


def escape_iteration(train_log, below=2.0):
    """The first 'Iteration N' line whose post-update loss is below 2: when the run left the
    initial plateau (about 3.4, a net that barely depends on x). None if never (or no log)."""
    losses = train_post_losses(train_log)
    return next((itr for itr in sorted(losses) if losses[itr] < below), None)


def reference_runs(directory):
    """The reference's run folders in directory that hold a checkpoint: runN by N, then seedN by N.

    run1 (unseeded) and run2 (seed 1) came first; seedN/ are the later runs
    seeded with N. Other folders, and run folders without a checkpoint, are ignored.
    """
    found = []
    for name in os.listdir(directory):
        m = re.match(r'^(run|seed)(\d+)$', name)
        if m and glob.glob(os.path.join(directory, name, '*.index')):
            found.append((m.group(1) != 'run', int(m.group(2)), name))
    return [name for _, _, name in sorted(found)]


def pkl_medians(directory):
    """The medians at steps 1/5/10 of the reference's own test pkl in directory (counted as
    summarize counts them), or None without a pkl: a cross-check of our evaluation."""
    import pickle
    path = os.path.join(directory, REFERENCE_PKL)
    if not os.path.exists(path):
        return None
    with open(path, 'rb') as f:
        return summarize(np.asarray(pickle.load(f)['mses']))['median']


RUN_LINE = re.compile(r'^(?P<name>.+?) seed (?P<seed>\d+)\s+(?P<m1>[\d.]+) / (?P<m5>[\d.]+) / (?P<m10>[\d.]+)\s+'
                      r'[\d.]+ \+- [\d.]+\s+\d+\s+\d+\s+[\d.]+ / [\d.]+ / [\d.]+\s+'
                      r'(?P<post>\S+)\s+(?P<escape>\S+)\s+\d+/\d+$')


def recorded_runs(path, group, seeds):
    """{seed: {'median', 'train_post', 'escape'}} of a group's runs as an earlier comparison
    printed them (run_line's 'ours seed N ...' lines): for runs whose checkpoints and logs are
    no longer on this machine. Seeds without a line are named on stdout and left out."""
    runs = {}
    with open(path) as f:
        for line in f:
            m = RUN_LINE.match(line.rstrip('\n'))
            if m and m.group('name') == group and int(m.group('seed')) in seeds:
                runs[int(m.group('seed'))] = {
                    'median': tuple(float(m.group(k)) for k in ('m1', 'm5', 'm10')),
                    'train_post': float(m.group('post')) if m.group('post') != '-' else float('nan'),
                    'escape': int(m.group('escape')) if m.group('escape') != '-' else None}
    for seed in seeds:
        if seed not in runs:
            print('%s seed %d: no test line in %s; left out' % (group, seed, path))
    return runs


def spread_lines(groups):
    """The run-to-run spread of each group's per-run medians, per step: sd, min, quartiles, max;
    then whether the first group is more or less spread than each other one: the ratio of the
    sds and a permutation test of the absolute deviations from each group's median (the
    Brown-Forsythe form, which does not lean on normality). groups: {name: [(median step 1,
    step 5, step 10), ...]}."""
    lines = ['Run-to-run spread of the per-run median MSE: sd; min [quartile 1, median, quartile 3] max, IQR:']
    for j, step in enumerate(REPORT_STEPS):
        for name, runs in groups.items():
            v = np.array([m[j] for m in runs], dtype=np.float64)
            q1, q2, q3 = np.percentile(v, [25, 50, 75])
            lines.append('step %-2d %-10s n=%-3d sd %.3f; %.3f [%.3f, %.3f, %.3f] %.3f, IQR %.3f'
                         % (step, name, len(v), v.std(ddof=1), v.min(), q1, q2, q3, v.max(), q3 - q1))
    names = list(groups)
    for other in names[1:]:
        for j, step in enumerate(REPORT_STEPS):
            a = np.array([m[j] for m in groups[names[0]]], dtype=np.float64)
            b = np.array([m[j] for m in groups[other]], dtype=np.float64)
            da, db = np.abs(a - np.median(a)), np.abs(b - np.median(b))
            lines.append('step %-2d sd %s / %s %.2f; mean absolute deviation from the median %.3f / %.3f, '
                         'permutation p=%.3f' % (step, names[0], other, a.std(ddof=1) / b.std(ddof=1),
                                                 da.mean(), db.mean(), permutation_p(da, db)))
    return lines


def escape_lines(groups, by=2000):
    """When the runs of each group left the initial plateau (escape_iteration), and whether that
    goes with a run's result. groups: {name: [(escape iteration or None, step-1 median), ...]};
    runs without a log are left out. The first group is compared with each other one: the share
    that escaped by `by` and the mean escape iteration, each with permutation_p."""
    lines = ['Plateau escape (the first Iteration line with a post-update training loss below 2):']
    known = {name: [(e, m) for e, m in runs if e is not None] for name, runs in groups.items()}
    for name, runs in known.items():
        escapes = np.array([e for e, _ in runs], dtype=np.float64)
        medians = np.array([m for _, m in runs])
        counts = ', '.join('%d: %d' % (itr, (escapes == itr).sum()) for itr in sorted(set(escapes.astype(int))))
        corr = np.corrcoef(escapes, medians)[0, 1] if len(runs) > 2 and escapes.std() > 0 else float('nan')
        lines.append('%-10s %d runs; runs per iteration %s; by %d: %d of %d; median %d, mean %.0f; '
                     'correlation with the step-1 median %+.2f'
                     % (name, len(runs), counts, by, (escapes <= by).sum(), len(runs), np.median(escapes),
                        escapes.mean(), corr))
    names = list(known)
    for other in names[1:]:
        a = np.array([e for e, _ in known[names[0]]], dtype=np.float64)
        b = np.array([e for e, _ in known[other]], dtype=np.float64)
        if len(a) < 2 or len(b) < 2:
            continue
        lines.append('%s - %s: share by %d %+.2f (permutation p=%.4f); mean escape iteration %+.0f '
                     '(permutation p=%.4f)' % (names[0], other, by, (a <= by).mean() - (b <= by).mean(),
                                              permutation_p((a <= by).astype(float), (b <= by).astype(float)),
                                              a.mean() - b.mean(), permutation_p(a, b)))
    return lines


def main_study(args):
    if args.check_stream:
        for line in stream_statistics():
            print(line)
        return 0
    seeds = parse_seeds(args.train or args.seeds)
    if args.train_k == 10:
        return k10_study(args, seeds)
    if not os.path.isdir(args.reference) or 'run1' not in reference_runs(args.reference):
        print('Error: no reference run1 checkpoint in %s (--reference)' % args.reference, file=sys.stderr)
        return 2
    if args.curves:
        groups = {'ours': trained_logs(args.logdir, seeds, 'ours')}
        if args.versus:
            groups[args.versus_name] = trained_logs(args.versus, parse_seeds(args.versus_seeds), args.versus_name)
        groups['reference'] = [os.path.join(args.reference, run, 'train_log.txt')
                               for run in reference_runs(args.reference)]
        for line in curve_lines(groups, {}):
            print(line)
        return 0
    if args.train:
        total = time.time()
        for seed in seeds:
            train(seed, args.logdir.format(seed=seed), args.stream)
        print('training: %.0f s in all' % (time.time() - total), flush=True)
        if args.no_test:
            return 0
    model = build_test_model()
    x, y = reference_test_tasks()
    header = ('%-22s %-21s %-15s %4s   %3s   %-21s %-10s %-9s %s'
              % ('run', 'median step 1/5/10', 'mean step 1', 'div', 'dvA', 'mean others 1/5/10', 'train post',
                 'post<2 at', 'dead'))
    print('\nTest: the reference\'s 600 tasks, 10 inner steps at alpha 0.01, float32 (main.build).')
    print('div: tasks above MSE 10 at any step 0..10 (the README\'s count); dvA: above 10 after adapting (steps 1..10);')
    print('train post: mean post-update training loss of the Iteration lines 40000..69000; post<2 at: the first')
    print('Iteration line with a post-update loss below 2 (the end of the initial plateau); dead: hidden units of')
    print('layer 1/2 (of 40 each) that are off for every x in [-5, 5] (dead_units).\n')
    print(header)
    reference = test_reference(model, x, y, args.reference)
    if reference is None:
        return 2
    for name, medians in THIRD_REFERENCE_MEDIANS.items():
        print('%-22s %-21s (only the medians are known)' % ('reference ' + name, fmt3(medians)))
    reference_medians = [r['median'] for r in reference.values()] + list(THIRD_REFERENCE_MEDIANS.values())
    ours = (recorded_group(args.ours_from, 'ours', seeds) if args.ours_from
            else test_group(model, x, y, args.logdir, seeds, 'ours seed %d'))
    other = {}
    if args.versus_from:
        other = recorded_group(args.versus_from, args.versus_name, parse_seeds(args.versus_seeds))
    elif args.versus:
        other = test_group(model, x, y, args.versus, parse_seeds(args.versus_seeds), args.versus_name + ' seed %d')
    if len(ours) < 2:
        print('fewer than two of our runs: no interval')
        return 0
    ours_medians = {seed: r['median'] for seed, r in ours.items()}
    print('\nMean over runs of the per-run median MSE, ours with its 95%% t-interval (t quantile '
          'computed numerically, df=%d: %.4f):' % (len(ours) - 1, t_quantile(0.975, len(ours) - 1)))
    lines, results = compare(list(ours_medians.values()), reference_medians)
    for line in lines:
        print(line)
    print('\n' + verdict(results, len(ours), len(reference_medians)))
    spread = {'ours': list(ours_medians.values()), 'reference': reference_medians}
    escapes = {'ours': [(r['escape'], r['median'][0]) for r in ours.values()],
               'reference': [(r['escape'], r['median'][0]) for r in reference.values()]}
    if len(other) >= 2:
        other_medians = {seed: r['median'] for seed, r in other.items()}
        print('\n%s against the reference, the same statistics:' % args.versus_name)
        lines, _ = compare(list(other_medians.values()), reference_medians, args.versus_name)
        for line in lines:
            print(line)
        print('\nOurs against %s (%s), the same statistics:' % (args.versus_name, args.versus_from or args.versus))
        lines, _ = compare(list(ours_medians.values()), list(other_medians.values()), 'ours', args.versus_name)
        for line in lines:
            print(line)
        for line in paired_lines(ours_medians, other_medians, args.versus_name):
            print(line)
        spread[args.versus_name] = list(other_medians.values())
        escapes[args.versus_name] = [(r['escape'], r['median'][0]) for r in other.values()]
    print()
    for line in spread_lines(spread):
        print(line)
    print()
    for line in escape_lines(escapes):
        print(line)
    return 0


## The paper's protocol: trained at K = 10, tested at K = 5 and K = 10 ----------------------------------

BLOW_UP = 100.0  # the reference README's "blow-up": a query MSE at some step 1..10 not finite or above this
K10_OUTPUTS = os.path.join(REPO, 'docs', 'sinusoid-study', 'k10')
K10_REFERENCE_CACHE = 'logs/sinusoid-study-k10/reference-evaluated'
TEST_KS = (5, 10)


def evaluate_all_tasks(model, x, y, num_steps=TEST_STEPS):
    """[tasks, 1 + num_steps] MSEs of all tasks stacked in one batch, as main.py's test now runs the
    600 sinusoid tasks (TEST_TASKS_PER_BATCH): 40 times faster than one task at a time (evaluate_tasks).
    K is read from the tasks' 2K points."""
    k = x.shape[1] // 2
    batch = (x[:, :k], x[:, k:], y[:, :k], y[:, k:])
    return model.evaluate_tasks(batch, num_steps)['losses'].numpy().astype(np.float64)


def blow_ups(mses):
    """[tasks] bool: a query MSE at some step 1..10 not finite or above BLOW_UP."""
    query = np.asarray(mses, dtype=np.float64)[:, 1:]
    return (~np.isfinite(query) | (query > BLOW_UP)).any(axis=1)


def k10_figures(mses):
    """One run's figures at one K, steps 1/5/10 (see docs/sinusoid-study.md, the rule): blow-up
    tasks, the plain mean (inf or nan when a task blows up), the median (a non-finite MSE the worst),
    the mean of the tasks never above 10 (summarize's mean_others) and the mean without the blow-ups."""
    m = np.asarray(mses, dtype=np.float64)
    s, bad, steps = summarize(m), blow_ups(m), list(REPORT_STEPS)
    with np.errstate(all='ignore'):
        plain = tuple(float(v) for v in m[:, steps].mean(axis=0))
    return {'blowups': int(bad.sum()), 'plain': plain, 'median': tuple(float(v) for v in s['median']),
            'never10': tuple(float(v) for v in s['mean_others']),
            'without': tuple(float(v) for v in m[~bad][:, steps].mean(axis=0)), 'divergent': s['divergent']}


def fmtg(values):
    """Steps' values as the reference README prints them: 3 decimals, 1.2e+05 when large, inf/nan."""
    return ' / '.join('inf/nan' if not math.isfinite(v) else '%.1e' % v if v >= 1000 else '%.3f' % v
                      for v in values)


def k10_line(name, by_k):
    """One run's line: per K, blow-up tasks, plain mean, median, mean of the tasks never above 10."""
    return '%-16s ' % name + '   '.join(
        'K=%d %3d | %-27s | %-21s | %-21s' % (k, f['blowups'], fmtg(f['plain']), fmtg(f['median']),
                                                 fmtg(f['never10'])) for k, f in sorted(by_k.items()))


def save_mses(path, mses_by_k):
    """Per-task MSEs of one run (float32, the precision they were computed in), one array per K."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.savez_compressed(path, **{'k%d' % k: np.asarray(m, dtype=np.float32) for k, m in mses_by_k.items()})


def keep_run(path, mses_by_k, logdir):
    """What the study keeps of one of our runs: its per-task MSEs (save_mses) and, beside them, its
    training log (path without .npz + '_train_log.txt'), for the training curves."""
    save_mses(path, mses_by_k)
    log = os.path.join(logdir, 'train_log.txt')
    if os.path.exists(log):
        import shutil
        shutil.copyfile(log, path[:-len('.npz')] + '_train_log.txt')


def load_mses(path):
    with np.load(path) as f:
        return {int(name[1:]): f[name].astype(np.float64) for name in f.files}


def k10_reference_check(run, folder, mses_by_k):
    """What in our evaluation of a reference run differs from its own test pkls (medians to the
    third decimal, blow-up count); [] when nothing does."""
    import pickle
    wrong = []
    for k, mses in mses_by_k.items():
        path = os.path.join(folder, 'test_ubs%d_stepsize0.01.pkl' % k)
        if not os.path.exists(path):
            wrong.append('%s: no %s' % (run, path))
            continue
        with open(path, 'rb') as f:
            theirs = k10_figures(np.asarray(pickle.load(f)['mses']))
        ours = k10_figures(mses)
        if any(abs(a - b) > 0.0005 for a, b in zip(ours['median'], theirs['median'])) \
                or ours['blowups'] != theirs['blowups']:
            wrong.append('%s K=%d: medians %s and %d blow-ups, its pkl %s and %d'
                         % (run, k, fmt3(ours['median']), ours['blowups'], fmt3(theirs['median']), theirs['blowups']))
    return wrong


def k10_study(args, seeds):
    """The paper's protocol: train at K=10 (--train), then test our runs and the reference's at K=5
    and K=10 on the reference's tasks and compare them by the rule in docs/sinusoid-study.md."""
    tasks = {k: reference_test_tasks(k=k) for k in TEST_KS}
    model = []  # built on first use: a run whose per-task MSEs are saved needs no TensorFlow

    def evaluate(directory):
        if not model:
            model.append(build_test_model())
        load_checkpoint(model[0], directory)
        return {k: evaluate_all_tasks(model[0], *tasks[k]) for k in TEST_KS}

    if args.train:
        total = time.time()
        for seed in seeds:
            saved = os.path.join(args.k10_outputs, 'seed%d.npz' % seed)
            # its test MSEs are what the study keeps (run folders do not outlive a session): a seed with
            # them is done, even on a machine where its run folder is gone
            if os.path.exists(saved):
                print('seed %d: trained and tested already (%s); skipped' % (seed, saved), flush=True)
                continue
            train(seed, args.logdir.format(seed=seed), args.stream, train_k=10)
            if not args.no_test:  # at once, so that a finished seed's figures are saved before the next one
                keep_run(saved, evaluate(experiment_dir(args.logdir.format(seed=seed), 10)), args.logdir.format(seed=seed))
                print('seed %d: tested, per-task MSEs in %s' % (seed, saved), flush=True)
        print('training: %.0f s in all' % (time.time() - total), flush=True)
        if args.no_test:
            return 0
    if not os.path.isdir(args.reference) or not reference_runs(args.reference):
        print('Error: no reference run with a checkpoint in %s (--reference)' % args.reference, file=sys.stderr)
        return 2

    print('Test: the reference\'s 600 tasks with 2K points, K=5 and K=10, 10 inner steps at alpha 0.01, float32.')
    print('Per K: blow-up tasks (query MSE at a step 1..10 not finite or above %g) | plain mean 1/5/10 | '
          'median 1/5/10 | mean of the tasks never above 10, 1/5/10\n' % BLOW_UP)
    reference = {}
    for run in reference_runs(args.reference):
        folder = os.path.join(args.reference, run)
        cached = os.path.join(args.k10_cache, run + '.npz')
        mses = load_mses(cached) if os.path.exists(cached) else evaluate(folder)
        wrong = k10_reference_check(run, folder, mses)
        if wrong:
            print('Error: our evaluation does not reproduce the reference\'s own test output: %s' % '; '.join(wrong),
                  file=sys.stderr)
            return 2
        if not os.path.exists(cached):
            save_mses(cached, mses)
        reference[run] = {k: k10_figures(m) for k, m in mses.items()}
        print(k10_line('reference ' + run, reference[run]), flush=True)
    print('%-16s (checked: every reference run\'s medians at K=5 and K=10 are its own pkl\'s to the third '
          'decimal, and its blow-up counts the same)' % '')
    ours, task_mses = {}, {'ours': {}, 'reference': {}}
    for seed in seeds:
        saved = os.path.join(args.k10_outputs, 'seed%d.npz' % seed)
        if not os.path.exists(saved):
            exp_dir = experiment_dir(args.logdir.format(seed=seed), 10)
            if last_iteration(exp_dir) < ITERATIONS - 1:
                print('%-16s not trained to %d iterations (%s) and no %s; left out'
                      % ('ours seed %d' % seed, ITERATIONS, exp_dir, saved))
                continue
            keep_run(saved, evaluate(exp_dir), args.logdir.format(seed=seed))
        mses = load_mses(saved)
        task_mses['ours'][seed] = mses[5]
        ours[seed] = {k: k10_figures(m) for k, m in mses.items()}
        print(k10_line('ours seed %d' % seed, ours[seed]), flush=True)
    for run in reference:
        task_mses['reference'][run] = load_mses(os.path.join(args.k10_cache, run + '.npz'))[5]
    if len(ours) < 2:
        print('fewer than two of our runs: no comparison')
        return 0
    partial = len(ours) < 30
    print('\n%sOur %d runs (seeds %s) against the reference\'s %d.'
          % ('PARTIAL (%d of the 30 seeds): ' % len(ours) if partial else '', len(ours),
             ','.join(map(str, sorted(ours))), len(reference)))
    row = {}
    for k in TEST_KS:
        lines, results = k10_comparison(list(ours.values()), list(reference.values()), k)
        for line in lines:
            print(line)
        row[k] = results
    print('\n' + row_verdict(row[5], partial, len(ours)))
    print('\nRepresentative run (the rule: the middle of our runs ranked by the K=5 step-1 plain mean, the '
          'lower middle one when their number is even): seed %d' % representative_seed({s: f[5] for s, f in ours.items()}))
    print()
    for line in blow_up_task_lines(task_mses, tasks[5]):
        print(line)
    return 0


def k10_comparison(ours, reference, k):
    """Lines and {statistic: verdict or p} of the comparison at one K (the rule's items 1-3)."""
    a = [r[k] for r in ours]
    b = [r[k] for r in reference]
    lines = ['', '== K=%d ==' % k]
    has_a = np.array([f['blowups'] > 0 for f in a], dtype=np.float64)
    has_b = np.array([f['blowups'] > 0 for f in b], dtype=np.float64)
    share_p = permutation_p(has_a, has_b)
    count_a = np.array([f['blowups'] for f in a], dtype=np.float64)
    count_b = np.array([f['blowups'] for f in b], dtype=np.float64)
    lines.append('runs with blow-up tasks: ours %d of %d (%.0f%%), reference %d of %d (%.0f%%); permutation p=%.3f'
                 % (has_a.sum(), len(a), 100 * has_a.mean(), has_b.sum(), len(b), 100 * has_b.mean(), share_p))
    lines.append('blow-up tasks per run: ours median %g, range %d-%d, mean %.2f; reference median %g, range %d-%d, '
                 'mean %.2f; permutation p of the means=%.3f'
                 % (np.median(count_a), count_a.min(), count_a.max(), count_a.mean(), np.median(count_b),
                    count_b.min(), count_b.max(), count_b.mean(), permutation_p(count_a, count_b)))
    results = {'share_p': share_p}
    lines.append('plain mean, step 1 (finite in %d of ours, %d of the reference):'
                 % (sum(math.isfinite(f['plain'][0]) for f in a), sum(math.isfinite(f['plain'][0]) for f in b)))
    finite = all(math.isfinite(f['plain'][0]) for f in a + b)
    if finite:
        cmp_lines, res = compare([(f['plain'][0],) for f in a], [(f['plain'][0],) for f in b], steps=(1,))
        lines += cmp_lines + ['  ' + verdict(res, len(a), len(b))]
        results['plain1'] = verdict(res, len(a), len(b)).split('.')[0]
    for j, step in list(enumerate(REPORT_STEPS))[1:]:
        va = np.array([f['plain'][j] for f in a])
        vb = np.array([f['plain'][j] for f in b])
        usable = lambda v: int((np.isfinite(v) & (v < 1000)).sum())  # noqa: E731
        lines.append('plain mean, step %d: finite and below 1000 in %d of %d of ours, %d of %d of the reference; '
                     'median over runs (inf/nan the worst) ours %s, reference %s'
                     % (step, usable(va), len(va), usable(vb), len(vb),
                        fmtg([np.median(np.where(np.isfinite(va), va, np.inf))]),
                        fmtg([np.median(np.where(np.isfinite(vb), vb, np.inf))])))
    for key, title in (('median', 'per-run median'), ('never10', 'per-run mean of the tasks never above 10')):
        lines.append('%s, steps 1/5/10:' % title)
        cmp_lines, res = compare([f[key] for f in a], [f[key] for f in b])
        text = verdict(res, len(a), len(b))
        lines += cmp_lines + ['  ' + text]
        results[key] = text.split('.')[0]
    return lines, results


def row_verdict(results, partial, n):
    """The rule's answer for the K=5 row: the same as the reference, different, or not shown."""
    secondary = [results.get('never10', ''), results.get('plain1', '')]
    differs = (results['median'].endswith('DIFFER') or any(v.endswith('DIFFER') for v in secondary)
               or results['share_p'] < 0.05)
    same = (results['median'].endswith('AGREE') and not differs)
    answer = ('THE SAME AS THE REFERENCE\'S' if same else 'DIFFERENT FROM THE REFERENCE\'S' if differs
              else 'NOT SHOWN TO BE THE SAME (nor to differ)')
    return ('%sThe K=5 row, by the rule: %s (median: %s; mean of the tasks never above 10: %s; step-1 plain mean: '
            '%s; share of runs with blow-ups: permutation p=%.3f)'
            % ('PARTIAL, %d runs. ' % n if partial else '', answer, results['median'], results.get('never10', '-'),
               results.get('plain1', '-'), results['share_p']))


def representative_seed(figures):
    """The rule's run to release: {seed: K=5 figures} -> the seed whose step-1 plain mean is the
    median of the runs' (odd count: the middle run; even: the lower of the two middle ones)."""
    ranked = sorted(figures, key=lambda s: (figures[s]['plain'][0], s))
    return ranked[(len(ranked) - 1) // 2]


def blow_up_task_lines(task_mses, tasks, k=5):
    """Which test tasks blow up at K (descriptive): for every task that blows up in at least one run,
    its amplitude, phase and support x-positions, in how many runs of each group; then the same
    figures over the tasks that blow up somewhere against all tasks."""
    x, _ = tasks
    amp, phase = reference_task_parameters(len(x), k)
    support = np.sort(x[:, :k, 0].astype(np.float64), axis=1)
    span = support[:, -1] - support[:, 0]
    gap = np.diff(np.concatenate([np.full((len(x), 1), -5.0), support, np.full((len(x), 1), 5.0)], axis=1),
                  axis=1).max(axis=1)
    left = (support < 0).sum(axis=1)
    edge = (np.abs(support) > 4).sum(axis=1)  # near the ends of the input range, where x (and a step's change) is largest
    counts = {g: np.sum([blow_ups(m) for m in runs.values()], axis=0) if runs else np.zeros(len(x), int)
              for g, runs in task_mses.items()}
    hit = np.flatnonzero(sum(counts.values()) > 0)
    lines = ['Tasks that blow up at K=%d in at least one run: %d of %d. Per task: runs (ours of %d, reference of %d), '
             'amplitude, phase, the %d support x (sorted), span, largest gap in [-5, 5], points left of 0, '
             'points with |x| > 4:'
             % (k, len(hit), len(x), len(task_mses['ours']), len(task_mses['reference']), k)]
    for i in hit[np.argsort(-(counts['ours'] + counts['reference'])[hit], kind='stable')]:
        lines.append('task %3d  ours %2d  ref %2d  amp %.2f  phase %.2f  x %s  span %.2f  gap %.2f  left %d  edge %d'
                     % (i, counts['ours'][i], counts['reference'][i], amp[i], phase[i],
                        ' '.join('%+.2f' % v for v in support[i]), span[i], gap[i], left[i], edge[i]))
    # the last line counts each task once per run it blows up in: what a blow-up typically looks like
    runs_hit = (sum(counts.values()))[hit]
    for name, sel in (('tasks blowing up somewhere', hit), ('all tasks', np.arange(len(x))),
                      ('blow-ups (task x run)', np.repeat(hit, runs_hit))):
        lines.append('%-27s n=%3d  amplitude median %.2f [quartiles %.2f, %.2f]  span median %.2f [%.2f, %.2f]  '
                     'largest gap median %.2f  all %d points on one side of 0: %d%%  3 or more with |x| > 4: %d%%'
                     % (name, len(sel), np.median(amp[sel]), *np.percentile(amp[sel], [25, 75]),
                        np.median(span[sel]), *np.percentile(span[sel], [25, 75]), np.median(gap[sel]), k,
                        100 * np.mean((left[sel] == 0) | (left[sel] == k)), 100 * np.mean(edge[sel] >= 3)))
    return lines


def reference_task_parameters(num_tasks=NUM_TASKS, k=K):
    """(amplitudes, phases) of the reference's test tasks."""
    return draw_reference_tasks(num_tasks, k)[1:]


def test_reference(model, x, y, directory):
    """Test every reference run in directory with our evaluation; print its line; return
    {run: {'median', 'train_post', 'escape'}}, or None (with an Error line) when our evaluation
    does not give run1's README figures or a run's own pkl medians."""
    runs = {}
    for run in reference_runs(directory):
        folder = os.path.join(directory, run)
        load_checkpoint(model, folder)
        s = summarize(evaluate_tasks(model, x, y))
        log = os.path.join(folder, 'train_log.txt')
        print(run_line('reference ' + run, s, log, dead_units(model)), flush=True)
        wrong = check_reference_run1(s) if run == 'run1' else []
        theirs = pkl_medians(folder)
        if theirs is not None and any(abs(a - b) > 0.0005 for a, b in zip(s['median'], theirs)):
            wrong.append('medians %s, its pkl %s' % (fmt3(s['median']), fmt3(theirs)))
        if wrong:
            print('Error: our evaluation does not reproduce the reference\'s %s: %s' % (run, '; '.join(wrong)),
                  file=sys.stderr)
            return None
        runs[run] = {'median': s['median'], 'train_post': late_train_loss(log), 'escape': escape_iteration(log)}
    print('%-22s (checked: run1\'s median, mean step 1, divergent count and mean over the others are its README\'s '
          'to the third decimal; every run\'s medians are its own pkl\'s to the third decimal)' % '')
    return runs


def recorded_group(path, group, seeds):
    """A group's runs read from an earlier output (recorded_runs), each line printed again."""
    runs = recorded_runs(path, group, seeds)
    for seed, r in runs.items():
        print('%-22s %-21s %-10s %-9s (recorded in %s)'
              % ('%s seed %d' % (group, seed), fmt3(r['median']), '%.3f' % r['train_post'],
                 r['escape'] if r['escape'] is not None else '-', path))
    return runs


def trained_logs(logdir_template, seeds, label):
    """The train_log.txt of every run of a group trained to 70,000 iterations (as test_group
    selects them); the others are named on stdout and left out."""
    logs = []
    for seed in seeds:
        logdir = logdir_template.format(seed=seed)
        if last_iteration(experiment_dir(logdir)) < ITERATIONS - 1:
            print('%s seed %d: not trained to %d iterations (%s); left out' % (label, seed, ITERATIONS, logdir))
        else:
            logs.append(os.path.join(logdir, 'train_log.txt'))
    return logs


def test_group(model, x, y, logdir_template, seeds, label):
    """Test every run of a group trained to 70,000 iterations; print its line; return
    {seed: {'median', 'train_post', 'escape'}}."""
    runs = {}
    for seed in seeds:
        logdir = logdir_template.format(seed=seed)
        exp_dir = experiment_dir(logdir)
        if last_iteration(exp_dir) < ITERATIONS - 1:
            print('%-22s not trained to %d iterations (%s); left out' % (label % seed, ITERATIONS, exp_dir))
            continue
        load_checkpoint(model, exp_dir)
        s = summarize(evaluate_tasks(model, x, y))
        log = os.path.join(logdir, 'train_log.txt')
        print(run_line(label % seed, s, log, dead_units(model)), flush=True)
        runs[seed] = {'median': s['median'], 'train_post': late_train_loss(log), 'escape': escape_iteration(log)}
    return runs


def parse_args(argv):
    import user_errors  # tools/: a usage error in one line 'Error: ...', exit status 2
    parser = user_errors.ArgumentParser(description=__doc__.split('\n')[0], script=__file__)
    parser.add_argument('--train', metavar='SEEDS', help='train these seeds (e.g. 0-9) to 70,000 iterations '
                        'where not done yet, then evaluate them')
    parser.add_argument('--seeds', metavar='SEEDS', default='0-9', help='seeds to evaluate without training '
                        '(default 0-9; ignored with --train)')
    parser.add_argument('--logdir', help='run folder per seed; {seed} is replaced (default %s, or %s with '
                        '--train-k 10)' % (DEFAULT_LOGDIR, K10_LOGDIR))
    parser.add_argument('--stream', choices=('ours', 'global'), default='ours',
                        help='task stream of the training runs: ours (main.py as is) or global (one numpy stream '
                        'in the reference\'s order, see global_stream_generate; give it its own --logdir)')
    parser.add_argument('--versus', metavar='LOGDIR', help='a second group of runs (run folders, {seed} replaced), '
                        'tested and compared with ours, e.g. the --stream=global runs')
    parser.add_argument('--versus-seeds', metavar='SEEDS', default='0-9', help='seeds of the --versus group')
    parser.add_argument('--versus-name', default='global', help='name of the --versus group in the output')
    parser.add_argument('--check-stream', action='store_true', help='only describe our training task stream '
                        'against SPEC.md\'s distributions (stream_statistics) and exit')
    parser.add_argument('--curves', action='store_true', help='only print the training curves of --seeds '
                        '(and --versus) beside the reference runs\' (curve_lines) and exit')
    parser.add_argument('--train-k', type=int, choices=(5, 10), default=5,
                        help='K the runs are trained with: 5 (the study of 2026-12-02) or 10, the paper\'s '
                        'protocol, tested at K=5 and K=10 against ../shared/reference/%s (k10_study; '
                        '--logdir then defaults to %s)' % (K10_REFERENCE_DIR_NAME, K10_LOGDIR))
    parser.add_argument('--k10-outputs', default=K10_OUTPUTS, help='with --train-k 10: where our runs\' per-task '
                        'MSEs are saved (seedN.npz) and read back (default %(default)s)')
    parser.add_argument('--k10-cache', default=K10_REFERENCE_CACHE, help='with --train-k 10: our evaluation of '
                        'the reference\'s runs, kept so a second comparison need not test them again (default '
                        '%(default)s)')
    parser.add_argument('--no-test', action='store_true', help='with --train: train only, compare later')
    parser.add_argument('--ours-from', metavar='FILE', help='take our runs\' figures (--seeds) from the '
                        '"ours seed N" lines of an earlier output instead of testing their checkpoints')
    parser.add_argument('--versus-from', metavar='FILE', help='the same for the --versus-name group')
    parser.add_argument('--reference', help='folder holding the reference\'s runs (run1/, run2/, seedN/; default '
                        '%s, or its sibling %s with --train-k 10)' % (REFERENCE_DIR, K10_REFERENCE_DIR_NAME))
    args = parser.parse_args(argv)
    for option in ('train', 'seeds', 'versus_seeds'):  # said now, not after a model is built
        try:
            parse_seeds(getattr(args, option) or '')
        except ValueError:
            parser.error('--%s %s: seeds as 0-9 or 0,3,5-7' % (option.replace('_', '-'), getattr(args, option)))
    for option in ('ours_from', 'versus_from'):
        if getattr(args, option) and not os.path.isfile(getattr(args, option)):
            parser.error('--%s %s: no such file' % (option.replace('_', '-'), getattr(args, option)))
    if args.logdir is None:
        args.logdir = K10_LOGDIR if args.train_k == 10 else DEFAULT_LOGDIR
    if args.reference is None:
        args.reference = (os.path.join(os.path.dirname(REFERENCE_DIR), K10_REFERENCE_DIR_NAME) if args.train_k == 10
                          else REFERENCE_DIR)
    return args


if __name__ == '__main__':
    if sys.argv[1:2] == [GLOBAL_STREAM_MODE]:
        run_main_with_global_stream(sys.argv[2:])
    else:
        import user_errors  # tools/: a missing file in one line 'Error: ...', exit status 2
        sys.exit(user_errors.run(lambda: main_study(parse_args(sys.argv[1:]))))
