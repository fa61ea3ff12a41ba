"""Time one meta-training iteration of the reference MAML (cbfinn/maml, TF1) under TF 2.x compat.v1.

    python tools/implementations/run_reference.py --reference PATH --cf v1|v2 --order second|first --steps 10 --warmup 3
    python tools/implementations/run_reference.py --reference PATH --cf v1 --order second --check 20   # losses on a fixed batch
    python tools/implementations/run_reference.py --reference PATH --profile --steps 10 --warmup 3     # op profile
    python tools/implementations/run_reference.py --reference PATH --gradcheck DIR     # weights, batch, meta-gradient for gradcompare.py

--reference (or the environment variable MAML_REFERENCE_DIR) is the folder of a clone of cbfinn/maml
(maml.py, utils.py, main.py, data_generator.py, special_grads.py); its files are imported from there
as they are, unmodified, and nothing of them is copied. Before they are imported, shim modules are put
in sys.modules: `tensorflow` -> tf.compat.v1 (plus `contrib`), `tensorflow.contrib.layers[.python.layers]`
-> tf_slim's layers and initializers, `tensorflow.contrib.metrics` -> tf_slim.metrics.
--cf v1: tf.compat.v1.disable_v2_behavior() (v1 control flow: Enter/Exit/Switch/Merge loops, ref variables).
--cf v2: TensorFlow 2 defaults (functional While, resource variables), graph mode via tf.Graph + Session.
The graph is the reference's main.py for training on Omniglot: MAML(784, 5, test_num_updates=10)
(main.py uses 10 for omniglot), construct_model(input_tensors=None, prefix='metatrain_'), and what
is timed is sess.run(model.metatrain_op, feed_dict) on synthetic batches (the project's
benchmark.synthetic_batch) fed through the placeholders.
Environment switches: REF_NORM=batch_norm|layer_norm|None (the reference's --norm; default batch_norm);
REF_FUSED=0: tf_slim's batch_norm with fused=False, the non-fused path (shim).
Prints one JSON line.
"""
import argparse
import json
import os
import statistics
import sys
import types
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = str(Path(__file__).resolve().parents[2])  # this repository (tools/implementations/ is two folders down)
REFERENCE_FILES = ('main.py', 'maml.py', 'utils.py', 'data_generator.py')


def reference_dir(path):
    """The absolute path of a cbfinn/maml clone, or a UserError saying what is wrong."""
    UserError = user_errors().UserError
    how = ('pass --reference DIR or set MAML_REFERENCE_DIR to the folder of a clone of '
           'https://github.com/cbfinn/maml (the folder holding maml.py, utils.py, main.py)')
    if not path:
        raise UserError('the reference MAML is needed: ' + how)
    path = os.path.abspath(os.path.expanduser(path))
    if not os.path.isdir(path):
        raise UserError('reference folder %s does not exist: %s' % (path, how))
    missing = [f for f in REFERENCE_FILES if not os.path.isfile(os.path.join(path, f))]
    if missing:
        raise UserError('reference folder %s has no %s: %s' % (path, ', '.join(missing), how))
    if os.path.realpath(path) == os.path.realpath(REPO):
        raise UserError('%s is this repository (the TF2 reproduction), not the reference: %s' % (path, how))
    return path


def project_module(name):
    """This repository's tools/NAME.py, imported by path: the repository is not put on sys.path, where
    its main.py, maml.py and utils.py would stand for the reference's modules of the same names."""
    import importlib.util
    module_name = 'maml_tf2_' + name
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, os.path.join(REPO, 'tools', name + '.py'))
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return sys.modules[module_name]


def user_errors():
    """tools/user_errors.py, by path as project_module loads it: one-line errors, exit status 2."""
    return project_module('user_errors')


def time_steps(benchmark, step, batches, args, info):
    """step(batch) --warmup + --steps times (benchmark.timed_calls), cycling over the batches; prints
    info with the median of the timed steps as one JSON line. Also used by run_torch.py."""
    import itertools
    cycle = itertools.cycle(batches)
    times = benchmark.timed_calls(lambda: step(next(cycle)), args.warmup + args.steps)
    timed = times[args.warmup:]
    info.update(median_s=statistics.median(timed), steps=args.steps, warmup=args.warmup,
                first_step_s=times[0], times=[round(t, 5) for t in timed])
    print(json.dumps(info), flush=True)


