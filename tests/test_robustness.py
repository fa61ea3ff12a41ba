"""Bad input and interruption, through main.py as a user runs it.

Each bad input must stop the run before any work with exit status 2 and a
message naming the flag or the file; training faults must keep the last good
checkpoint; a run killed at any moment resumes to the same numbers.
"""
import contextlib
import os
import random
import re
import signal
import time
import types

import numpy as np
import pytest

from runner import LineReader, describe, iteration_lines, run_main, start_main
from synthetic import make_miniimagenet

SINUSOID = ['--datasource=sinusoid', '--norm=None', '--update_batch_size=10']
SINUSOID_EXP = 'cls_5.mbs_25.ubs_10.numstep1.updatelr0.001nonorm'


def assert_error(proc, *fragments, status=2):
    assert proc.returncode == status, describe(proc)
    for fragment in fragments:
        assert fragment in proc.stderr, 'missing %r in\n%s' % (fragment, describe(proc))


## Flags that cannot work (no data needed) ---------------------------------------------------------

@pytest.mark.parametrize('flags, fragments', [
    (['--datasource=imagenet'], ['--datasource=imagenet is not recognized', 'sinusoid, omniglot, miniimagenet']),
    (['--norm=group_norm'], ['--norm=group_norm is not recognized', 'batch_norm, layer_norm, None']),
    (['--baseline=oracle', '--datasource=omniglot'], ['--baseline=oracle needs --datasource=sinusoid']),
    (['--baseline=median'], ['--baseline=median is not recognized']),
    (['--meta_batch_size=0'], ['--meta_batch_size=0 must be a positive integer']),
    (['--update_batch_size=-1'], ['--update_batch_size=-1 must be a positive integer']),
    (['--num_updates=0'], ['--num_updates=0 must be a positive integer']),
    (['--meta_lr=0'], ['--meta_lr=0.0 must be a positive number']),
    (['--update_lr=-0.4'], ['--update_lr=-0.4 must be a positive number']),
    (['--metatrain_iterations=-5'], ['--metatrain_iterations=-5 must be 0 or more']),
    (['--metatrain_iterations=0'], ['nothing to train']),
    (['--test_iter=-3', '--train=False'], ['--test_iter=-3 must be -1']),
    (['--train_update_lr=0'], ['--train_update_lr=0.0 must be -1']),
    (['--norm=foo'], ['--norm=foo is not recognized']),
    (['--update_batch_size=0'], ['--update_batch_size=0 must be a positive integer']),
    (['--datasource=Omniglot'], ['--datasource=Omniglot is not recognized']),
    (['--norm=foo', '--update_batch_size=0'], ['--norm=foo is not', '--update_batch_size=0 must be']),
    (['--update_batch_size=five'], ["flag --update_batch_size=five: invalid literal for int()"]),
    (['--no_such_flag=1'], ["Unknown command line flag 'no_such_flag'"]),
])
def test_bad_flag_is_named(flags, fragments, tmp_path):
    proc = run_main(*flags, '--logdir=%s' % (tmp_path / 'logs'), cwd=tmp_path, timeout=120)
    assert_error(proc, *fragments)
    assert 'Traceback' not in proc.stderr
    assert not (tmp_path / 'logs').exists()  # stopped before any work
    assert_error_lines(proc)
    if flags == ['--norm=foo', '--update_batch_size=0']:
        assert len(proc.stderr.splitlines()) == 2   # one line per problem


def assert_error_lines(proc):
    """One style for every error: each problem on its own line 'Error: <what>', none empty, nothing else."""
    lines = proc.stderr.splitlines()
    assert lines, describe(proc)
    for line in lines:
        assert line.startswith('Error: ') and line[len('Error: '):].strip(), describe(proc)


def test_help_text_has_no_slips():
    """main.py's own flags: no doubled word ("the the"), and --logdir says what it holds."""
    import main
    ours = main.FLAGS.get_flags_for_module(main)
    assert len(ours) > 20
    for flag in ours:
        doubled = re.search(r'\b(\w+) \1\b', flag.help, re.I)
        assert not doubled, (flag.name, flag.help)
    logdir = main.FLAGS['logdir']
    assert 'checkpoints' in logdir.help and 'logs/' in logdir.help


