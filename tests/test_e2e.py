"""End to end through main.py, as a user runs it: train, then --train=False."""
import os
import pickle

import numpy as np
import pytest

import utils
from runner import describe, iteration_lines, read_results_csv, run_main
from synthetic import make_omniglot

SINUSOID = ['--datasource=sinusoid', '--norm=None', '--update_batch_size=10']


@pytest.fixture
def workdir(tmp_path):
    """An empty current directory: nothing may be written there, only under --logdir."""
    cwd = tmp_path / 'cwd'
    cwd.mkdir()
    yield cwd
    assert os.listdir(cwd) == [], 'main.py wrote into the current directory'


def test_sinusoid_training_lowers_the_loss_and_testing_writes_csv_and_pkl(tmp_path, workdir):
    logdir = tmp_path / 'logs'
    train = run_main(*SINUSOID, '--metatrain_iterations=3001', '--logdir=%s' % logdir, cwd=workdir)
    assert train.returncode == 0, describe(train)
    lines = iteration_lines(train.stdout)
    assert sorted(lines) == [1000, 2000, 3000]
    pre, post = zip(*[(float(a), float(b)) for _, (a, b) in sorted(lines.items())])
    assert post[-1] < post[0]           # meta-training lowers the post-update loss
    assert post[-1] < pre[-1]           # and one inner step helps
    exp_dir = logdir / 'cls_5.mbs_25.ubs_10.numstep1.updatelr0.001nonorm'
    assert (exp_dir / 'model-3000.index').exists()
    assert any(name.startswith('events.out.tfevents') for name in os.listdir(exp_dir))

    test = run_main(*SINUSOID, '--train=False', '--logdir=%s' % logdir, cwd=workdir)
    assert test.returncode == 0, describe(test)
    header, means, stds, ci95 = read_results_csv(exp_dir / 'test_ubs10_stepsize0.001.csv')
    assert header == ['update%d' % i for i in range(11)]
    with open(exp_dir / 'test_ubs10_stepsize0.001.pkl', 'rb') as f:
        mses = pickle.load(f)['mses']
    assert mses.shape == (600, 11)
    np.testing.assert_allclose(means, mses.mean(0), rtol=1e-6)
    np.testing.assert_allclose(ci95, 1.96 * mses.std(0) / np.sqrt(600), rtol=1e-6)
    assert means[10] < means[1] < means[0]  # the adapted model fits the task better with each step


@pytest.fixture(scope='module')
def omniglot_data(tmp_path_factory):
    """1240 synthetic characters of 4 drawings: enough for the 1100/100/rest split."""
    return make_omniglot(str(tmp_path_factory.mktemp('data')), alphabets=31, characters=40, drawings=4)


def test_omniglot_layout_run_beats_chance(omniglot_data, tmp_path, workdir):
    flags = ['--datasource=omniglot', '--data_dir=%s' % omniglot_data, '--meta_batch_size=4',
             '--update_batch_size=1', '--update_lr=0.4', '--num_filters=16',
             '--logdir=%s' % (tmp_path / 'logs')]
    train = run_main(*flags, '--metatrain_iterations=301', cwd=workdir)
    assert train.returncode == 0, describe(train)
    if utils.grouped_conv_gradients_work():  # then main.py must get them too (utils before TensorFlow)
        assert 'grouped convolutions are unavailable' not in train.stderr, describe(train)
    assert sorted(iteration_lines(train.stdout)) == [100, 200, 300]
    assert train.stdout.count('Validation results') == 0  # first validation at 500

    test = run_main(*flags, '--train=False', cwd=workdir)
    assert test.returncode == 0, describe(test)
    exp_dir = tmp_path / 'logs' / 'cls_5.mbs_4.ubs_1.numstep1.updatelr0.4hidden16batchnorm'
    _, means, _, _ = read_results_csv(exp_dir / 'test_ubs1_stepsize0.4.csv')
    assert abs(means[0] - 0.2) < 0.05   # before adaptation: chance, 5-way
    assert means[10] > 0.6              # after it: well above chance
