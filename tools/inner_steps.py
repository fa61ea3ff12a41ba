"""What each inner step does to a trained classification run: support and query loss and accuracy
after 0..10 steps on main.py's 600 test tasks (or more, or validation or training classes), at the
run's own step size and at others.

main.py's test records only the query accuracy after each step. When a run's
accuracy falls after the first step (omniglot-5way-5shot-fc-train5, docs/omniglot-5shot-fc.md),
the support loss tells whether the steps still fit the support set (overfitting
it) or overshoot (the support loss rises too), and smaller test-time step
sizes tell whether the fall belongs to the step size.

  python tools/inner_steps.py omniglot-5way-5shot-fc-train5 --update_lrs 0.4,0.2,0.1

The run is models/<experiment>/ (or --logdir), its latest checkpoint or
--test_iter's. The tasks are main.py's test tasks: at the run's own step size
the query accuracies are checked task by task against the run's test pkl when
there is one (the tool then computes what main.py's test did).

Two runs on the same tasks: save one with --save, and give it to the other with
--compare; the query accuracy differences, task by task, make a paired 95% CI,
much narrower than either run's own. --tasks above 600 goes on to further test
tasks of the same random streams (main.py's test stops at 600):

  python tools/inner_steps.py miniimagenet-5way-1shot --logdir logs/mini --tasks 3000 --save authors.npz
  python tools/inner_steps.py miniimagenet-5way-1shot-fo --tasks 3000 --compare authors.npz
"""
import os
import pickle
import sys
from pathlib import Path

import numpy as np

REPO = str(Path(__file__).resolve().parents[1])
sys.path.insert(0, REPO)

import paper  # noqa: E402
import reproduce  # noqa: E402
from user_errors import ArgumentParser, UserError, run  # noqa: E402  (tools/, this script's folder)

TEST_TASKS = 600
TASKS_PER_BATCH = 100


def parse_args(argv):
    parser = ArgumentParser(description=__doc__.split('\n\n')[0], script=__file__)
    parser.add_argument('experiment', help='a classification experiment of paper.py (reproduce.py --list)')
    parser.add_argument('--logdir', help='the run\'s --logdir (default: models/<experiment>)')
    parser.add_argument('--data_dir', default='data')
    parser.add_argument('--test_iter', type=int, default=-1, help='the checkpoint of this iteration (default: latest)')
    parser.add_argument('--update_lrs', default='', help='comma-separated test-time step sizes '
                        '(default: the run\'s own update_lr only)')
    parser.add_argument('--steps', type=int, default=10)
    parser.add_argument('--tasks', type=int, default=TEST_TASKS,
                        help='the first this many test tasks (main.py tests the first %d)' % TEST_TASKS)
    parser.add_argument('--split', choices=('test', 'val', 'train'), default='test',
                        help='train: tasks of the meta-training classes in the test tasks\' layout (2K images per '
                        'class: K support, K queries), to set what a run fits beside what it generalises to')
    parser.add_argument('--save', help='also write the per-task results to this .npz: one array '
                        '[support CE, support acc, query CE, query acc] x [steps + 1] x [tasks] per step size, '
                        'named by it (\'0.4\')')
    parser.add_argument('--compare', help='a --save .npz of another run on the same split: print the paired '
                        'difference of the query accuracies (this run minus that one) over the tasks both have')
    parser.add_argument('--float64', action='store_true',
                        help='evaluate the checkpoint\'s weights in float64 (rules out float32 rounding)')
    args = parser.parse_args(argv)
    if args.tasks < 1:
        parser.error('--tasks must be at least 1')
    if args.compare and not os.path.isfile(args.compare):
        parser.error('--compare %s: no such file' % args.compare)  # before the evaluation, not after it
    try:
        experiment = paper.get(args.experiment)
    except KeyError as exc:
        parser.error(exc.args[0])
    if not experiment.higher_is_better:
        parser.error('%s is not a classification experiment' % args.experiment)
    return args, experiment


