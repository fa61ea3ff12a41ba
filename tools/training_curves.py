"""A run's training curves from its TensorBoard events, as block means over iterations.

main.py writes, every 100 iterations (metatrain) and at every validation
(metaval, every 500 for images), the post-update accuracy and loss after each
recorded inner step. This prints their means over blocks of iterations, for the
steps asked: how the steps beyond the trained num_updates evolve while only
step num_updates is trained (docs/omniglot-5shot-fc.md).

  python tools/training_curves.py models/omniglot-5way-5shot-fc-train5 --block 5000 --steps 1,2,3,10

Accuracies in %; losses as main.py logs them (the reference's scaling: a
task's summed cross-entropy over its queries divided by K, averaged over tasks).
"""
import collections
import glob
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # utils, for its quiet TensorFlow import

import user_errors  # noqa: E402  (tools/, this script's folder)


def parse_args(argv):
    parser = user_errors.ArgumentParser(description=__doc__.split('\n\n')[0], script=__file__)
    parser.add_argument('run', help='a run folder: the one holding events.out.tfevents.*, or its --logdir '
                        'holding one such folder (models/<experiment>)')
    parser.add_argument('--block', type=int, default=5000, help='iterations per block')
    parser.add_argument('--steps', default='1,2,3,10', help='comma-separated inner steps')
    args = parser.parse_args(argv)
    args.steps = [int(s) for s in args.steps.split(',') if s]
    if args.block < 1 or not args.steps or min(args.steps) < 1:
        parser.error('--block and every step must be at least 1')
    return args


def event_files(run):
    files = sorted(glob.glob(os.path.join(run, 'events.out.tfevents.*')))
    if not files:
        files = sorted(glob.glob(os.path.join(run, '*', 'events.out.tfevents.*')))
    if not files:
        raise user_errors.UserError('no events.out.tfevents.* in %s or its subfolders' % run)
    return files


def read_scalars(files):
    """{tag: {iteration: value}}; a later file's value wins (a resumed run rewrites an iteration)."""
    from utils import tf  # TensorFlow with its start-up notices filtered, as main.py imports it
    scalars = collections.defaultdict(dict)
    for path in files:
        for record in tf.data.TFRecordDataset(path):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                number = value.simple_value if value.HasField('simple_value') else float(tf.make_ndarray(value.tensor))
                scalars[value.tag][event.step] = number
    return scalars


def block_means(series, block):
    """[(first iteration of the block, count, mean)] of {iteration: value}."""
    iterations = np.array(sorted(series))
    values = np.array([series[i] for i in iterations])
    rows = []
    for start in range(0, int(iterations.max()) + 1, block):
        inside = (iterations >= start) & (iterations < start + block)
        if inside.any():
            rows.append((start, int(inside.sum()), float(values[inside].mean())))
    return rows


def table(scalars, prefix, steps, block):
    """Lines: one per block, the accuracies after each step, then the losses."""
    tags = (['%s_Post-update accuracy, step %d' % (prefix, s) for s in steps]
            + ['%s_Post-update loss, step %d' % (prefix, s) for s in steps])
    missing = [t for t in tags if t not in scalars]
    if missing:
        return ['%s: no %s in the events' % (prefix, ', '.join(missing))]
    columns = [block_means(scalars[t], block) for t in tags]
    head = ('%s, means over %d iterations; accuracy after step %s | loss after step %s'
            % (prefix, block, ', '.join(map(str, steps)), ', '.join(map(str, steps))))
    lines = [head]
    for row in zip(*columns):
        start, count = row[0][0], row[0][1]
        accuracies = ' '.join('%6.2f' % (100 * mean) for _, _, mean in row[:len(steps)])
        losses = ' '.join('%8.4f' % mean for _, _, mean in row[len(steps):])
        lines.append('%6d-%6d (%3d values)  %s | %s' % (start, start + block - 1, count, accuracies, losses))
    return lines


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    scalars = read_scalars(event_files(args.run))
    for prefix in ('metaval', 'metatrain'):
        print('\n'.join(table(scalars, prefix, args.steps, args.block)))
        print()


if __name__ == '__main__':
    user_errors.run(main)
