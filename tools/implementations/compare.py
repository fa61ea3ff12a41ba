"""Seconds per MAML meta-training iteration, Omniglot 5-way 1-shot (the paper's configuration), for
several implementations pinned to the same CPU core(s), side by side with the project's benchmark.

    python tools/implementations/compare.py --reference PATH --cores 0 --steps 20 --warmup 3 [--rounds 2]
                                    [--impls a,b,...] [--orders second,first] [--nice 0] [--out FILE.json]

--reference (or the environment variable MAML_REFERENCE_DIR): the folder of a clone of cbfinn/maml
(maml.py, utils.py, main.py, ...), used unmodified; needed by the reference-* implementations only.
Interpreters: reference-*, torch-* and learn2learn run under $MAML_COMPARE_PYTHON (a Python with
tensorflow, tf_slim, tf_keras, torch 2.13 and learn2learn; default: the Python running this script);
ours runs under the Python running this script (the project installed).

Every implementation and order runs in its own subprocess under `taskset -c CORES` (and `nice -n N`
if --nice), one after the other; with --rounds R the whole sequence runs R times, every other round
in reverse order. Each subprocess prints one JSON line; the median of --steps timed steps after
--warmup untimed ones is its s/iter. "x ours" = that s/iter / ours' s/iter for the same order in
the same round (> 1: slower than ours).

Implementations (--impls; default: %(default_impls)s):
%(impl_help)s
TF_ENABLE_ONEDNN_OPTS is removed from the subprocesses' environment (TensorFlow's default; the
project's benchmark then sets what its main.py sets).
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import run_reference  # this folder: reference_dir(), project_module() (TensorFlow is imported only in its main())

HERE = os.path.dirname(os.path.abspath(__file__))
# tf_slim, tf_keras, torch 2.13.0, learn2learn 0.2.0 (see README.md)
COMPARE_PY = os.environ.get('MAML_COMPARE_PYTHON') or sys.executable
OURS_PY = sys.executable  # the project's interpreter (maml-tf2 installed)


def _timing(args, order):
    return ['--order', order, '--steps', str(args.steps), '--warmup', str(args.warmup)]


def _ref(cf, tnu=None, env=()):
    extra = ['--test_num_updates', str(tnu)] if tnu else []
    return lambda o, a: (['env'] + list(env) if env else []) + [
        COMPARE_PY, os.path.join(HERE, 'run_reference.py'), '--reference', a.reference, '--cf', cf] + _timing(a, o) + extra


def _torch(impl):
    return lambda o, a: [COMPARE_PY, os.path.join(HERE, 'run_torch.py'), '--impl', impl] + _timing(a, o)


IMPLS = {
    'reference-v1cf': (_ref('v1'), 'cbfinn/maml TF1 code, unmodified, tf.compat.v1 + tf_slim, '
                       'disable_v2_behavior (v1 control flow), Session, test_num_updates=10 as main.py'),
    'reference-v2cf': (_ref('v2'), 'the same, TF2 defaults in graph mode (control flow v2: functional While)'),
    'torch-loop': (_torch('torch-loop'), 'PyTorch 2.13 functional, Python loop over tasks, autograd.grad'),
    'torch-vmap': (_torch('torch-vmap'), 'PyTorch 2.13 torch.func.vmap over tasks, torch.func.grad inner step'),
    'learn2learn': (_torch('learn2learn'), 'learn2learn 0.2.0 l2l.algorithms.MAML, clone/adapt task loop'),
    'ours': (lambda o, a: [OURS_PY, os.path.join(HERE, 'run_ours.py')] + _timing(a, o),
             "this repository's tools/benchmark.py --configs omniglot_5w1s (MAML.metatrain_step)"),
    'reference-v1cf-unfused': (_ref('v1', env=['REF_FUSED=0']),
                               'reference-v1cf with tf_slim batch_norm(fused=False), the non-fused path (shim)'),
    # not in the default set: the reference built with test_num_updates=1 (10 is what main.py uses)
    'reference-v1cf-tnu1': (_ref('v1', 1), 'reference-v1cf with MAML(test_num_updates=1) (optional)'),
    'reference-v2cf-tnu1': (_ref('v2', 1), 'reference-v2cf with MAML(test_num_updates=1) (optional)'),
}
DEFAULT_IMPLS = ['reference-v1cf', 'reference-v2cf', 'torch-loop', 'torch-vmap', 'learn2learn', 'ours']
__doc__ = __doc__ % {'default_impls': ','.join(DEFAULT_IMPLS),
                     'impl_help': '\n'.join('  %-20s %s' % (k, v[1]) for k, v in IMPLS.items())}

VERSION_SCRIPT = r'''
import json, importlib.metadata as m
out = {}
for p in ("tensorflow", "tf-slim", "tf-keras", "torch", "learn2learn", "numpy", "absl-py"):
    try:
        out[p] = m.version(p)
    except Exception:
        out[p] = None
print(json.dumps(out))
'''


def versions(python):
    try:
        out = subprocess.run([python, '-c', VERSION_SCRIPT], capture_output=True, text=True, timeout=120).stdout
        return json.loads(out.strip().splitlines()[-1])
    except Exception as e:  # noqa: BLE001
        return {'error': str(e)}


def run_one(impl, order, args, env):
    cmd = ['taskset', '-c', args.cores]
    if args.nice:
        cmd += ['nice', '-n', str(args.nice)]
    cmd += IMPLS[impl][0](order, args)
    start = time.time()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=env)
    except subprocess.TimeoutExpired:
        return {'impl': impl, 'order': order, 'error': 'timed out after %d s' % args.timeout}
    result = None
    for line in reversed(proc.stdout.strip().splitlines()):
        if line.startswith('{'):
            try:
                result = json.loads(line)
                break
            except ValueError:
                pass
    if result is None:
        lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
        result = {'error': (lines[-1] if lines else 'exit status %d' % proc.returncode)[:300]}
    result.update(impl=impl, order=order, wall_s=round(time.time() - start, 1), returncode=proc.returncode)
    return result


def results_dir():
    """results/ beside this script if it can be written (it is git-ignored), else a temporary folder."""
    here = os.path.join(HERE, 'results')
    try:
        os.makedirs(here, exist_ok=True)
        if os.access(here, os.W_OK):
            return here
    except OSError:
        pass
    return os.path.join(tempfile.gettempdir(), 'maml-compare-results')


def fmt(x, spec='.4f'):
    return '-' if x is None else format(x, spec)


def main():
    p = run_reference.user_errors().ArgumentParser(description=__doc__, script=__file__,
                                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--cores', default='0', help='taskset -c list, e.g. 0 or 0,1')
    p.add_argument('--steps', type=int, default=10)
    p.add_argument('--warmup', type=int, default=3)
    p.add_argument('--rounds', type=int, default=1)
    p.add_argument('--impls', default=','.join(DEFAULT_IMPLS), help='comma-separated, from: %s' % ', '.join(IMPLS))
    p.add_argument('--orders', default='second,first')
    p.add_argument('--nice', type=int, default=0, help='run the subprocesses under nice -n N (0: no nice)')
    p.add_argument('--timeout', type=int, default=3600, help='seconds per subprocess')
    p.add_argument('--reference', default=os.environ.get('MAML_REFERENCE_DIR'),
                   help='folder of a clone of cbfinn/maml (maml.py, utils.py, main.py, ...); '
                        'default: $MAML_REFERENCE_DIR; needed by the reference-* implementations')
    p.add_argument('--out', help='write all results as JSON here (default: results/compare-DATE.json beside '
                                 'this script, or the temporary folder if that is not writable)')
    args = p.parse_args()
    impls = [i.strip() for i in args.impls.split(',') if i.strip()]
    unknown = [i for i in impls if i not in IMPLS]
    if unknown:
        p.error('unknown impls: %s (choose from %s)' % (', '.join(unknown), ', '.join(IMPLS)))
    if any(i.startswith('reference') for i in impls):
        args.reference = run_reference.reference_dir(args.reference)
    orders = [o.strip() for o in args.orders.split(',') if o.strip()]

    env = dict(os.environ)
    onednn_was = env.pop('TF_ENABLE_ONEDNN_OPTS', None)
    env['TF_CPP_MIN_LOG_LEVEL'] = '3'

    now = datetime.datetime.now().astimezone()
    header = {
        'date': now.isoformat(timespec='seconds'),
        'host_cpu': run_reference.project_module('benchmark').machine_description()[0], 'logical_cpus': os.cpu_count(), 'cores': args.cores,
        'steps': args.steps, 'warmup': args.warmup, 'rounds': args.rounds, 'nice': args.nice,
        'load_average_start': os.getloadavg(),
        'compare_python': COMPARE_PY, 'ours_python': OURS_PY, 'reference_dir': args.reference,
        'versions_compare_python': versions(COMPARE_PY), 'versions_ours': versions(OURS_PY),
        'python': platform.python_version(),
        'TF_ENABLE_ONEDNN_OPTS_in_caller': onednn_was,
    }
    v, vo = header['versions_compare_python'], header['versions_ours']
    print('MAML Omniglot 5-way 1-shot, one meta-training iteration (meta_batch 32, 1 inner step, lr 0.4, Adam 1e-3)')
    print('date %s; %s, %d logical CPUs; taskset -c %s%s; load average at start %.2f %.2f %.2f'
          % (header['date'], header['host_cpu'], header['logical_cpus'], args.cores,
             ', nice -n %d' % args.nice if args.nice else '', *header['load_average_start']))
    print('versions: tensorflow %s (ours: %s), tf_slim %s, tf_keras %s, torch %s, learn2learn %s, numpy %s; python %s'
          % (v.get('tensorflow'), vo.get('tensorflow'), v.get('tf-slim'), v.get('tf-keras'), v.get('torch'),
             v.get('learn2learn'), v.get('numpy'), header['python']))
    print('warm-up %d steps, then median of %d steps; %d round(s); TF_ENABLE_ONEDNN_OPTS unset%s'
          % (args.warmup, args.steps, args.rounds,
             ' (was %r in the caller)' % onednn_was if onednn_was is not None else ''), flush=True)

    results = []  # dicts with 'round'
    for r in range(args.rounds):
        sequence = impls if r % 2 == 0 else list(reversed(impls))
        for impl in sequence:
            for order in orders:
                res = run_one(impl, order, args, env)
                res['round'] = r + 1
                results.append(res)
                print('  [round %d] %-20s %-6s %s  (%.0f s wall)'
                      % (r + 1, impl, order, fmt(res.get('median_s')) if 'median_s' in res else
                         'ERROR: ' + str(res.get('error')), res.get('wall_s', 0)), file=sys.stderr, flush=True)

    def get(impl, order, rnd):
        for res in results:
            if res['impl'] == impl and res['order'] == order and res['round'] == rnd:
                return res
        return None

    cols = ['impl', 'order', 'thr']
    for r in range(args.rounds):
        cols += ['r%d s/iter' % (r + 1), 'r%d x ours' % (r + 1)]
    if args.rounds > 1:
        cols += ['median s/iter', 'median x ours']
    widths = [20, 6, 3] + [12] * (len(cols) - 3)
    line = lambda vals: '  '.join(str(x).ljust(w) if i < 2 else str(x).rjust(w)
                                  for i, (x, w) in enumerate(zip(vals, widths))).rstrip()
    print()
    print(line(cols))
    print(line(['-' * w for w in widths]))
    notes = []
    for impl in impls:
        for order in orders:
            vals, times, ratios, thr = [impl, order], [], [], '-'
            for r in range(1, args.rounds + 1):
                res, ours = get(impl, order, r), get('ours', order, r)
                t = res.get('median_s') if res else None
                to = ours.get('median_s') if ours else None
                if res and 'threads' in res:
                    thr = res['threads']
                if res and 'error' in res:
                    notes.append('%s %s round %d: ERROR %s' % (impl, order, r, res['error']))
                ratio = t / to if (t is not None and to) else None
                vals += [fmt(t), fmt(ratio, '.2f')]
                if t is not None:
                    times.append(t)
                if ratio is not None:
                    ratios.append(ratio)
            if args.rounds > 1:
                vals += [fmt(statistics.median(times) if times else None),
                         fmt(statistics.median(ratios) if ratios else None, '.2f')]
            vals.insert(2, thr)
            print(line(vals))
    print('\nx ours = s/iter / ours\' s/iter, same order, same round (>1: slower than ours). thr: threads '
          '(cores in the affinity mask; torch.set_num_threads, TF\'s default pools).')
    for impl in impls:
        print('  %-20s %s' % (impl, IMPLS[impl][1]))
    for n in notes:
        print('NOTE: ' + n)
    header['load_average_end'] = os.getloadavg()
    print('load average at end %.2f %.2f %.2f' % header['load_average_end'])

    out = args.out or os.path.join(results_dir(), 'compare-%s.json' % now.strftime('%Y%m%d-%H%M%S'))
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, 'w') as f:
        json.dump({'header': header, 'results': results}, f, indent=1)
    print('raw results: %s' % out)
    return 0


if __name__ == '__main__':
    sys.exit(run_reference.user_errors().run(main))
