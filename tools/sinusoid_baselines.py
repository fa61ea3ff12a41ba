"""Which sinusoid test tasks diverge under fine-tuning, from a test .pkl (docs/sinusoid-baselines.md).

    python tools/sinusoid_baselines.py models/sinusoid-5shot-oracle/*/test_ubs5_stepsize0.001.pkl
    python tools/sinusoid_baselines.py PKL --curvature         # + each task's curvature against 2/alpha
    python tools/sinusoid_baselines.py PKL --growth 2 --above 0  # tasks whose MSE doubles after step 1
    python tools/sinusoid_baselines.py REFERENCE_PKL --tasks reference

main.py --train=False writes test_ubs{K}_stepsize{alpha}.pkl: {'mses': [tasks, 11]}, column 0 the
pre-update loss on the K support points, column j the query MSE after j inner steps of size alpha.
The tasks themselves are not in the pkl, so they are rebuilt: ours as main.py draws them
(DataGenerator(2K, 1, seed=--seed), the test split; task i is batch i), or the reference's from its
recipe (numpy seeded with 1, then per task amplitude, phase, 2K inputs; --tasks reference).

A task is listed when its query MSE exceeds --above (default 10, the threshold of check.txt's
"mean of tasks never > 10") at some step 1..10, and, with --growth F, when also its largest
MSE after step 1 is more than F times its step-1 MSE.

--curvature reads the checkpoint beside the pkl (ours or the reference's TF1 one) and gives each task
the largest eigenvalue of the Gauss-Newton matrix of its support loss, (2/K) J J^T (J: the
network's outputs on the K support points differentiated by every weight), at the trained weights:
the curvature along which gradient descent with step alpha is stable only when alpha * lambda < 2
(for the linearised network; the Hessian adds the residuals' term, small where the fit is close).
Only numpy and TensorFlow's checkpoint reader are used; no model is built.
"""
import argparse
import glob
import os
import pickle
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # data_generator, utils
from user_errors import ArgumentParser, UserError, run  # noqa: E402  (tools/, beside this file)

STEPS = 10
FILE_NAME = re.compile(r'test_ubs(\d+)_stepsize([0-9.eE+-]+)\.pkl$')
LAYERS = ('w1', 'b1', 'w2', 'b2', 'w3', 'b3')


def parse_args(argv):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, script=__file__)
    p.add_argument('pkl', help='a test_ubs{K}_stepsize{alpha}.pkl written by main.py --train=False (or the reference)')
    p.add_argument('--tasks', choices=('ours', 'reference'), default='ours',
                   help="whose test tasks the pkl holds: main.py's (default) or the reference's recipe")
    p.add_argument('--seed', type=int, default=0, help="main.py's --seed of the test (ours only; default 0)")
    p.add_argument('--split', choices=('test', 'val'), default='test',
                   help="the split main.py tested (ours only): test with --test_set=True (default), else val")
    p.add_argument('--k', type=int, help='support points per task (default: from the file name)')
    p.add_argument('--alpha', type=float, help='the fine-tuning step size (default: from the file name)')
    p.add_argument('--above', type=float, default=10.0, help='list tasks whose MSE exceeds this at some step 1..10')
    p.add_argument('--growth', type=float, help='and whose largest MSE after step 1 exceeds this times the step-1 MSE')
    p.add_argument('--top', type=int, default=20, help='list at most this many tasks, highest peak first (0: all)')
    p.add_argument('--curvature', action='store_true', help="each task's curvature from the checkpoint beside the pkl")
    args = p.parse_args(argv)
    match = FILE_NAME.search(os.path.basename(args.pkl))
    if args.k is None:
        if not match:
            p.error('cannot read K from the file name %s: give --k' % os.path.basename(args.pkl))
        args.k = int(match.group(1))
    if args.alpha is None and match:
        args.alpha = float(match.group(2))
    if args.k < 1 or args.top < 0 or (args.growth is not None and args.growth <= 0):
        p.error('--k must be at least 1, --top at least 0 and --growth above 0')
    return args


def load_mses(path):
    """[tasks, 11] float64 MSEs of a test pkl, or a one-line Error."""
    if not os.path.isfile(path):
        raise UserError('no file %s' % path)
    try:
        with open(path, 'rb') as f:
            mses = np.asarray(pickle.load(f)['mses'], dtype=np.float64)
    except (OSError, pickle.UnpicklingError, KeyError, TypeError, ValueError, EOFError) as exc:
        raise UserError('%s is not a test pkl with an "mses" array (%s: %s)' % (path, type(exc).__name__, exc))
    if mses.ndim != 2 or mses.shape[1] != STEPS + 1:
        raise UserError('%s: mses has shape %s, expected [tasks, %d] (steps 0..%d)' % (path, mses.shape, STEPS + 1, STEPS))
    return mses


