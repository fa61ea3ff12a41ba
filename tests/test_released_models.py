"""The trained models released under models/: complete, consistent, and re-scored on the real test split.

models/<experiment>/<exp_string>/ holds one run of a paper.py experiment: its
latest checkpoint only (model-<N>.index/.data, with the Adam state), the
'checkpoint' file naming it, the console log, the TensorBoard events, and
once tested the test CSV and pkl and check.txt, the output of
`reproduce.py --check` on that CSV. An evaluation-only cell of paper.py (the
5-shot Omniglot cells, the sinusoid's K=5 ones) has its CSV and pkl in the
folder of the model it evaluates (test_ubs{K}_stepsize{alpha}, beside the
model's own) and its verdict in check_ubs{K}_stepsize{alpha}.txt. Every tested
one, evaluations included, is re-scored on the real test split, task by task
against its pkl: all 600 test tasks, but for miniImagenet, whose test is too
long for CI, the first 100 (all 600 with --runslow).
"""
import csv
import os
import pickle
import re
import subprocess
import sys

import numpy as np
import pytest

import paper
import reproduce
from conftest import REAL_DATA, REPO
from runner import describe, main_command, user_env

MODELS = REPO / 'models'
ACCURACY_TOLERANCE = 0.2  # points: float32 near-ties of the arg-max move a prediction or two
MSE_TOLERANCE = 0.01      # relative


def released_runs():
    """(experiment, run folder) for every folder under models/."""
    runs = []
    for name in sorted(os.listdir(MODELS)) if MODELS.is_dir() else []:
        if not (MODELS / name).is_dir():
            continue
        experiment = paper.BY_NAME.get(name)
        folder = MODELS / name / reproduce.exp_dir_name(list(experiment.flags)) if experiment else MODELS / name
        runs.append(pytest.param(experiment, folder, id=name))
    return runs


def evaluations():
    """(evaluation-only experiment, its model's run folder) for every evaluation-only cell of paper.py."""
    return [pytest.param(e, MODELS / e.evaluates / reproduce.exp_dir_name(list(e.flags)), id=e.name)
            for e in paper.EXPERIMENTS if e.evaluates]


def runs_with_results():
    """The released runs and the evaluations of released models that have a test CSV."""
    return [run for run in released_runs() + evaluations()
            if run.values[0] and (run.values[1] / reproduce.csv_name(list(run.values[0].flags))).exists()]


def check_file(experiment, folder):
    return folder / reproduce.check_name(experiment)


def latest_checkpoint(folder):
    with open(folder / 'checkpoint') as f:
        return re.search(r'^model_checkpoint_path:\s*"([^"]*)"', f.read(), re.M).group(1)


@pytest.mark.parametrize('experiment, folder', released_runs())
def test_a_released_run_is_one_experiment_with_only_its_latest_checkpoint(experiment, folder):
    assert experiment is not None, '%s is not named after an experiment of paper.py' % folder.parent.name
    assert folder.is_dir(), 'expected the run in %s (the exp_string of its flags)' % folder
    assert os.listdir(folder.parent) == [folder.name], 'only the run folder belongs in %s' % folder.parent
    latest = latest_checkpoint(folder)
    checkpoints = sorted(p for p in os.listdir(folder) if p.startswith('model-') and p.endswith('.index'))
    assert checkpoints == [latest + '.index'], 'only the latest checkpoint is released: %s' % checkpoints
    assert (folder / (latest + '.data-00000-of-00001')).exists()
    assert (folder / 'console.log').exists()
    assert any(p.startswith('events.out.tfevents') for p in os.listdir(folder))
    with open(folder / 'checkpoint') as f:
        listed = re.findall(r'^all_model_checkpoint_paths:\s*"([^"]*)"', f.read(), re.M)
    assert listed == [latest], 'the checkpoint file lists checkpoints that are not released: %s' % listed


@pytest.mark.parametrize('experiment, folder', runs_with_results())
def test_a_released_result_is_its_csv_its_pkl_and_its_verdict(experiment, folder):
    """The CSV is the pkl's summary; check.txt is what reproduce.py --check says of the CSV today."""
    csv_path = folder / reproduce.csv_name(list(experiment.flags))
    results = reproduce.read_test_csv(str(csv_path))
    with open(str(csv_path)[:-len('.csv')] + '.pkl', 'rb') as f:
        per_task = pickle.load(f)['mses']
    assert per_task.shape == (600, 11)
    np.testing.assert_allclose([results['means'][i] for i in range(11)], per_task.mean(0), rtol=1e-6)
    check = subprocess.run([sys.executable, str(REPO / 'reproduce.py'), '--check', str(csv_path)],
                           capture_output=True, text=True, cwd=str(REPO), timeout=120)
    committed = check_file(experiment, folder).read_text()
    assert check.stdout == committed, 'reproduce.py --check now says:\n%s\ncommitted:\n%s' % (check.stdout, committed)


