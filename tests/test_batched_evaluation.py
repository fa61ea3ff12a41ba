"""main.py --train=False in batches of tasks gives the numbers of one task at a time.

A tiny sinusoid model (fully connected, batch norm over each task's points)
and a tiny Omniglot-layout conv model (synthetic characters) are trained for a
few hundred iterations, then tested with --test_tasks_per_batch=1 (one task at
a time, as the reference) and batched. Each task keeps its own batch-norm
statistics and its own inner gradient, so only float32 rounding may differ:
MSEs agree to 1e-5 relative. An accuracy can flip where two logits of a query
are within rounding of each other (a near-tie of the arg-max): such a flip
moves one prediction, 1/5 of a 5-way 1-shot task's accuracy. So accuracies
must agree task by task except for a few tasks off by exactly one
prediction, and every column's mean by at most one prediction's worth
(1/3000); the test prints how many tasks differ.
"""
import pickle

import numpy as np
import pytest

from runner import describe, read_results_csv, run_main
from synthetic import make_omniglot

TASKS = 600


def evaluate(flags, base, tasks_per_batch, cwd):
    """main.py --train=False --test_tasks_per_batch=N; (its pkl's per-task results [600, 11], its CSV rows).

    base: the results' path without .pkl/.csv."""
    proc = run_main(*flags, '--train=False', '--test_tasks_per_batch=%d' % tasks_per_batch, cwd=cwd)
    assert proc.returncode == 0, describe(proc)
    progress = [line for line in proc.stderr.splitlines() if line.startswith('Tested ')]
    assert progress == ['Tested %d/600 tasks' % n for n in range(100, 601, 100)], describe(proc)
    assert 'Mean validation accuracy/loss, stddev, and confidence intervals' in proc.stdout
    with open(str(base) + '.pkl', 'rb') as f:
        results = pickle.load(f)['mses']
    assert results.shape == (TASKS, 11)
    return results, read_results_csv(str(base) + '.csv')


def train(flags, cwd):
    proc = run_main(*flags, '--metatrain_iterations=301', cwd=cwd)
    assert proc.returncode == 0, describe(proc)


def test_sinusoid_batched_test_equals_one_at_a_time(tmp_path):
    flags = ['--datasource=sinusoid', '--norm=batch_norm', '--update_batch_size=5', '--update_lr=0.01',
             '--logdir=%s' % (tmp_path / 'logs')]
    train(flags, tmp_path)
    base = tmp_path / 'logs' / 'cls_5.mbs_25.ubs_5.numstep1.updatelr0.01batchnorm' / 'test_ubs5_stepsize0.01'
    one, one_csv = evaluate(flags, base, 1, tmp_path)
    # the measured default (all 600 at once), and 7, whose last batch holds the 5 left over
    for tasks_per_batch in (0, 7):
        batched, batched_csv = evaluate(flags, base, tasks_per_batch, tmp_path)
        np.testing.assert_allclose(batched, one, rtol=1e-5, err_msg='per task, %d at once' % tasks_per_batch)
        assert batched_csv[0] == one_csv[0]
        for ours, reference in zip(batched_csv[1:], one_csv[1:]):
            np.testing.assert_allclose(ours, reference, rtol=1e-5)
    # the inner steps move the MSEs far beyond the tolerance: what agrees is the adaptation itself
    assert np.median(np.abs(one[:, 10] - one[:, 0]) / one[:, 0]) > 0.01


@pytest.fixture(scope='module')
def omniglot_data(tmp_path_factory):
    """1240 synthetic characters of 4 drawings: enough for the 1100/100/rest split."""
    return make_omniglot(str(tmp_path_factory.mktemp('data')), alphabets=31, characters=40, drawings=4)


def assert_same_accuracies(batched, one, num_queries):
    """Identical but for near-ties: a differing task is off by one prediction, the means by
    at most one prediction's worth. Returns how many tasks differ anywhere."""
    one_prediction = 1.0 / num_queries
    steps = np.abs(batched - one) / one_prediction
    assert np.allclose(steps, np.round(steps), atol=1e-6)   # whole predictions, nothing else
    assert steps.max() <= 1 + 1e-6, 'a task differs by %d predictions' % round(steps.max())
    differing = int((steps > 0.5).any(axis=1).sum())
    assert differing <= 6, '%d of 600 tasks differ: more than near-ties' % differing
    mean_gap = np.abs(batched.mean(0) - one.mean(0))
    assert mean_gap.max() <= one_prediction / TASKS + 1e-9, mean_gap
    return differing