## The test tasks ----------------------------------------------------------------------------------

def our_tasks(num_tasks, k, seed=0, split='test'):
    """(x [tasks, 2K], amplitude [tasks], phase [tasks]) as main.py --train=False draws them."""
    from data_generator import DataGenerator
    gen = DataGenerator(2 * k, 1, 'sinusoid', test_set=(split == 'test'), seed=seed)
    parts = [gen.generate(False, i) for i in range(num_tasks)]
    return (np.stack([p[0][0, :, 0] for p in parts]), np.array([p[2][0] for p in parts]),
            np.array([p[3][0] for p in parts]))


def reference_tasks(num_tasks, k):
    """The same for the reference's test (sinusoid_study's recipe): the inputs as float32, as its
    placeholders received them."""
    from sinusoid_study import draw_reference_tasks
    x, amps, phases = draw_reference_tasks(num_tasks, k)
    return x[:, :, 0].astype(np.float32), amps, phases


## Which tasks diverge -----------------------------------------------------------------------------

def diverging(mses, above=10.0, growth=None):
    """Boolean [tasks]: the query MSE exceeds `above` at some step 1..10 (and, with growth, its
    largest MSE after step 1 exceeds growth times its step-1 MSE); nan and inf count as above."""
    hit = ~(mses[:, 1:] <= above).all(axis=1)  # written so that a nan or inf MSE counts as above
    if growth is not None:
        hit &= ~(mses[:, 2:] <= growth * mses[:, 1:2]).all(axis=1)
    return hit


def first_step_above(mses, above):
    """[tasks]: the first step 1..10 whose MSE exceeds `above`, 0 for none."""
    over = ~(mses[:, 1:] <= above)  # nan counts as above
    return np.where(over.any(axis=1), over.argmax(axis=1) + 1, 0)


## Curvature ---------------------------------------------------------------------------------------

def checkpoint_weights(folder):
    """{w1, b1, w2, b2, w3, b3} float64 from the latest checkpoint in folder: ours
    (model/weights/w1/...) or the reference's (model/Variable, model/Variable_1, ... in that order,
    or model/w1, ...; see tf1_checkpoint.py)."""
    paths = sorted(glob.glob(os.path.join(folder, 'model*.index')),
                   key=lambda p: int(re.sub(r'\D', '', os.path.basename(p)) or 0))
    if not paths:
        raise UserError('--curvature: no checkpoint (model*.index) in %s' % folder)
    from utils import tf  # TensorFlow with its start-up notices filtered, as main.py imports it
    reader = tf.train.load_checkpoint(paths[-1][:-len('.index')])
    names = reader.get_variable_to_shape_map()
    candidates = ([('model/weights/%s/.ATTRIBUTES/VARIABLE_VALUE' % n) for n in LAYERS],
                  ['model/' + n for n in LAYERS],
                  ['model/Variable'] + ['model/Variable_%d' % i for i in range(1, len(LAYERS))])
    for keys in candidates:
        if all(key in names for key in keys):
            return {n: reader.get_tensor(key).astype(np.float64) for n, key in zip(LAYERS, keys)}
    raise UserError('--curvature: %s holds no sinusoid network (w1..w3, b1..b3)' % paths[-1])


def output_jacobian(w, inputs):
    """[points, weights] derivative of the network's output (two ReLU layers, as the paper's
    sinusoid network) at each input row, by every weight in the order w1, b1, w2, b2, w3, b3."""
    z1 = inputs @ w['w1'] + w['b1']
    h1 = np.maximum(z1, 0)
    z2 = h1 @ w['w2'] + w['b2']
    h2 = np.maximum(z2, 0)
    dz2 = w['w3'][:, 0] * (z2 > 0)
    dz1 = (dz2 @ w['w2'].T) * (z1 > 0)
    n = len(inputs)
    return np.concatenate([(inputs[:, :, None] * dz1[:, None, :]).reshape(n, -1), dz1,
                           (h1[:, :, None] * dz2[:, None, :]).reshape(n, -1), dz2, h2, np.ones((n, 1))], axis=1)


def curvature(w, support_inputs):
    """Largest eigenvalue of the support loss's Gauss-Newton matrix (2/K) J^T J, from the K x K J J^T."""
    j = output_jacobian(w, support_inputs)
    return float(2.0 / len(support_inputs) * np.linalg.eigvalsh(j @ j.T).max())


def network_inputs(x, amp, phase, dim_input):
    """[tasks, points, dim_input]: x alone, or with the oracle's amplitude and phase beside it."""
    if dim_input == 1:
        return x[:, :, None].astype(np.float64)
    if dim_input == 3:
        task = np.broadcast_to(np.stack([amp, phase], -1)[:, None, :].astype(np.float32), x.shape + (2,))
        return np.concatenate([x[:, :, None], task], -1).astype(np.float64)
    raise UserError('--curvature: the checkpoint takes %d inputs; a sinusoid network takes 1 (x) or 3 (oracle)' % dim_input)