def install_shims(real_tf):
    for package in ('tf_slim', 'tf_keras'):  # the reference's tf.contrib, and TensorFlow's legacy layers
        user_errors().optional_import(package, 'the reference under TensorFlow 2 (run_reference.py)')
    import tf_slim
    import tf_slim.layers
    import tf_slim.metrics
    tf1 = real_tf.compat.v1

    def forwarding_module(name, *targets, **attrs):
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)

        def __getattr__(attr):
            for t in targets:
                if hasattr(t, attr):
                    return getattr(t, attr)
            raise AttributeError('%s has no attribute %r (shim)' % (name, attr))
        mod.__getattr__ = __getattr__
        return mod

    extra = {}
    if os.environ.get('REF_FUSED') == '0':  # tf_slim's batch_norm(fused=False): the non-fused path
        import functools
        extra['batch_norm'] = functools.partial(tf_slim.layers.batch_norm, fused=False)
    layers_pkg = forwarding_module('tensorflow.contrib.layers.python.layers', tf_slim.layers, tf_slim, **extra)
    python_pkg = forwarding_module('tensorflow.contrib.layers.python', layers=layers_pkg)
    contrib_layers = forwarding_module('tensorflow.contrib.layers', tf_slim.layers, tf_slim, python=python_pkg)
    contrib_metrics = forwarding_module('tensorflow.contrib.metrics', tf_slim.metrics)
    contrib = forwarding_module('tensorflow.contrib', layers=contrib_layers, metrics=contrib_metrics)
    shim = forwarding_module('tensorflow', tf1, contrib=contrib, __path__=list(real_tf.__path__),
                             __version__=real_tf.__version__)
    # tf.compat.v1.layers.BatchNormalization (which tf_slim's batch_norm uses, as contrib's did) is loaded
    # lazily by TensorFlow from 'tf_keras.legacy_tf_layers.normalization'; the tf-keras wheel ships that
    # module as tf_keras.src.legacy_tf_layers.normalization: alias it.
    import tf_keras.src.legacy_tf_layers.normalization as legacy_bn
    sys.modules.setdefault('tf_keras.legacy_tf_layers', sys.modules['tf_keras.src.legacy_tf_layers'])
    sys.modules.setdefault('tf_keras.legacy_tf_layers.normalization', legacy_bn)
    sys.modules.update({
        'tensorflow': shim,
        'tensorflow.contrib': contrib,
        'tensorflow.contrib.layers': contrib_layers,
        'tensorflow.contrib.layers.python': python_pkg,
        'tensorflow.contrib.layers.python.layers': layers_pkg,
        'tensorflow.contrib.metrics': contrib_metrics,
    })


