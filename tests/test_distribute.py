"""tf.distribute: the meta-batch shared among replicas gives one process's numbers.

Through main.py as a user runs it, on a small data set of Omniglot's layout:
2 logical CPU devices (--distribute=mirrored), 2 worker processes on
localhost (--distribute=multi_worker, TF_CONFIG on free ports), a worker
killed mid-run, and the golden fixtures over 2 replicas in float64.
"""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from benchmark import free_ports
from conftest import GOLDEN, REPO
from runner import describe, iteration_lines, main_command, read_results_csv, run_main, user_env
from synthetic import make_omniglot

EXP = 'cls_5.mbs_4.ubs_1.numstep1.updatelr0.4hidden8nonorm'
# float32, the sums over tasks in another order. Without batch norm: with it, the conv biases
# before each norm have gradients of pure rounding noise (the norm removes them), which Adam
# turns into steps of +-meta_lr, so float32 runs part ways within iterations; the golden
# fixtures check batch norm over 2 replicas in float64 instead.
RTOL = 1e-5


@pytest.fixture(scope='module')
def omniglot_data(tmp_path_factory):
    """1240 synthetic characters of 4 drawings: enough for the 1100/100/rest split."""
    return make_omniglot(str(tmp_path_factory.mktemp('data')), alphabets=31, characters=40, drawings=4)


def flags(data, logdir, iterations=101):
    return ['--datasource=omniglot', '--data_dir=%s' % data, '--meta_batch_size=4', '--update_batch_size=1',
            '--update_lr=0.4', '--num_filters=8', '--norm=None', '--metatrain_iterations=%d' % iterations,
            '--logdir=%s' % logdir]


def saved_variables(exp_dir):
    """{name: array} of the latest checkpoint's weights and Adam moments."""
    import tensorflow as tf
    reader = tf.train.load_checkpoint(str(exp_dir))
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
            if k.startswith('model/') and 'OPTIMIZER_SLOT' not in k and '_CHECKPOINTABLE' not in k}


def assert_same_run(one_dir, other_dir, one_stdout, other_stdout, rtol=RTOL):
    """The same Iteration lines (to rtol) and the same saved weights and Adam state."""
    lines, others = iteration_lines(one_stdout), iteration_lines(other_stdout)
    assert lines and sorted(lines) == sorted(others)
    for itr in lines:
        np.testing.assert_allclose(np.array(others[itr], float), np.array(lines[itr], float), rtol=rtol)
    ours, theirs = saved_variables(one_dir), saved_variables(other_dir)
    assert sorted(ours) == sorted(theirs) and len(ours) > 20
    for name in ours:
        scale = max(np.max(np.abs(ours[name])), 1e-30)
        assert np.max(np.abs(theirs[name] - ours[name])) <= rtol * scale, name


@pytest.fixture(scope='module')
def one_process(omniglot_data, tmp_path_factory):
    """The single-process run everything is compared with: trained, then tested."""
    logdir = tmp_path_factory.mktemp('one')
    train = run_main(*flags(omniglot_data, logdir), cwd=logdir)
    assert train.returncode == 0, describe(train)
    test = run_main(*flags(omniglot_data, logdir), '--train=False', cwd=logdir)
    assert test.returncode == 0, describe(test)
    return logdir / EXP, train.stdout


def test_mirrored_two_replicas_equals_one_process(omniglot_data, one_process, tmp_path):
    one_dir, one_stdout = one_process
    two = flags(omniglot_data, tmp_path) + ['--distribute=mirrored', '--replicas=2']
    train = run_main(*two, cwd=tmp_path)
    assert train.returncode == 0, describe(train)
    assert_same_run(one_dir, tmp_path / EXP, one_stdout, train.stdout)
    test = run_main(*two, '--train=False', cwd=tmp_path)
    assert test.returncode == 0, describe(test)
    _, means, _, _ = read_results_csv(tmp_path / EXP / 'test_ubs1_stepsize0.4.csv')
    _, one_means, _, _ = read_results_csv(one_dir / 'test_ubs1_stepsize0.4.csv')
    # accuracies of 600 tasks: equal but for float32 near-ties of the arg-max (1 in 600 x 5 answers)
    np.testing.assert_allclose(means, one_means, atol=1 / 3000 + 1e-9)


def test_flags_that_cannot_be_shared(omniglot_data, tmp_path):
    odd = run_main(*flags(omniglot_data, tmp_path), '--meta_batch_size=3', '--distribute=mirrored',
                   '--replicas=2', cwd=tmp_path)
    assert odd.returncode == 2 and '--meta_batch_size=3 is not divisible by the 2 replicas' in odd.stderr, describe(odd)
    no_cluster = run_main(*flags(omniglot_data, tmp_path), '--distribute=multi_worker', cwd=tmp_path)
    assert no_cluster.returncode == 2 and 'TF_CONFIG' in no_cluster.stderr, describe(no_cluster)
    unknown = run_main(*flags(omniglot_data, tmp_path), '--distribute=tpu', cwd=tmp_path)
    assert unknown.returncode == 2 and '--distribute=tpu is not recognized' in unknown.stderr, describe(unknown)


## Two worker processes on localhost -------------------------------------------------------------

def start_workers(command_flags, cwd, ports):
    """One main.py per worker, TF_CONFIG naming it; stdout and stderr to files in cwd."""
    cluster = {'worker': ['127.0.0.1:%d' % p for p in ports]}
    procs = []
    for index in range(len(ports)):
        env = dict(user_env(), TF_CONFIG=json.dumps({'cluster': cluster, 'task': {'type': 'worker', 'index': index}}))
        out = open(os.path.join(cwd, 'worker%d.out' % index), 'a')
        err = open(os.path.join(cwd, 'worker%d.err' % index), 'a')
        procs.append(subprocess.Popen(main_command(*command_flags, '--distribute=multi_worker'), cwd=str(cwd),
                                      env=env, stdout=out, stderr=err))
    return procs


