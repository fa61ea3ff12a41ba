"""tools/inner_steps.py on a small fully connected 5-way 5-shot run: at the run's own step size
it computes main.py's test (the query accuracies of the test pkl, task by task), another
step size changes the steps but not the tasks or the weights, more than 600 tasks go on to
new tasks, and --compare pairs two results task by task."""
import pickle
import subprocess
import sys

import numpy as np
import pytest

import inner_steps
import paper
import reproduce
from conftest import REPO
from runner import describe, run_main, user_env
from synthetic import make_omniglot

EXPERIMENT = 'omniglot-5way-5shot-fc-train5'
TASKS = 150  # of main.py's 600: two batches of the tool, the second a smaller one


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    """A 5-iteration run of the experiment's flags on synthetic data, tested by main.py."""
    data = make_omniglot(str(tmp_path_factory.mktemp('data')), alphabets=31, characters=40, drawings=10)
    logdir = str(tmp_path_factory.mktemp('logs'))
    flags = reproduce.experiment_flags(paper.get(EXPERIMENT), logdir, iterations=5, data_dir=data)
    for extra in ([], ['--train=False', '--test_set=True']):
        proc = run_main(*flags, *extra, cwd=tmp_path_factory.getbasetemp())
        assert proc.returncode == 0, describe(proc)
    pkl = reproduce.per_task_path(reproduce.test_csv_path(flags))
    with open(pkl, 'rb') as f:
        recorded = pickle.load(f)['mses']
    return data, logdir, recorded


def run_tool(run, *args):
    data, logdir, _ = run
    # in its own process, as users run it (in pytest's, TensorFlow took a minute more to exit)
    proc = subprocess.run([sys.executable, str(REPO / 'tools' / 'inner_steps.py'), EXPERIMENT, '--logdir', logdir,
                           '--data_dir', data, *args], env=user_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, describe(proc)
    return proc


@pytest.fixture(scope='module')
def saved(run, tmp_path_factory):
    """The tool at two step sizes on the first TASKS tasks: (its process, its --save .npz)."""
    path = tmp_path_factory.mktemp('steps') / 'steps.npz'
    return run_tool(run, '--update_lrs', '0.4,0.1', '--tasks', str(TASKS), '--save', str(path)), path


def test_at_the_trained_step_size_it_computes_main_py_test_task_by_task(run, saved):
    _, _, recorded = run
    proc, path = saved
    results = np.load(path)
    at_04 = results['0.4']
    assert at_04.shape == (4, 11, TASKS)
    recorded = recorded[:TASKS]
    # column 0 of the test is the pre-update support accuracy, columns 1..10 the query accuracy
    np.testing.assert_allclose(at_04[1, 0], recorded[:, 0], atol=1e-6)
    np.testing.assert_allclose(at_04[3, 1:].T, recorded[:, 1:], atol=1e-6)
    out = proc.stdout
    assert 'largest difference over tasks 0.0000' in out
    assert 'update_lr 0.1 at test (trained with 0.4)' in out
    # the smaller step: the same tasks and weights before any step, other numbers after it
    at_01 = results['0.1']
    np.testing.assert_array_equal(at_01[:, 0], at_04[:, 0])
    assert not np.allclose(at_01[0, 1], at_04[0, 1])


def test_past_600_tasks_it_goes_on_to_new_tasks_and_compare_pairs_the_tasks_both_have(run, saved, tmp_path):
    _, _, recorded = run
    more = 650
    proc = run_tool(run, '--tasks', str(more), '--save', str(tmp_path / 'more.npz'), '--compare', str(saved[1]))
    results = np.load(tmp_path / 'more.npz')['0.4']
    assert results.shape == (4, 11, more)
    np.testing.assert_allclose(results[3, 1:, :600].T, recorded[:, 1:], atol=1e-6)
    assert 'largest difference over tasks 0.0000' in proc.stdout
    # tasks 600.. are others than 0..: their support cross-entropies before any step differ
    assert not np.allclose(results[0, 0, 600:], results[0, 0, :more - 600])
    # the same weights and step size on the same first TASKS tasks: a zero difference at every step
    paired = proc.stdout.split('paired against')[1].splitlines()
    assert 'query acc difference over %d tasks' % TASKS in paired[1]
    assert [line.split()[1:] for line in paired[2:13]] == [['+0.00', '+-', '0.00']] * 11


def test_the_train_split_gives_tasks_of_the_training_classes(run, saved, tmp_path):
    proc = run_tool(run, '--split', 'train', '--tasks', '20', '--save', str(tmp_path / 'train.npz'))
    assert 'train split, 20 tasks' in proc.stdout
    train = np.load(tmp_path / 'train.npz')['0.4']
    test = np.load(saved[1])['0.4'][:, :, :20]
    assert train.shape == test.shape
    # other images than the test tasks': other support cross-entropies before any step
    assert not np.allclose(train[0, 0], test[0, 0])


def test_paired_table_gives_the_mean_difference_and_its_paired_ci():
    rng = np.random.default_rng(0)
    other = rng.uniform(size=(4, 2, 400))
    shift = np.where(np.arange(400) % 2, 0.1, 0.0)  # +0.05 on average, std 0.05 over tasks
    results = other + shift
    lines = inner_steps.paired_table(results, other[:, :, :300])
    assert 'over 300 tasks' in lines[0]
    expected_ci = 100 * 1.96 * 0.05 / np.sqrt(300)
    assert lines[1].split() == ['0', '+5.00', '+-', '%.2f' % expected_ci]


def test_compare_refuses_results_of_other_steps_or_step_sizes(tmp_path):
    path = tmp_path / 'other.npz'
    np.savez(path, **{'0.4': np.zeros((4, 4, 10))})
    with pytest.raises(SystemExit, match='3 steps, this run 10'):
        inner_steps.load_compared(str(path), 0.4, 10)
    with pytest.raises(SystemExit, match='no results at update_lr 0.1'):
        inner_steps.load_compared(str(path), 0.1, 3)
    assert inner_steps.load_compared(str(path), 0.4, 3).shape == (4, 4, 10)


def test_a_regression_experiment_is_refused():
    with pytest.raises(SystemExit):
        inner_steps.parse_args(['sinusoid-5shot'])