def test_omniglot_batched_test_equals_one_at_a_time(omniglot_data, tmp_path):
    flags = ['--datasource=omniglot', '--data_dir=%s' % omniglot_data, '--meta_batch_size=4',
             '--update_batch_size=1', '--update_lr=0.4', '--num_filters=16', '--logdir=%s' % (tmp_path / 'logs')]
    train(flags, tmp_path)
    base = tmp_path / 'logs' / 'cls_5.mbs_4.ubs_1.numstep1.updatelr0.4hidden16batchnorm' / 'test_ubs1_stepsize0.4'
    one, one_csv = evaluate(flags, base, 1, tmp_path)
    batched, batched_csv = evaluate(flags, base, 0, tmp_path)
    differing = assert_same_accuracies(batched, one, num_queries=5)
    print('Omniglot: %d of 600 tasks differ by a near-tie (one prediction)' % differing)
    np.testing.assert_allclose(batched_csv[1], one_csv[1], rtol=0, atol=1.0 / (5 * TASKS) + 1e-9)
    assert one[:, 10].mean() > 0.6  # trained well above chance (0.2), so the check is not of noise


@pytest.mark.parametrize('datasource', ['sinusoid', 'omniglot'])
def test_a_tasks_results_do_not_depend_on_the_tasks_beside_it(datasource):
    """Task A alone, beside B and beside C: the same losses, so batch-norm statistics and
    inner gradients are the task's own, whatever shares its batch."""
    import tensorflow as tf
    from maml import MAML, ModelConfig
    rng = np.random.default_rng(0)
    if datasource == 'sinusoid':
        config, dim_input, dim_output = ModelConfig(datasource, norm='batch_norm', update_lr=0.01), 1, 1
    else:
        config, dim_input, dim_output = ModelConfig(datasource, update_batch_size=1, update_lr=0.4,
                                                    num_filters=8), 28 * 28, 5
    model = MAML(dim_input, dim_output, test_num_updates=3, config=config, dtype=tf.float32, seed=0)

    def task():
        """(inputa, inputb, labela, labelb) of one task, 5 examples each."""
        inputs = rng.random([2, 5, dim_input], dtype=np.float32)
        if datasource == 'sinusoid':
            labels = rng.normal(size=[2, 5, 1]).astype(np.float32)
        else:
            labels = np.eye(5, dtype=np.float32)[[rng.permutation(5), rng.permutation(5)]]
        return inputs[0], inputs[1], labels[0], labels[1]

    def losses(*tasks):
        """The first task's losses after 0..3 steps, evaluated with the others beside it."""
        return model.evaluate_tasks([np.stack(parts) for parts in zip(*tasks)], 3)['losses'].numpy()[0]

    a = task()
    alone = losses(a)
    for _ in range(2):
        np.testing.assert_allclose(losses(a, task()), alone, rtol=1e-5)


def small_model(datasource, dtype, max_pool=False):
    import tensorflow as tf
    from maml import MAML, ModelConfig
    if datasource == 'sinusoid':
        config, dim_input, dim_output = ModelConfig(datasource, norm='batch_norm', update_lr=0.01), 1, 1
    else:
        config, dim_input, dim_output = ModelConfig(datasource, update_batch_size=1, update_lr=0.4, num_filters=8,
                                                    max_pool=max_pool), 28 * 28, 5
    return MAML(dim_input, dim_output, test_num_updates=4, config=config, dtype=dtype, seed=0)


def random_tasks(model, num_tasks, rng):
    """(inputa, inputb, labela, labelb), 5 examples a task, as numpy arrays of the model's dtype."""
    dtype = model.dtype.as_numpy_dtype
    inputs = rng.random([2, num_tasks, 5, model.dim_input]).astype(dtype)
    if model.classification:
        labels = np.eye(5, dtype=dtype)[rng.permuted(np.tile(np.arange(5), [2, num_tasks, 1]), axis=-1)]
    else:
        labels = rng.normal(size=[2, num_tasks, 5, 1]).astype(dtype)
    return inputs[0], inputs[1], labels[0], labels[1]


