"""Meta-gradient of the reference (as run under TF 2.x) against ours, same weights and batch.

    python tools/implementations/run_reference.py --reference PATH --gradcheck DIR   # [REF_NORM=...]
    python tools/implementations/gradcompare.py DIR [--norm batch_norm|layer_norm|None]

DIR holds what run_reference.py --gradcheck saved: the reference's initial weights (TF1 checkpoint
model0) and ref.npz (the batch and the reference's meta-gradient). --norm must be the REF_NORM the
reference ran with (default batch_norm). Ours is this repository's MAML (two folders up), loaded
with the same weights (tf1_checkpoint) and evaluated in float64 (the exact value) and float32.
"""
import argparse
import os
import sys
from pathlib import Path

from run_reference import user_errors  # this folder

REPO = str(Path(__file__).resolve().parents[2])  # this repository (tools/implementations/ is two folders down)
CONFIG = dict(datasource='omniglot', num_classes=5, update_batch_size=1, update_lr=0.4, num_updates=1)


def parse_args():
    p = user_errors().ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     script=__file__)
    p.add_argument('dir', help='the folder run_reference.py --gradcheck wrote')
    p.add_argument('--norm', default='batch_norm', choices=('batch_norm', 'layer_norm', 'None'),
                   help="the reference's --norm (REF_NORM) for that run (default: batch_norm)")
    args = p.parse_args()
    # before TensorFlow is imported: a wrong folder is said at once
    missing = [f for f in ('ref.npz', 'model0.index') if not os.path.isfile(os.path.join(args.dir, f))]
    if missing:
        p.error('%s has no %s: give the folder run_reference.py --gradcheck wrote' % (args.dir, ', '.join(missing)))
    return args


def main():
    args = parse_args()
    d, norm = args.dir, args.norm
    sys.path.insert(0, REPO)
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
    import utils  # noqa: F401  (before TensorFlow, as main.py: it enables the oneDNN kernels)
    import numpy as np
    import tensorflow as tf
    import tf1_checkpoint
    from maml import MAML, ModelConfig
    ref = np.load(os.path.join(d, 'ref.npz'))

    def ours(dtype):
        m = MAML(784, 5, test_num_updates=10, config=ModelConfig(norm=norm, **CONFIG), dtype=dtype, seed=0)
        try:
            names = tf1_checkpoint.load_reference_checkpoint(m, os.path.join(d, 'model0')).names
        except tf1_checkpoint.CheckpointMismatch as exc:  # most likely a --norm other than the run's
            raise user_errors().UserError('%s (is --norm %s the REF_NORM of that run?)' % (exc, norm)) from None
        batch = [tf.constant(ref[k], dtype) for k in ('inputa', 'inputb', 'labela', 'labelb')]
        out, grads = tf.function(lambda *b: m.meta_gradients(*b, num_steps=1, record_all=False))(*batch)
        return {names[n]: g.numpy().astype(np.float64) for n, g in zip(m.variable_names, grads)}
    exact = ours(tf.float64)
    variants = {'reference (TF 2.x, float32)': {k[5:]: ref[k].astype(np.float64) for k in ref.files
                                                if k.startswith('grad/')},
                'ours float32': ours(tf.float32)}
    print('relative error of the meta-gradient against ours in float64 (max |diff| / max |exact|), norm=%s' % norm)
    names = sorted(exact)
    print('%-46s' % '' + ' '.join('%12s' % n.replace('model/', '')[:12] for n in names))
    for label, g in variants.items():
        print('%-46s' % label + ' '.join('%12.1e' % (np.abs(g[n] - exact[n]).max() / np.abs(exact[n]).max())
                                         for n in names))


if __name__ == '__main__':
    user_errors().run(main)