def load_run(experiment, args, train=False):
    """(model, data generator, checkpoint choice, exp dir, iteration) under main.py's flags of the run:
    its test flags (args.split's tasks), or with train its training flags (meta-batches of training
    tasks)."""
    import main
    from data_generator import DataError
    logdir = args.logdir or os.path.join(REPO, 'models', experiment.name)
    flags = reproduce.experiment_flags(experiment, logdir, data_dir=args.data_dir) + ['--test_iter=%d' % args.test_iter]
    if not train:
        flags += ['--train=False', '--test_set=%s' % (args.split == 'test')]
    main.FLAGS.unparse_flags()  # every flag from its default, whatever parsed them before
    main.FLAGS(['inner_steps'] + flags)
    main.fill_train_flags(main.FLAGS)
    exp_dir = os.path.join(logdir, main.experiment_name(main.FLAGS))
    try:
        data_generator, model = main.build(train=train)  # the data checked first, then TensorFlow imported
    except (DataError, main.FlagError) as exc:
        raise UserError(str(exc)) from None
    from tf1_checkpoint import CheckpointMismatch
    ckpt = main.Checkpoints(model, exp_dir, write=False)
    try:
        path = ckpt.path_for(args.test_iter)
        if path is None:
            raise UserError('no checkpoint in %s' % exp_dir)
        iteration = ckpt.restore(path, optimizer_state=False)
    except (main.DamagedCheckpoint, CheckpointMismatch) as exc:
        raise UserError(str(exc)) from None
    return model, data_generator, ckpt.choice, exp_dir, iteration


def model_copy(model, dtype, stop_grad=None):
    """A copy of the model with its weights in dtype, with another --stop_grad if given."""
    import dataclasses
    from maml import MAML
    config = model.config if stop_grad is None else dataclasses.replace(model.config, stop_grad=stop_grad)
    copy = MAML(model.dim_input, model.dim_output, test_num_updates=model.test_num_updates,
                config=config, dtype=dtype)
    copy.assign({name: v.numpy() for name, v in model.named_variables().items()})
    return copy


def step_function(model, steps):
    """tf.function(inputa, inputb, labela, labelb, update_lr): for tasks [T, ...], an array
    [4, steps + 1, T] of mean support cross-entropy, support accuracy, query cross-entropy and
    query accuracy after 0..steps inner steps at update_lr (a tensor: one trace for every value)."""
    import tensorflow as tf
    from utils import accuracy

    def mean_xent(output, label):
        return tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels=label, logits=output), axis=1)

    def run(inputa, inputb, labela, labelb, update_lr):
        trained_lr, model.update_lr = model.update_lr, update_lr  # inner_update reads it while this traces
        try:
            fast_weights = model.tile_weights(model.weights, inputa.shape[0])
            rows = []
            for step in range(steps + 1):
                if step:
                    fast_weights, _, _ = model.inner_update(fast_weights, inputa, labela, stop_grad=True,
                                                            recorded=False)
                outputa = model.forward(inputa, fast_weights, differentiated_twice=False)
                outputb = model.forward(inputb, fast_weights, differentiated_twice=False)
                rows.append(tf.stack([mean_xent(outputa, labela), accuracy(outputa, labela),
                                      mean_xent(outputb, labelb), accuracy(outputb, labelb)]))
            return tf.stack(rows, axis=1)
        finally:
            model.update_lr = trained_lr

    return tf.function(run, autograph=False)


def per_task_results(model, data_generator, function, update_lr, update_batch_size, tasks=TEST_TASKS,
                     train=False):
    """[4, steps + 1, tasks] float64 over main.py's first test tasks, or the first training tasks of
    the same layout (function: step_function's).

    Every batch holds TASKS_PER_BATCH tasks, the last one filled up with repeats of its
    last task (dropped from the results), so that the function is traced once.
    """
    import tensorflow as tf
    parts = []
    for start in range(0, tasks, TASKS_PER_BATCH):
        indices = list(range(start, min(start + TASKS_PER_BATCH, tasks)))
        padded = indices + [indices[-1]] * (TASKS_PER_BATCH - len(indices))
        batch = data_generator.make_batches(train=train, indices=padded, update_batch_size=update_batch_size)
        inputs = [tf.convert_to_tensor(x, model.dtype) for x in batch] + [tf.constant(update_lr, model.dtype)]
        parts.append(function(*inputs).numpy()[:, :, :len(indices)])
    return np.concatenate(parts, axis=2).astype(np.float64)