@pytest.fixture(scope='module')
def real_data(prepare_real_data):
    """datasource -> a --data_dir with it: data/ where data.prepare has verified it there, else
    prepared once for the session from ../shared/data (conftest; skips without it)."""
    def data_dir(datasource):
        if (REPO / 'data' / REAL_DATA[datasource][1] / '.prepared.json').exists():  # written once data.prepare has verified it
            return REPO / 'data'
        return prepare_real_data(datasource)[0]
    return data_dir


def verdicts(check_output):
    """The verdict column of a --check table (the sinusoid's has columns after it)."""
    lines = check_output.splitlines()
    column = re.split(r'\s{2,}', lines[0].strip()).index('verdict')
    rows = lines[2:lines.index(next(line for line in lines if line.startswith('verdict:')))]
    return [re.split(r'\s{2,}', line.strip())[column] for line in rows]


# In CI a miniImagenet model is re-scored on the first QUICK_TASKS of its 600 test tasks (task i is
# the same task in both: each is drawn from its own index), which CI's time allows; all 600 with --runslow.
QUICK_TASKS = 100
ALL_TASKS = 600


def rescore(experiment, folder, data_dir, tmp_path, tasks=ALL_TASKS):
    """main.py --train=False --test_set=True on a copy of the released checkpoint, scoring the first
    `tasks` test tasks; returns (per-task results [tasks, 11], the CSV written)."""
    flags = list(experiment.flags)
    run_dir = tmp_path / 'logs' / folder.name
    reproduce.copy_latest_checkpoint(str(folder), str(run_dir))
    datasource = experiment.flag_value('datasource')
    argv = [*flags, '--train=False', '--test_set=True', '--logdir=%s' % (tmp_path / 'logs')]
    argv += ['--data_dir=%s' % data_dir(datasource)] if datasource in REAL_DATA else []
    command = main_command(*argv)
    if tasks != ALL_TASKS:  # main.py with fewer test tasks: the same program, its NUM_TEST_POINTS lowered
        command = [sys.executable, '-c', 'import sys; sys.path.insert(0, %r); import main; '
                   'sys.argv[0] = main.__file__; main.NUM_TEST_POINTS = %d; main.run()' % (str(REPO), tasks), *argv]
    proc = subprocess.run(command, cwd=str(tmp_path), env=user_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, describe(proc)
    assert '%d test tasks in' % tasks in proc.stderr, describe(proc)
    csv_path = run_dir / reproduce.csv_name(flags)
    with open(str(csv_path)[:-len('.csv')] + '.pkl', 'rb') as f:
        return pickle.load(f)['mses'], csv_path


def committed_per_task(experiment, folder):
    with open(folder / (reproduce.csv_name(list(experiment.flags))[:-len('.csv')] + '.pkl'), 'rb') as f:
        return pickle.load(f)['mses']


def assert_same_tasks(experiment, ours, committed):
    """Task by task as committed. Accuracies: in whole predictions of the task's queries (K per
    class), one prediction apart on at most 1 % of the tasks, where two logits tie within float32
    rounding; MSEs to MSE_TOLERANCE."""
    assert ours.shape == committed.shape, (ours.shape, committed.shape)
    if experiment.metric != paper.ACCURACY:
        np.testing.assert_allclose(ours, committed, rtol=MSE_TOLERANCE)
        return
    queries = int(experiment.flag_value('num_classes', 5)) * int(experiment.flag_value('update_batch_size', 1))
    predictions = np.abs(ours - committed) * queries
    assert np.allclose(predictions, np.round(predictions), atol=1e-4), 'not whole predictions apart'
    assert predictions.max() <= 1 + 1e-4, 'a task is %d predictions apart' % round(predictions.max())
    differing = int((predictions > 0.5).any(axis=1).sum())
    assert differing <= max(1, len(ours) // 100), '%d of %d tasks differ' % (differing, len(ours))


def assert_rescored(experiment, folder, csv_path):
    """The committed figures (ACCURACY_TOLERANCE points, MSE_TOLERANCE) and the committed verdict."""
    csv_name = reproduce.csv_name(list(experiment.flags))
    ours = reproduce.read_test_csv(str(csv_path))['means']
    committed = reproduce.read_test_csv(str(folder / csv_name))['means']
    for step in range(11):
        if experiment.metric == paper.ACCURACY:
            assert abs(100 * ours[step] - 100 * committed[step]) <= ACCURACY_TOLERANCE, (step, ours, committed)
        else:
            np.testing.assert_allclose(ours[step], committed[step], rtol=MSE_TOLERANCE, err_msg=str(step))
    check = subprocess.run([sys.executable, str(REPO / 'reproduce.py'), '--check', str(csv_path),
                            '--experiment', experiment.name], capture_output=True, text=True, cwd=str(REPO))
    assert verdicts(check.stdout) == verdicts(check_file(experiment, folder).read_text()), check.stdout


def is_miniimagenet(run):
    return run.values[0].flag_value('datasource') == 'miniimagenet'


@pytest.mark.parametrize('experiment, folder', [run for run in runs_with_results() if not is_miniimagenet(run)])
def test_a_released_model_rescores_to_its_csv(experiment, folder, real_data, tmp_path):
    """Test the released checkpoint again on the real test split: every task as committed, the
    committed figures, the committed verdict."""
    per_task, csv_path = rescore(experiment, folder, real_data, tmp_path)
    assert_same_tasks(experiment, per_task, committed_per_task(experiment, folder))
    assert_rescored(experiment, folder, csv_path)


@pytest.mark.parametrize('experiment, folder', [run for run in runs_with_results() if is_miniimagenet(run)])
def test_a_released_miniimagenet_model_rescores_its_first_tasks(experiment, folder, real_data, tmp_path):
    """The first QUICK_TASKS test tasks of a released miniImagenet model, task by task as committed."""
    per_task, _ = rescore(experiment, folder, real_data, tmp_path, QUICK_TASKS)
    assert_same_tasks(experiment, per_task, committed_per_task(experiment, folder)[:QUICK_TASKS])


@pytest.mark.slow
@pytest.mark.parametrize('experiment, folder', [run for run in runs_with_results() if is_miniimagenet(run)])
def test_a_released_miniimagenet_model_rescores_to_its_csv(experiment, folder, real_data, tmp_path):
    """All 600 tasks (about 5 minutes on one core of an AMD EPYC, 2026-12-04): as the Omniglot ones."""
    per_task, csv_path = rescore(experiment, folder, real_data, tmp_path)
    assert_same_tasks(experiment, per_task, committed_per_task(experiment, folder))
    assert_rescored(experiment, folder, csv_path)


@pytest.mark.parametrize('experiment, folder', released_runs())
def test_a_released_run_holds_the_checks_of_its_own_test_and_of_its_evaluations_only(experiment, folder):
    """check.txt is the run's own test; any other check file is an evaluation-only cell of this model."""
    if experiment is None or not folder.is_dir():
        pytest.skip('not a run of an experiment (the test above says so)')
    allowed = {'check.txt'} | {reproduce.check_name(e) for e in paper.EXPERIMENTS if e.evaluates == experiment.name}
    found = {name for name in os.listdir(folder) if name.startswith('check') and name.endswith('.txt')}
    assert found <= allowed, 'check files of no evaluation of %s: %s' % (experiment.name, sorted(found - allowed))
    for e in paper.EXPERIMENTS:
        if e.evaluates == experiment.name and (folder / reproduce.check_name(e)).exists():
            assert (folder / reproduce.csv_name(list(e.flags))).exists(), e.name


def test_release_keeps_only_the_latest_checkpoint_and_training_resumes_from_it(tmp_path):
    import tensorflow as tf
    logdir = tmp_path / 'sinusoid-10shot'
    exp_dir = logdir / reproduce.exp_dir_name(list(paper.get('sinusoid-10shot').flags))
    weights = tf.Variable([1.0, 2.0])
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(w=weights), str(exp_dir), max_to_keep=10,
                                         checkpoint_name='model')
    for itr in (1000, 2000, 2999):
        weights.assign_add([1.0, 1.0])
        manager.save(checkpoint_number=itr)
    (exp_dir / 'console.log').write_text('Iteration 1000: 1, 2\n')
    assert reproduce.main(['--release', str(logdir)]) == 0
    assert sorted(p for p in os.listdir(exp_dir) if p.startswith('model-')) == [
        'model-2999.data-00000-of-00001', 'model-2999.index']
    assert latest_checkpoint(exp_dir) == 'model-2999'
    assert not (exp_dir / 'check.txt').exists()  # no test CSV yet
    # a fresh manager (a new clone) resumes from it and keeps counting
    restored = tf.Variable([0.0, 0.0])
    resumed = tf.train.CheckpointManager(tf.train.Checkpoint(w=restored), str(exp_dir), max_to_keep=10,
                                         checkpoint_name='model')
    tf.train.Checkpoint(w=restored).restore(resumed.latest_checkpoint).assert_existing_objects_matched()
    assert restored.numpy().tolist() == [4.0, 5.0]
    resumed.save(checkpoint_number=3999)
    assert latest_checkpoint(exp_dir) == 'model-3999' and (exp_dir / 'model-2999.index').exists()


def test_release_refuses_a_stale_test_csv_and_a_folder_of_no_experiment(tmp_path):
    exp_dir = tmp_path / 'sinusoid-10shot' / reproduce.exp_dir_name(list(paper.get('sinusoid-10shot').flags))
    exp_dir.mkdir(parents=True)
    (exp_dir / 'test_ubs10_stepsize0.01.csv').write_text('update0\n1\n0\n0\n')
    (exp_dir / 'model-5.index').write_text('')
    (exp_dir / 'model-5.data-00000-of-00001').write_text('')
    (exp_dir / 'checkpoint').write_text('model_checkpoint_path: "model-5"\nall_model_checkpoint_paths: "model-5"\n')
    os.utime(exp_dir / 'test_ubs10_stepsize0.01.csv', (1, 1))  # written before the checkpoint
    assert reproduce.main(['--release', str(tmp_path / 'sinusoid-10shot')]) == 2
    (tmp_path / 'no-such-experiment').mkdir()
    assert reproduce.main(['--release', str(tmp_path / 'no-such-experiment')]) == 2
