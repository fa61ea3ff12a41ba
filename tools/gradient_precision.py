"""How far a trained run's float32 meta-gradient is from its float64 one, on the training
meta-batches that would come next, beside how far apart two meta-batches' gradients are.

Training runs in float32, and second-order MAML through batch norm is ill-conditioned
there (the golden fixtures' float32 column, docs/tests.md). Were float32 rounding a
sizeable part of a run's meta-gradient, training would follow a different gradient
from the reference's; this measures it on the run's own weights and data. For a
second-order run it also gives the angle between its meta-gradient and the first-order
one (--stop_grad) at the same weights: how much the second-order terms weigh.

  python tools/gradient_precision.py omniglot-20way-1shot --batches 2

The run is models/<experiment>/ (or --logdir), its latest checkpoint or --test_iter's;
the meta-batches are main.py's training stream after that checkpoint's iteration.
"""
import os
import sys
from pathlib import Path

import numpy as np

REPO = str(Path(__file__).resolve().parents[1])
sys.path.insert(0, REPO)

import inner_steps  # noqa: E402  (tools/, this script's folder)
import paper  # noqa: E402
from user_errors import ArgumentParser, run  # noqa: E402

NEGLIGIBLE = 1e-4  # a tensor whose gradient norm is below this share of the largest holds rounding noise only


def parse_args(argv):
    parser = ArgumentParser(description=__doc__.split('\n\n')[0], script=__file__)
    parser.add_argument('experiment', help='an experiment of paper.py (reproduce.py --list)')
    parser.add_argument('--logdir', help='the run\'s --logdir (default: models/<experiment>)')
    parser.add_argument('--data_dir', default='data')
    parser.add_argument('--test_iter', type=int, default=-1, help='the checkpoint of this iteration (default: latest)')
    parser.add_argument('--batches', type=int, default=2, help='meta-batches to measure on')
    args = parser.parse_args(argv)
    if args.batches < 1:
        parser.error('--batches must be at least 1')
    try:
        experiment = paper.get(args.experiment)
    except KeyError as exc:
        parser.error(exc.args[0])
    if experiment.evaluates:
        parser.error('%s trains no model of its own: it evaluates %s\'s; give that' % (experiment.name, experiment.evaluates))
    return args, experiment


def meta_gradient(model, batch):
    """({name: float64 array} of the meta-gradient training takes, before clipping; the query loss
    after num_updates steps) of one meta-batch."""
    import tensorflow as tf
    inputs = [tf.convert_to_tensor(x, model.dtype) for x in batch]
    out, grads = model.meta_gradients(*inputs, num_steps=model.config.num_updates, record_all=False)
    loss = float(out['total_losses2'][model.config.num_updates - 1])
    return {name: g.numpy().astype(np.float64) for name, g in zip(model.variable_names, grads)}, loss


def flat(grads):
    return np.concatenate([np.ravel(grads[name]) for name in sorted(grads)])


def cosine(a, b):
    a, b = flat(a), flat(b)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def relative_error(approx, exact):
    """(||approx - exact|| / ||exact|| over all weights; (name, the same ratio) of the worst tensor
    whose exact gradient is not negligible)."""
    total = float(np.linalg.norm(flat(approx) - flat(exact)) / np.linalg.norm(flat(exact)))
    norms = {name: np.linalg.norm(g) for name, g in exact.items()}
    largest = max(norms.values())
    worst = max(((name, float(np.linalg.norm(approx[name] - exact[name]) / norms[name]))
                 for name in exact if norms[name] > NEGLIGIBLE * largest), key=lambda item: item[1])
    return total, worst


def measure(model, batches):
    """One dict per meta-batch: query loss, float64 gradient norm, float32 against float64 (cosine,
    relative error, worst tensor) and, for a second-order model, the cosine with the first-order
    gradient; and the float64 gradients."""
    import tensorflow as tf
    exact_model = inner_steps.model_copy(model, tf.float64)
    first_order = None if model.config.stop_grad else inner_steps.model_copy(model, tf.float64, stop_grad=True)
    rows, exact_grads = [], []
    for batch in batches:
        exact, loss = meta_gradient(exact_model, batch)
        approx, _ = meta_gradient(model, batch)
        total, worst = relative_error(approx, exact)
        row = {'loss': loss, 'norm': float(np.linalg.norm(flat(exact))), 'cosine': cosine(approx, exact),
               'error': total, 'worst': worst}
        if first_order is not None:
            row['first_order_cosine'] = cosine(meta_gradient(first_order, batch)[0], exact)
        rows.append(row)
        exact_grads.append(exact)
    return rows, exact_grads


def between_batches(exact_grads):
    """Cosines of the float64 gradients of consecutive meta-batches."""
    return [cosine(a, b) for a, b in zip(exact_grads, exact_grads[1:])]


def table(rows):
    second_order = 'first_order_cosine' in rows[0]
    lines = ['batch  query loss  |gradient|   float32 vs float64: cosine  relative error  worst tensor'
             + ('      vs first order: cosine' if second_order else '')]
    for i, row in enumerate(rows):
        name, worst = row['worst']
        line = '%5d  %10.4f  %10.4g  %26.6f  %14.2e  %-12s %.1e' % (
            i, row['loss'], row['norm'], row['cosine'], row['error'], name, worst)
        if second_order:
            line += '  %26.4f' % row['first_order_cosine']
        lines.append(line)
    return lines


def main(argv=None):
    args, experiment = parse_args(sys.argv[1:] if argv is None else argv)
    model, data_generator, choice, exp_dir, iteration = inner_steps.load_run(experiment, args, train=True)
    first = iteration + 1
    batches = [data_generator.make_batch(train=True, index=first + i, update_batch_size=model.config.update_batch_size)
               for i in range(args.batches)]
    print('%s (%s order), %s in %s; %d meta-batch(es) of %d training tasks from iteration %d of the training stream'
          % (experiment.name, 'first' if model.config.stop_grad else 'second', choice, os.path.relpath(exp_dir),
             args.batches, data_generator.batch_size, first))
    print('query loss: the meta-loss (after %d inner steps); |gradient|: the float64 meta-gradient\'s norm; '
          'relative error: |float32 - float64| / |float64|' % model.config.num_updates)
    rows, exact_grads = measure(model, batches)
    print('\n'.join(table(rows)))
    for i, value in enumerate(between_batches(exact_grads)):
        print('float64 gradients of meta-batches %d and %d: cosine %.4f' % (i, i + 1, value))
    return rows, exact_grads


if __name__ == '__main__':
    run(main)