def check_against_pkl(results, pkl_path):
    """Largest |difference| between the query accuracies of steps 1.. and the test pkl's, over the
    tasks both have."""
    with open(pkl_path, 'rb') as f:
        recorded = pickle.load(f)['mses'][:results.shape[2]]
    steps = min(results.shape[1], recorded.shape[1]) - 1
    return float(np.max(np.abs(results[3, 1:steps + 1, :len(recorded)].T - recorded[:, 1:steps + 1])))


def lr_key(update_lr):
    """The name of update_lr's results in a --save .npz: --save writes it, --compare reads it."""
    return '%g' % update_lr


def load_compared(path, update_lr, steps):
    """The [4, steps + 1, tasks] results of update_lr in a --save .npz, with the same steps."""
    saved = np.load(path)
    key = lr_key(update_lr)
    if key not in saved:
        raise UserError('%s has no results at update_lr %s (it has %s)' % (path, key, ', '.join(saved.files)))
    other = saved[key]
    if other.shape[:2] != (4, steps + 1):
        raise UserError('%s holds %d steps, this run %d: use the same --steps' % (path, other.shape[1] - 1, steps))
    return other


def paired_table(results, other):
    """Lines: per step, the mean query accuracy difference (results minus other) over the tasks
    both have (the first ones), with its paired 95% CI, in points."""
    from utils import confidence_summary
    tasks = min(results.shape[2], other.shape[2])
    means, _, ci95 = confidence_summary((results[3, :, :tasks] - other[3, :, :tasks]).T)
    lines = ['step  query acc difference over %d tasks' % tasks]
    for step in range(results.shape[1]):
        lines.append('%4d  %+6.2f +- %4.2f' % (step, 100 * means[step], 100 * ci95[step]))
    return lines


def table(results):
    """Lines: per step, the means over tasks (accuracies in % with their 95% CI, as main.py's test)."""
    from utils import confidence_summary
    (support_ce, _, _), (support_acc, _, support_ci), (query_ce, _, _), (query_acc, _, query_ci) = [
        confidence_summary(values.T) for values in results]
    lines = ['step  support CE  support acc      query CE  query acc']
    for step in range(results.shape[1]):
        lines.append('%4d  %10.4f  %6.2f +- %4.2f  %8.4f  %6.2f +- %4.2f'
                     % (step, support_ce[step], 100 * support_acc[step], 100 * support_ci[step],
                        query_ce[step], 100 * query_acc[step], 100 * query_ci[step]))
    return lines


def main(argv=None):
    args, experiment = parse_args(sys.argv[1:] if argv is None else argv)
    model, data_generator, choice, exp_dir, _ = load_run(experiment, args)
    if args.float64:
        import tensorflow as tf
        model = model_copy(model, tf.float64)
    trained_lr = model.update_lr
    k = int(experiment.flag_value('update_batch_size'))
    lrs = [float(v) for v in args.update_lrs.split(',') if v] or [trained_lr]
    precision = 'float64' if args.float64 else 'float32'
    print('%s, %s split, %d tasks, %s; %s in %s'
          % (experiment.name, args.split, args.tasks, precision, choice, os.path.relpath(exp_dir)))
    print('CE: mean softmax cross-entropy per example; acc: accuracy, mean over tasks +- 95% CI.')
    function = step_function(model, args.steps)
    all_results = {}
    for update_lr in lrs:
        results = per_task_results(model, data_generator, function, update_lr, k, args.tasks,
                                   train=args.split == 'train')
        all_results[update_lr] = results
        print('\nupdate_lr %g at test (trained with %g):' % (update_lr, trained_lr))
        print('\n'.join(table(results)))
        pkl = reproduce.per_task_path(os.path.join(exp_dir, reproduce.csv_name(list(experiment.flags))))
        if update_lr == trained_lr and args.split == 'test' and args.test_iter <= 0 and os.path.exists(pkl):
            print('query accuracy of steps 1..%d against main.py\'s test (%s): largest difference over '
                  'tasks %.4f' % (min(args.steps, 10), os.path.basename(pkl), check_against_pkl(results, pkl)))
        if args.compare:
            print('\npaired against %s (this run minus that one, in points):' % args.compare)
            print('\n'.join(paired_table(results, load_compared(args.compare, update_lr, args.steps))))
    if args.save:
        np.savez(args.save, **{lr_key(lr): results for lr, results in all_results.items()})
    return all_results


if __name__ == '__main__':
    run(main)