def test_training_and_testing_say_where_they_wrote(tmp_path):
    logdir = tmp_path / 'logs'
    train = run_main(*SINUSOID, '--metatrain_iterations=3', '--logdir=%s' % logdir, cwd=tmp_path, timeout=300)
    assert train.returncode == 0, describe(train)
    assert train.stdout.splitlines()[-1] == (
        'Last checkpoint: %s (the same command resumes it; add --train=False to test it)'
        % (logdir / SINUSOID_EXP / 'model-2'))
    again = run_main(*SINUSOID, '--metatrain_iterations=3', '--logdir=%s' % logdir, cwd=tmp_path, timeout=300)
    assert again.stdout.splitlines()[-1].startswith('Last checkpoint: %s ' % (logdir / SINUSOID_EXP / 'model-2'))
    test = run_main(*SINUSOID, '--metatrain_iterations=3', '--train=False', '--logdir=%s' % logdir,
                    cwd=tmp_path, timeout=300)
    assert test.returncode == 0, describe(test)
    base = logdir / SINUSOID_EXP / 'test_ubs10_stepsize0.001'
    assert test.stdout.splitlines()[-1] == 'Test results written to %s.csv and %s.pkl' % (base, base)
    assert os.path.exists('%s.csv' % base) and os.path.exists('%s.pkl' % base)


def test_no_checkpoint_to_test_says_where_it_looked(tmp_path):
    logdir = tmp_path / 'logs'
    proc = run_main(*SINUSOID, '--train=False', '--logdir=%s' % logdir, cwd=tmp_path, timeout=300)
    assert_error(proc, 'no checkpoint to test', 'looked in %s' % (logdir / SINUSOID_EXP))
    assert 'USAGE' not in proc.stdout + proc.stderr  # the message, not the whole flag help


## Data faults --------------------------------------------------------------------------------------

def test_missing_data_folder_prints_the_prepare_command(tmp_path):
    proc = run_main('--datasource=omniglot', '--data_dir=%s' % (tmp_path / 'nowhere'),
                    '--logdir=%s' % (tmp_path / 'logs'), cwd=tmp_path, timeout=300)
    assert_error(proc, 'omniglot data not found at', 'python -m data.prepare omniglot')
    assert proc.stderr.startswith('Error: omniglot data not found at %s' % (tmp_path / 'nowhere'))


@pytest.fixture
def mini_data(tmp_path):
    """A small miniImagenet layout: 8/5/5 classes of 20 images."""
    return make_miniimagenet(str(tmp_path / 'data'))


MINI = ['--datasource=miniimagenet', '--num_filters=8', '--max_pool=True', '--meta_batch_size=2',
        '--update_batch_size=1', '--update_lr=0.01']


def mini_flags(data_dir, tmp_path, *extra):
    return MINI + ['--data_dir=%s' % data_dir, '--logdir=%s' % (tmp_path / 'logs')] + list(extra)


def test_more_classes_than_the_split_holds(mini_data, tmp_path):
    proc = run_main(*mini_flags(mini_data, tmp_path, '--num_classes=6'), cwd=tmp_path, timeout=300)
    assert_error(proc, '--num_classes=6 but the val split of', 'has only 5 classes')


def test_k_plus_15_queries_need_more_images_than_a_class_holds(mini_data, tmp_path):
    proc = run_main(*mini_flags(mini_data, tmp_path, '--update_batch_size=6'), cwd=tmp_path, timeout=300)
    assert_error(proc, '--update_batch_size=6: a task needs K+15 = 21 images per class', 'holds only 20')


def test_2k_at_test_time_needs_more_images_than_a_class_holds(mini_data, tmp_path):
    proc = run_main(*mini_flags(mini_data, tmp_path, '--update_batch_size=11', '--train=False'),
                    cwd=tmp_path, timeout=300)
    assert_error(proc, '--update_batch_size=11: a task needs 2K = 22 images per class', 'holds only 20')


def test_empty_class_folder_is_named(mini_data, tmp_path):
    folder = os.path.join(mini_data, 'miniImagenet', 'val', 'n00001002')
    for name in os.listdir(folder):
        os.remove(os.path.join(folder, name))
    proc = run_main(*mini_flags(mini_data, tmp_path), cwd=tmp_path, timeout=300)
    assert_error(proc, folder)


def test_unreadable_image_is_named(mini_data, tmp_path):
    folder = os.path.join(mini_data, 'miniImagenet', 'train', 'n00000003')
    broken = os.path.join(folder, sorted(os.listdir(folder))[4])
    with open(broken, 'wb') as f:
        f.write(b'not a jpeg at all')
    proc = run_main(*mini_flags(mini_data, tmp_path, '--metatrain_iterations=2'), cwd=tmp_path, timeout=300)
    assert_error(proc, 'unreadable image %s' % broken)