## Report ------------------------------------------------------------------------------------------

def fmt(values, spec='%8.3f'):
    return ' '.join(spec % v if abs(v) < 1e5 else '%8.1e' % v for v in values)


def report(args, mses, x, amp, phase, lam=None):
    n, k = len(mses), args.k
    hit = diverging(mses, args.above, args.growth)
    lines = ['%s: %d tasks, K=%d, step size %s; tasks: %s' % (
        args.pkl, n, k, args.alpha if args.alpha is not None else '?',
        'the reference\'s recipe (numpy seed 1)' if args.tasks == 'reference'
        else 'main.py\'s (seed %d, %s split)' % (args.seed, args.split))]
    lines.append('step       ' + ' '.join('%8d' % s for s in range(STEPS + 1)))
    lines.append('mean       ' + fmt(mses.mean(axis=0)))
    lines.append('median     ' + fmt(np.median(mses, axis=0)))
    lines.append('tasks > %-3g' % args.above + ' '.join('%8d' % c for c in (~(mses <= args.above)).sum(axis=0)))
    rule = 'MSE above %g at some step 1..10' % args.above
    if args.growth is not None:
        rule += ' and largest MSE after step 1 above %g x the step-1 MSE' % args.growth
    firsts = first_step_above(mses[hit], args.above)
    lines.append('Tasks with %s: %d of %d; first step above %g: %s' % (
        rule, hit.sum(), n, args.above, ', '.join('step %d: %d' % (s, c) for s, c in zip(*np.unique(firsts, return_counts=True)))
        or 'none'))
    if hit.any():
        lines.append('Mean over the other %d tasks: %s' % ((~hit).sum(), fmt(mses[~hit].mean(axis=0), '%.3f')) if (~hit).any() else '')
    support = np.sort(x[:, :k].astype(np.float64), axis=1)
    peak = np.nan_to_num(mses[:, 1:], nan=np.inf).max(axis=1)
    order = np.flatnonzero(hit)[np.argsort(-peak[hit], kind='stable')]
    shown = order if args.top == 0 else order[:args.top]
    if len(shown):
        lines.append('task  amp   phase  support x (sorted)%s  first peak  MSE at steps 0..10'
                     % (' ' * max(0, 6 * k - 18)) + ('   curvature' if lam is not None else ''))
        for i in shown:
            lines.append('%4d  %.2f  %.2f   %s  %5d %4d  %s%s' % (
                i, amp[i], phase[i], ' '.join('%+5.2f' % v for v in support[i]), first_step_above(mses[i:i + 1], args.above)[0],
                int(np.argmax(np.nan_to_num(mses[i, 1:], nan=np.inf))) + 1, fmt(mses[i], '%.3g'), '   %.0f' % lam[i] if lam is not None else ''))
        if len(order) > len(shown):
            lines.append('(%d more; --top 0 lists all)' % (len(order) - len(shown)))
    for name, sel in (('listed tasks', hit), ('all tasks', np.ones(n, bool))):
        if sel.any():
            lines.append('%-12s n=%3d  amplitude median %.2f [quartiles %.2f, %.2f]  phase median %.2f  support span median %.2f'
                         % (name, sel.sum(), np.median(amp[sel]), *np.percentile(amp[sel], [25, 75]), np.median(phase[sel]),
                            np.median(support[sel, -1] - support[sel, 0])))
    if lam is not None:
        lines.append('Curvature (largest eigenvalue of the support loss\'s Gauss-Newton matrix at the trained weights): '
                     'median %.0f, 5%%-95%% %.0f-%.0f' % (np.median(lam), *np.percentile(lam, [5, 95])))
        if args.alpha:
            limit = 2.0 / args.alpha
            unstable = lam > limit
            lines.append('2/alpha = %.0f: %d tasks above it, %d of them listed; listed tasks at or below it: %d'
                         % (limit, unstable.sum(), (unstable & hit).sum(), (hit & ~unstable).sum()))
    return lines


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    mses = load_mses(args.pkl)
    if args.tasks == 'reference':
        x, amp, phase = reference_tasks(len(mses), args.k)
    else:
        x, amp, phase = our_tasks(len(mses), args.k, args.seed, args.split)
    lam = None
    if args.curvature:
        w = checkpoint_weights(os.path.dirname(os.path.abspath(args.pkl)))
        inputs = network_inputs(x[:, :args.k], amp, phase, w['w1'].shape[0])
        lam = np.array([curvature(w, task) for task in inputs])
    print('\n'.join(line for line in report(args, mses, x, amp, phase, lam) if line))
    return 0


if __name__ == '__main__':
    sys.exit(run(main))