def wait_all(procs, cwd, timeout=600):
    for proc in procs:
        proc.wait(timeout=timeout)
    return [(proc.returncode, open(os.path.join(cwd, 'worker%d.out' % i)).read(),
             open(os.path.join(cwd, 'worker%d.err' % i)).read()) for i, proc in enumerate(procs)]


def worker_report(results):
    return '\n'.join('worker %d: exit %s\nstdout:\n%s\nstderr:\n%s' % (i, code, out[-2000:], err[-3000:])
                     for i, (code, out, err) in enumerate(results))


def test_two_workers_equal_one_process(omniglot_data, one_process, tmp_path):
    one_dir, one_stdout = one_process
    results = wait_all(start_workers(flags(omniglot_data, tmp_path), tmp_path, free_ports(2)), tmp_path)
    assert [code for code, _, _ in results] == [0, 0], worker_report(results)
    (_, chief_out, _), (_, other_out, other_err) = results
    assert_same_run(one_dir, tmp_path / EXP, one_stdout, chief_out)
    assert other_out == '' and 'Iteration' not in other_err  # only the chief reports


def kill_worker_1_after(itr, procs, run):
    """SIGKILL worker 1 once the chief has printed iteration itr; check that the chief then stops
    and names worker 1. Returns the chief's stderr."""
    deadline = time.time() + 600
    while 'Iteration %d' % itr not in open(run / 'worker0.out').read():
        assert time.time() < deadline and procs[0].poll() is None, worker_report(wait_all(procs, run))
        time.sleep(0.2)
    procs[1].send_signal(signal.SIGKILL)
    started = time.time()
    results = wait_all(procs, run, timeout=300)
    print('the chief stopped %.1f s after worker 1 was killed' % (time.time() - started))
    code, _, err = results[0]
    assert code == 1 and 'lost contact with worker 1' in err, worker_report(results)
    return err


def test_killed_worker_before_the_first_checkpoint_stops_the_other(omniglot_data, tmp_path):
    procs = start_workers(flags(omniglot_data, tmp_path, 1001), tmp_path, free_ports(2))
    err = kill_worker_1_after(100, procs, tmp_path)
    assert 'Restart every worker with the same command: there is no checkpoint yet in %s, so they start again' \
        % (tmp_path / EXP) in err, err


@pytest.mark.slow  # 2,500 iterations over 2 workers: 127 s of CI's 2 cores (docs/tests.md)
def test_killed_worker_stops_the_other_and_the_restart_resumes(omniglot_data, tmp_path):
    iterations = 1201  # a checkpoint every 1000; worker 1 is killed after iteration 1100
    uninterrupted = tmp_path / 'uninterrupted'
    uninterrupted.mkdir()
    done = wait_all(start_workers(flags(omniglot_data, uninterrupted, iterations), uninterrupted, free_ports(2)),
                    uninterrupted)
    assert [c for c, _, _ in done] == [0, 0], worker_report(done)

    run = tmp_path / 'killed'
    run.mkdir()
    procs = start_workers(flags(omniglot_data, run, iterations), run, free_ports(2))
    err = kill_worker_1_after(1100, procs, run)
    assert 'Restart every worker with the same command: they resume from the checkpoint of iteration 1000' in err

    ports = free_ports(2)
    for i in range(2):  # keep the first run's output apart
        os.rename(run / ('worker%d.out' % i), run / ('worker%d.first.out' % i))
    resumed = wait_all(start_workers(flags(omniglot_data, run, iterations), run, ports), run)
    assert [c for c, _, _ in resumed] == [0, 0], worker_report(resumed)
    assert 'Restoring model weights' in resumed[0][1]
    ours, theirs = saved_variables(uninterrupted / EXP), saved_variables(run / EXP)
    for name in ours:
        np.testing.assert_array_equal(theirs[name], ours[name], err_msg=name)


## The golden fixtures over 2 replicas ------------------------------------------------------------

# Replicas share only the meta-batch's sums: the loss means and the meta-gradient. Everything
# within a task (its batch norm's moments, first or second order, the norm) is the same code on
# every replica, and each fixture is checked in one process by test_reference.py. So CI takes
# one fixture per network, the fully connected and the convolutional; all 8 with --runslow.
CI_FIXTURES = ('sin_so', 'o5_bn_so')


def assert_same_over_two_replicas(names):
    paths = [str(GOLDEN / (name + '.npz')) for name in names]
    proc = subprocess.run([sys.executable, str(REPO / 'tests' / 'reference_check.py'), '--replicas', '2',
                           '--float64_only'] + paths, capture_output=True, text=True, env=user_env(), timeout=1800)
    assert proc.returncode == 0, describe(proc)
    assert 'MirroredStrategy over 2 replicas' in proc.stdout
    assert proc.stdout.count('  ok | 1 vs 2 replicas ') == len(paths), proc.stdout
    differences = [float(line.rsplit(' ', 1)[1]) for line in proc.stdout.splitlines() if '1 vs 2 replicas' in line]
    assert len(differences) == len(paths) and max(differences) <= 1e-12, proc.stdout


def test_golden_fixtures_over_two_replicas_in_float64():
    assert_same_over_two_replicas(CI_FIXTURES)


@pytest.mark.slow
@pytest.mark.time_limit(1800)  # as long as the subprocess may take
def test_every_golden_fixture_over_two_replicas_in_float64():
    names = sorted(p.stem for p in GOLDEN.glob('*.npz'))
    assert len(names) == 8 and set(CI_FIXTURES) < set(names), names
    assert_same_over_two_replicas(names)