def test_checkpoint_of_other_flags_lists_the_mismatches(mini_data, tmp_path):
    train = run_main(*mini_flags(mini_data, tmp_path, '--metatrain_iterations=2'), cwd=tmp_path, timeout=600)
    assert train.returncode == 0, describe(train)
    # --conv is not part of the experiment's folder name: the conv checkpoint is found for an fc net
    proc = run_main(*mini_flags(mini_data, tmp_path, '--train=False', '--conv=False'), cwd=tmp_path, timeout=600)
    assert_error(proc, 'does not match the model the flags describe', 'missing from the checkpoint',
                 'unexpected in the checkpoint', 'conv1 [3, 3, 3, 8]', 'shape mismatch',
                 'w5: checkpoint [200, 5], model [64, 5]')


## Training faults -----------------------------------------------------------------------------------

def checkpoint_listed(exp_dir):
    with open(os.path.join(exp_dir, 'checkpoint')) as f:
        return f.readline().split('"')[1]


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    logdir = tmp_path / 'logs'
    first = run_main(*SINUSOID, '--metatrain_iterations=1001', '--logdir=%s' % logdir, cwd=tmp_path)
    assert first.returncode == 0, describe(first)
    exp_dir = logdir / SINUSOID_EXP
    good = (exp_dir / 'model-1000.data-00000-of-00001').read_bytes()
    # a meta step this large sends the weights to infinity at once
    diverged = run_main(*SINUSOID, '--metatrain_iterations=3000', '--meta_lr=1e30', '--logdir=%s' % logdir,
                        cwd=tmp_path)
    assert_error(diverged, 'non-finite loss at iteration 1100', 'last good checkpoint is kept', status=1)
    assert checkpoint_listed(exp_dir) == 'model-1000'
    assert (exp_dir / 'model-1000.data-00000-of-00001').read_bytes() == good
    assert not any(name.startswith('model-1100') for name in os.listdir(exp_dir))


def wait_until(condition, timeout=120):
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, 'condition not met in %d s' % timeout
        time.sleep(0.05)


@pytest.mark.parametrize('sig, background', [(signal.SIGINT, False), (signal.SIGTERM, False),
                                             (signal.SIGINT, True)])
def test_interrupt_saves_a_checkpoint_before_exiting(sig, background, tmp_path):
    """Ctrl-C and kill -TERM; also SIGINT to a run started as a shell's background job."""
    logdir = tmp_path / 'logs'
    proc = start_main(*SINUSOID, '--metatrain_iterations=70000', '--logdir=%s' % logdir, cwd=tmp_path,
                      sigint_ignored=background)
    stdout, stderr = LineReader(proc.stdout), LineReader(proc.stderr)
    try:
        stdout.wait_for(lambda line: line.startswith('Iteration 1000:'), timeout=600)
        proc.send_signal(sig)
        proc.wait(timeout=120)
        out, err = stdout.text(), stderr.text()
    finally:
        proc.kill()
    assert proc.returncode == 130, out + err
    saved = [line for line in out.splitlines() if line.startswith('Interrupted after iteration')]
    assert saved, out + err
    itr = int(saved[0].split()[3].rstrip(';'))
    assert itr >= 1000
    exp_dir = logdir / SINUSOID_EXP
    assert (exp_dir / ('model-%d.index' % itr)).exists()
    assert checkpoint_listed(exp_dir) == 'model-%d' % itr


class SignalledRun:
    """Model, checkpoints, step and test data for main.py whose step, save or test batch at one
    iteration or task receives signals while it runs, as kill -TERM or Ctrl-C can land anywhere;
    records what finished."""

    classification = False
    strategy = None

    def __init__(self, sig, where, at, count=1):
        self.sig, self.where, self.at, self.count = sig, where, at, count
        self.stepped, self.saved, self.tested = [], [], []

    def receive(self, kind, itr):
        if (kind, itr) == (self.where, self.at) and self.count:
            count, self.count = self.count, 0  # once: the last save may be of the same iteration
            for _ in range(count):
                os.kill(os.getpid(), self.sig)  # Python runs its handler before the next line

    def step(self, itr):
        self.receive('step', itr)
        self.stepped.append(itr)
        return {'total_loss1': 1.0, 'total_losses2': [0.5]}, True

    def save(self, itr):
        self.receive('save', itr)
        self.saved.append(itr)
        return 'model-%d' % itr

    def make_batches(self, train, indices, update_batch_size):
        return list(indices)

    def evaluate_tasks(self, batch, num_updates, parts):
        self.receive('test', batch[0])
        self.tested.append(batch[0])
        return {'losses': types.SimpleNamespace(numpy=lambda: np.zeros((len(batch), num_updates + 1)))}