@pytest.mark.parametrize('datasource', ['sinusoid', 'omniglot'])
@pytest.mark.parametrize('precision', ['float32', 'float64'])
def test_the_test_steps_in_a_loop_equal_the_unrolled_steps(datasource, precision):
    """adapt_in_loop runs adapt's ops step by step: every loss and accuracy is the same number."""
    import tensorflow as tf
    model = small_model(datasource, tf.as_dtype(precision))
    assert model.test_steps_in_loop(4)
    batch = [tf.constant(x) for x in random_tasks(model, 3, np.random.default_rng(1))]
    results = {loop: tf.function(lambda *b, loop=loop: model.task_results(*b, 4, loop=loop))(*batch)
               for loop in (False, True)}
    assert set(results[True]) == set(results[False]) == (
        {'losses', 'accuracies'} if model.classification else {'losses'})
    for key in results[False]:
        np.testing.assert_array_equal(results[True][key].numpy(), results[False][key].numpy(), err_msg=key)
    # the losses move with the steps: the check is of adapted numbers
    losses = results[False]['losses'].numpy()
    assert losses.shape == (3, 5) and np.all(np.abs(losses[:, 4] - losses[:, 1]) > 1e-6 * np.abs(losses[:, 1]))


def test_max_pooling_nets_run_the_test_steps_unrolled():
    """In a while loop, TensorFlow 2.21 runs max pooling's gradient on a much slower kernel."""
    import tensorflow as tf
    model = small_model('omniglot', tf.float32, max_pool=True)
    assert not model.test_steps_in_loop(10)
    batch = random_tasks(model, 2, np.random.default_rng(2))
    ops = {op.type for op in model.traced_graph('evaluate_tasks', batch, 10).get_operations()}
    functions = model.traced_graph('evaluate_tasks', batch, 10).as_graph_def().library.function
    body_ops = {node.op for f in functions for node in f.node_def}
    assert 'MaxPoolGrad' in body_ops and not ({'While', 'StatelessWhile'} & (ops | body_ops))
    strided = small_model('omniglot', tf.float32)
    functions = strided.traced_graph('evaluate_tasks', batch, 10).as_graph_def().library.function
    assert {'While', 'StatelessWhile'} & {node.op for f in functions for node in f.node_def}


@pytest.mark.parametrize('datasource', ['sinusoid', 'omniglot'])
def test_tasks_evaluated_in_groups_side_by_side_give_the_same_results(datasource):
    """evaluate_tasks(parts=2 or 3), as main.py's test on several cores: each task's results as in one group.

    In float64, where the numbers do not depend on how many tasks share an op: in float32, oneDNN's
    grouped convolution rounds differently for 7 tasks than for 3 or 4, and 4 inner steps at
    update_lr 0.4 on random images amplified that to 1e-4 relative on one CPU (AMD EPYC, CI of
    2026-12-04) and 1e-6 on another: a bound on that measures the CPU, not the grouping.
    """
    import tensorflow as tf
    model = small_model(datasource, tf.float64)
    batch = random_tasks(model, 7, np.random.default_rng(3))
    whole = model.evaluate_tasks(batch, 4)
    for parts in (2, 3):
        grouped = model.evaluate_tasks(batch, 4, parts=parts)
        np.testing.assert_allclose(grouped['losses'].numpy(), whole['losses'].numpy(), rtol=1e-12)
        if model.classification:
            np.testing.assert_array_equal(grouped['accuracies'].numpy(), whole['accuracies'].numpy())
    with pytest.raises(ValueError, match='cannot be shared'):
        model.evaluate_tasks([x[:1] for x in batch], 4, parts=2)


def test_a_last_batch_smaller_than_the_groups_is_padded_and_the_padding_dropped(monkeypatch):
    """600 tasks in batches of 599 on 2 groups: the last batch holds 1 task, padded to 2 with a repeat
    of it; every task's results equal those of one batch of 600, and the repeat is dropped."""
    import main
    from data_generator import DataGenerator
    import tensorflow as tf
    from maml import MAML, ModelConfig
    monkeypatch.setattr(main, 'FLAGS', type('Flags', (), {'update_batch_size': 5})())
    config = ModelConfig('sinusoid', norm='None', update_batch_size=5, update_lr=0.01)
    model = MAML(1, 1, test_num_updates=main.TEST_NUM_UPDATES, config=config, dtype=tf.float32, seed=0)
    data_generator = DataGenerator(10, 1, datasource='sinusoid', seed=0)
    drawn = []
    make_batches = data_generator.make_batches

    def recording(train, indices, update_batch_size):
        drawn.append(list(indices))
        return make_batches(train=train, indices=indices, update_batch_size=update_batch_size)
    monkeypatch.setattr(data_generator, 'make_batches', recording)
    padded = main.score_test_tasks(model, data_generator, per_batch=599, min_tasks=2, parts=2)
    assert drawn == [list(range(599)), [599, 599]]
    whole = main.score_test_tasks(model, data_generator, per_batch=600)
    assert padded.shape == whole.shape == (TASKS, 11)
    np.testing.assert_allclose(padded, whole, rtol=1e-5)

