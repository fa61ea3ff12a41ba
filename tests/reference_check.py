"""Compare the model with golden fixtures computed by the reference code.

    python tests/reference_check.py [--replicas N] [--float64_only] [FILE.npz ...]

Without files: every fixture in tests/golden (the compact form, see its
README.md); files in the original layout (../shared/reference/golden/*.npz)
are read as well. For each fixture: build the model from its flags in
float64, load init/*, run the meta-batch, and compare the losses,
accuracies, meta-gradients and the weights after one Adam step, as
tests/golden/README.md defines the errors. One line per fixture; exit status 1 if any float64 error exceeds its
bound. The same errors in float32 are printed for information. With
--replicas N the model is built under tf.distribute.MirroredStrategy over N
logical CPU devices, and each replica runs its share of the fixture's tasks.
Each fixture then also runs in one replica, and the float64 losses,
accuracies and meta-gradients of both must agree to 1e-12 (relative).
--float64_only skips the float32 columns.
"""
import json
import os
import sys

import numpy as np

TESTS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(TESTS))
sys.path.insert(0, TESTS)

import utils  # noqa: E402,F401  (before TensorFlow: it enables the oneDNN kernels)
import tensorflow as tf  # noqa: E402
tf.get_logger().setLevel("ERROR")  # a model per fixture: the retracing warnings are expected

from golden import compact  # noqa: E402
from maml import MAML, ModelConfig  # noqa: E402

BOUNDS = {'loss': 1e-6, 'acc': 1e-6, 'grad': 1e-6, 'adam': 1e-5}
FIXTURES = sorted(str(p) for p in compact.HERE.glob('*.npz'))  # the in-repo fixtures, compact form


def load_fixture(path):
    """A fixture under its original keys, from either layout; the flags decoded."""
    fixture = compact.load(path)
    fixture['flags'] = json.loads(str(fixture.pop('flags_json')))
    return fixture


STRATEGY = None  # set by --replicas
STRATEGY_OFF = False  # True while the one-replica run of a fixture is built
FLOAT64_ONLY = False


def build_model(fixture, dtype):
    """The model a fixture's flags describe, with the fixture's initial weights."""
    if STRATEGY is not None and not STRATEGY_OFF:
        with STRATEGY.scope():
            return _build_model(fixture, dtype)
    return _build_model(fixture, dtype)


def _build_model(fixture, dtype):
    flags = fixture['flags']
    config = ModelConfig(**{k: flags[k] for k in (
        'datasource', 'num_classes', 'meta_lr', 'update_batch_size', 'update_lr', 'num_updates',
        'norm', 'num_filters', 'conv', 'max_pool', 'stop_grad')})
    model = MAML(dim_input=fixture['inputa'].shape[-1], dim_output=fixture['labela'].shape[-1],
                 test_num_updates=flags['steps_recorded'], config=config, dtype=dtype)
    init = {k[len('init/'):]: v for k, v in fixture.items() if k.startswith('init/')}
    if set(init) != set(model.variable_names):
        raise ValueError('fixture variables %s != model variables %s'
                         % (sorted(init), sorted(model.variable_names)))
    model.assign(init)
    return model


def run_fixture(fixture, dtype):
    """Our losses, accuracies, gradients and post-Adam weights on the fixture's batch."""
    model = build_model(fixture, dtype)
    batch = [fixture[k] for k in ('inputa', 'inputb', 'labela', 'labelb')]
    out = model.metatrain_step(batch, num_steps=fixture['flags']['steps_recorded'])
    ours = {k: np.asarray(v, dtype=np.float64) for k, v in out.items() if k != 'grads'}
    for name, g in zip(model.variable_names, out['grads']):
        ours['grad/' + name] = np.asarray(g, dtype=np.float64)
    for name, var in model.named_variables().items():
        ours['after_adam/' + name] = var.numpy().astype(np.float64)
    return ours


def relative_scalar_error(ours, ref):
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    return float(np.max(np.abs(ours - ref) / np.maximum(np.abs(ref), 1.0)))