@contextlib.contextmanager
def handler_of_main_run(sig):
    """The handler main.run() installs, for the test's duration."""
    previous = signal.signal(sig, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(sig, previous)


def train_signalled(run, monkeypatch, start_itr=995, total_itr=1010):
    """main.Trainer.run over the fakes; its exit status."""
    import main
    monkeypatch.setattr(main, 'FLAGS', types.SimpleNamespace(datasource='sinusoid', pretrain_iterations=0,
                                                             num_updates=1))
    trainer = main.Trainer(run, None, run, writer=None)
    trainer.step = run.step
    with handler_of_main_run(run.sig):
        try:
            with pytest.raises(SystemExit) as exit_:
                trainer.run(start_itr, total_itr)
        except KeyboardInterrupt:  # would end the whole pytest session
            pytest.fail('KeyboardInterrupt escaped main.Trainer.run')
    return exit_.value.code


@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize('where, at', [('step', 997), ('save', 1000)])
def test_a_signal_stops_training_between_iterations_never_inside_a_step_or_save(sig, where, at, monkeypatch,
                                                                               capsys):
    """A KeyboardInterrupt raised inside TensorFlow while it calls back into Python aborts the
    process (SIGABRT, nothing saved: seen in CI when a kill -TERM met the save of iteration 1000).
    So the iteration in progress and its save finish; then main.py saves and exits 130."""
    run = SignalledRun(sig, where, at)
    assert train_signalled(run, monkeypatch) == 130
    assert run.stepped == list(range(995, at + 1))
    assert run.saved == ([1000] if at >= 1000 else []) + [at]  # the periodic save finished, then the last
    assert 'Interrupted after iteration %d; saved model-%d.' % (at, at) in capsys.readouterr().out


def test_a_second_signal_interrupts_the_step_at_once(monkeypatch):
    """The way out of a step that never ends (a hung all-reduce, say)."""
    run = SignalledRun(signal.SIGTERM, 'step', 997, count=2)
    assert train_signalled(run, monkeypatch) == 130
    assert run.stepped == [995, 996]  # 997 was cut short


def test_a_signal_while_testing_stops_after_the_batch_of_tasks_in_progress(monkeypatch):
    """Testing writes nothing before its end; the signal ends it between batches, so main.run()
    can say so, rather than in an abort."""
    import main
    monkeypatch.setattr(main, 'FLAGS', types.SimpleNamespace(update_batch_size=1))
    run = SignalledRun(signal.SIGTERM, 'test', 200)
    with handler_of_main_run(run.sig), pytest.raises(KeyboardInterrupt):
        main.score_test_tasks(run, run, per_batch=100)
    assert run.tested == [0, 100, 200]


def test_sigkill_and_resume_gives_the_losses_of_an_uninterrupted_run(tmp_path):
    flags = SINUSOID + ['--metatrain_iterations=3001']
    whole = run_main(*flags, '--logdir=%s' % (tmp_path / 'whole'), cwd=tmp_path)
    assert whole.returncode == 0, describe(whole)

    logdir = tmp_path / 'killed'
    exp_dir = logdir / SINUSOID_EXP
    proc = start_main(*flags, '--logdir=%s' % logdir, cwd=tmp_path)
    stdout, stderr = LineReader(proc.stdout), LineReader(proc.stderr)
    try:
        stdout.wait_for(lambda line: line.startswith('Iteration 1000:'), timeout=600)
        # the save follows the print and takes its time on a loaded machine: wait for it to be listed
        wait_until(lambda: (exp_dir / 'checkpoint').exists() and checkpoint_listed(exp_dir) == 'model-1000')
        try:  # somewhere after the checkpoint of 1000, and before the run ends: a fast machine trains
            # the 2,000 iterations left within the random delay
            stdout.wait_for(lambda line: line.startswith('Iteration 2000:'), timeout=random.uniform(0.0, 2.0))
        except AssertionError:
            pass  # the delay came first
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL, 'the run ended before the kill'
    finally:
        proc.kill()
    saved = checkpoint_listed(exp_dir)
    assert saved.startswith('model-') and int(saved[len('model-'):]) >= 1000
    resumed = run_main(*flags, '--logdir=%s' % logdir, cwd=tmp_path)
    assert resumed.returncode == 0, describe(resumed)
    assert 'Restoring model weights from %s' % (exp_dir / saved) in resumed.stdout

    after = iteration_lines(resumed.stdout)
    expected = iteration_lines(whole.stdout)
    assert after and max(after) == 3000
    assert after == {itr: expected[itr] for itr in after}, (after, expected)
