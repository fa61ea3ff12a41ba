"""tools/inner_steps.py on a small fully connected 5-way 5-shot run: at the run's own step size
it computes main.py's test (the query accuracies of the test pkl, task by task), and another
step size changes the steps but not the tasks or the weights."""
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

EXPERIMENT = 'omniglot-5way-5shot-fc'
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


def test_at_the_trained_step_size_it_computes_main_py_test_task_by_task(run, tmp_path):
    data, logdir, recorded = run
    # in its own process, as users run it (in pytest's, TensorFlow took a minute more to exit)
    proc = subprocess.run([sys.executable, str(REPO / 'tools' / 'inner_steps.py'), EXPERIMENT, '--logdir', logdir,
                           '--data_dir', data, '--update_lrs', '0.4,0.1', '--tasks', str(TASKS),
                           '--save', str(tmp_path / 'steps.npz')],
                          env=user_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, describe(proc)
    results = np.load(tmp_path / 'steps.npz')
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


def test_a_regression_experiment_is_refused():
    with pytest.raises(SystemExit):
        inner_steps.parse_args(['sinusoid-5shot'])