def errors(fixture, ours):
    """The four largest errors as tests/golden/README.md defines them."""
    result = {'loss': max(relative_scalar_error(ours[k], fixture[k])
                          for k in ('total_loss1', 'total_losses2'))}
    if 'total_accuracy1' in fixture:
        result['acc'] = max(relative_scalar_error(ours[k], fixture[k])
                            for k in ('total_accuracy1', 'total_accuracies2'))
    grad_names = [k[len('grad/'):] for k in fixture if k.startswith('grad/')]
    scale = max(np.max(np.abs(fixture['grad/' + n])) for n in grad_names)
    result['grad'] = max(
        np.max(np.abs(ours['grad/' + n] - fixture['grad/' + n]))
        / (np.max(np.abs(fixture['grad/' + n])) + 1e-4 * scale) for n in grad_names)
    meta_lr = fixture['flags']['meta_lr']
    adam = [0.0]
    for n in grad_names:
        if np.max(np.abs(fixture['grad/' + n])) < 1e-4 * scale:
            continue  # gradient is rounding noise: so is its Adam step
        ref_step = fixture['after_adam/' + n] - fixture['init/' + n]
        our_step = ours['after_adam/' + n] - fixture['init/' + n]
        adam.append(np.max(np.abs(our_step - ref_step)) / meta_lr)
    result['adam'] = max(adam)
    return {k: float(v) for k, v in result.items()}


REPLICA_BOUND = 1e-12  # float64: the same sums in another order


def replica_difference(fixture, one, many):
    """Largest relative difference between one replica's and several replicas' losses,
    accuracies and meta-gradients; gradients of rounding-noise size (the biases that batch
    norm removes) are left out, as errors() leaves them out."""
    grad_names = [k for k in one if k.startswith('grad/')]
    scale = max(np.max(np.abs(fixture[k])) for k in grad_names)
    keys = [k for k in one if not k.startswith(('grad/', 'after_adam/'))]
    keys += [k for k in grad_names if np.max(np.abs(fixture[k])) >= 1e-4 * scale]
    return max(float(np.max(np.abs(one[k] - many[k])) / max(np.max(np.abs(one[k])), 1e-300)) for k in keys)


def format_errors(errs):
    return ' '.join('%s %.1e' % (k, v) for k, v in errs.items())


def check(path):
    """Check one fixture; returns (passed, line)."""
    fixture = load_fixture(path)
    ours64 = run_fixture(fixture, tf.float64)
    errs64 = errors(fixture, ours64)
    failed = [k for k, v in errs64.items() if not v <= BOUNDS[k]]
    replicas = ''
    if STRATEGY is not None:
        global STRATEGY_OFF
        strategy, STRATEGY_OFF = STRATEGY, True
        try:
            one = run_fixture(fixture, tf.float64)
        finally:
            STRATEGY_OFF = False
        difference = replica_difference(fixture, one, ours64)
        failed += ['1 vs %d replicas' % strategy.num_replicas_in_sync] if not difference <= REPLICA_BOUND else []
        replicas = ' | 1 vs %d replicas %.1e' % (strategy.num_replicas_in_sync, difference)
    verdict = 'FAIL (%s)' % ', '.join(failed) if failed else 'ok'
    line = '%-12s float64: %s  %s%s' % (os.path.splitext(os.path.basename(path))[0], format_errors(errs64), verdict,
                                       replicas)
    if not FLOAT64_ONLY:
        line += ' | float32 (info): %s' % format_errors(errors(fixture, run_fixture(fixture, tf.float32)))
    return not failed, line


def main(argv):
    global STRATEGY, FLOAT64_ONLY
    if len(argv) > 2 and argv[1] == '--replicas':
        from utils import distribution_strategy
        STRATEGY = distribution_strategy('mirrored', int(argv[2]))
        print('tf.distribute.MirroredStrategy over %d replicas: %s'
              % (STRATEGY.num_replicas_in_sync, ', '.join(STRATEGY.extended.worker_devices)))
        argv = argv[:1] + argv[3:]
    if len(argv) > 1 and argv[1] == '--float64_only':
        FLOAT64_ONLY = True
        argv = argv[:1] + argv[2:]
    if len(argv) > 1 and argv[1].startswith('-'):
        print(__doc__.strip())
        return 2
    paths = argv[1:] or FIXTURES
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing or not paths:
        print('Error: no fixture %s' % (missing[0] if missing else 'in ' + str(compact.HERE)), file=sys.stderr)
        return 2
    all_passed = True
    for path in paths:
        passed, line = check(path)
        print(line, flush=True)
        all_passed &= passed
    print('bounds: loss/acc %.0e, grad %.0e, adam %.0e' % (BOUNDS['loss'], BOUNDS['grad'], BOUNDS['adam']))
    return 0 if all_passed else 1


if __name__ == '__main__':
    sys.exit(main(sys.argv))