def main():
    p = user_errors().ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     script=__file__)
    p.add_argument('--reference', default=os.environ.get('MAML_REFERENCE_DIR'),
                   help='folder of a clone of cbfinn/maml (default: $MAML_REFERENCE_DIR)')
    p.add_argument('--cf', choices=('v1', 'v2'), default='v1')
    p.add_argument('--order', choices=('second', 'first'), default='second')
    p.add_argument('--steps', type=int, default=10)
    p.add_argument('--warmup', type=int, default=3)
    p.add_argument('--test_num_updates', type=int, default=10,
                   help="MAML(test_num_updates=...): main.py uses 10 for omniglot; the graph then builds 10 "
                        "inner steps per task even though training uses num_updates=1")
    p.add_argument('--gradcheck', help='save initial weights (TF1 checkpoint), a batch and the meta-gradient here')
    p.add_argument('--profile', action='store_true', help='op profile (benchmark.op_profile) instead of timing')
    p.add_argument('--check', type=int, default=0, help='instead of timing: N steps on one fixed batch, print losses')
    args = p.parse_args()
    ref_dir = reference_dir(args.reference)
    benchmark = project_module('benchmark')

    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
    import numpy as np
    import tensorflow as real_tf
    tf1 = real_tf.compat.v1
    if args.cf == 'v1':
        tf1.disable_v2_behavior()
    install_shims(real_tf)

    sys.path.insert(0, ref_dir)
    import main as ref_main  # noqa: F401  (defines the reference's flags)
    from maml import MAML
    from absl import flags  # tensorflow.python.platform.flags re-exports absl.flags: the same FLAGS
    FLAGS = flags.FLAGS
    argv = ['main.py', '--datasource=omniglot', '--metatrain_iterations=60000', '--meta_batch_size=32',
            '--update_batch_size=1', '--update_lr=0.4', '--num_updates=1', '--num_classes=5',
            '--norm=%s' % os.environ.get('REF_NORM', 'batch_norm'), '--num_filters=64', '--conv=True', '--max_pool=False',
            '--stop_grad=%s' % (args.order == 'first')]
    FLAGS(argv)

    graph = tf1.Graph()
    with graph.as_default():
        tf1.set_random_seed(0)
        model = MAML(784, 5, test_num_updates=args.test_num_updates)
        model.construct_model(input_tensors=None, prefix='metatrain_')
        model.summ_op = tf1.summary.merge_all()
        init = tf1.global_variables_initializer()
        op_types = {o.type for o in graph.get_operations()}
        n_params = sum(int(np.prod(v.shape.as_list())) for v in tf1.trainable_variables())
        sess = tf1.Session(graph=graph)
        sess.run(init)

    rng = np.random.default_rng(0)
    config, tasks, k_support, k_query = benchmark.CONFIGS['omniglot_5w1s']
    batches = [benchmark.synthetic_batch(config, tasks, k_support, k_query, rng) for _ in range(4)]

    def feed(b):
        return {model.inputa: b[0], model.inputb: b[1], model.labela: b[2], model.labelb: b[3]}
    control_flow = 'v1 (Enter/Exit)' if 'Enter' in op_types else ('v2 (While op)' if op_types & {'While', 'StatelessWhile'} else '?')
    info = {'impl': 'reference-%scf' % args.cf, 'order': args.order, 'threads': len(os.sched_getaffinity(0)),
            'params': n_params, 'control_flow': control_flow, 'test_num_updates': args.test_num_updates,
            'graph_ops': len(graph.get_operations())}

    if args.check:
        fixed = feed(batches[0])
        pre, post = [], []
        for _ in range(args.check):
            _, l1, l2 = sess.run([model.metatrain_op, model.total_loss1, model.total_losses2[0]], fixed)
            pre.append(float(l1))
            post.append(float(l2))
        info.update(check_steps=args.check, loss_pre_first=pre[0], loss_pre_last=pre[-1],
                    loss_post_first=post[0], loss_post_last=post[-1],
                    finite=bool(np.all(np.isfinite(pre + post))), decreased=post[-1] < post[0])
        print(json.dumps(info), flush=True)
        return

    feeds = [feed(b) for b in batches]
    if args.gradcheck:
        os.makedirs(args.gradcheck, exist_ok=True)
        with graph.as_default():
            variables = tf1.trainable_variables()
            grads = tf1.gradients(model.total_losses2[0], variables)
            saver = tf1.train.Saver(variables)
        saver.save(sess, os.path.join(args.gradcheck, 'model0'), write_meta_graph=False)
        g = sess.run(grads, feeds[0])
        np.savez(os.path.join(args.gradcheck, 'ref.npz'), inputa=batches[0][0], inputb=batches[0][1],
                 labela=batches[0][2], labelb=batches[0][3],
                 **{'grad/' + v.op.name: gi for v, gi in zip(variables, g)})
        print('saved', [v.op.name for v in variables])
        return
    if args.profile:
        import collections
        import itertools
        print('graph ops by conv type:', collections.Counter(o.type for o in graph.get_operations() if 'Conv' in o.type))
        print('count_flops (loop body once):', benchmark.count_flops(graph))
        for i in range(args.warmup):
            sess.run(model.metatrain_op, feeds[i % 4])
        cycle = itertools.count()
        prof = benchmark.op_profile(real_tf, lambda: sess.run(model.metatrain_op, feeds[next(cycle) % 4]), args.steps)
        print('\n'.join(benchmark.profile_rows('reference-%scf' % args.cf, args.order, {'profile': prof, 'tasks': 32})))
        return
    time_steps(benchmark, lambda feed: sess.run(model.metatrain_op, feed), feeds, args, info)


if __name__ == '__main__':
    user_errors().run(main)
