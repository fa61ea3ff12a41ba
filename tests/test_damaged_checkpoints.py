"""Damaged checkpoints, through main.py as a user runs it.

A checkpoint whose files were cut short, garbled, flipped or deleted must
never give a traceback: testing it stops with one line naming the file
(exit 2); resuming training falls back to the newest intact checkpoint and
says so, or stops when none is left, and never starts again from scratch
over the good ones. A damaged list of checkpoints (the 'checkpoint' file)
is not taken for "no checkpoint": the model-<N> files on disk are found.

One short run makes model-1000 and model-1001 once for the module; each
case damages a copy of them.
"""
import os
import re
import shutil

import pytest

from runner import describe, run_main

SINUSOID = ['--datasource=sinusoid', '--norm=None', '--update_batch_size=10']
SINUSOID_EXP = 'cls_5.mbs_25.ubs_10.numstep1.updatelr0.001nonorm'
DATA = '.data-00000-of-00001'
ABSL_WARNING = re.compile(r'^W\d{4} ', re.M)  # what TensorFlow's Python logging prints for a bad list


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """A logdir holding model-1000 and model-1001, the latest (made once for the module)."""
    logdir = tmp_path_factory.mktemp('trained') / 'logs'
    proc = run_main(*SINUSOID, '--metatrain_iterations=1002', '--logdir=%s' % logdir, cwd=logdir.parent)
    assert proc.returncode == 0, describe(proc)
    assert sorted(name for name in os.listdir(logdir / SINUSOID_EXP) if name.endswith('.index')) == [
        'model-1000.index', 'model-1001.index']
    return logdir


@pytest.fixture
def logdir(trained, tmp_path):
    """A copy of the trained logdir, to damage."""
    copy = tmp_path / 'logs'
    shutil.copytree(trained, copy)
    return copy


## The damages ----------------------------------------------------------------------------------------

def truncate_data(prefix):
    """The data file cut to its first half, as a full disk or an interrupted copy leaves it."""
    path = prefix + DATA
    with open(path, 'r+b') as f:
        f.truncate(os.path.getsize(path) // 2)
    return os.path.basename(path)


def garbage_index(prefix):
    with open(prefix + '.index', 'wb') as f:
        f.write(b'this is not an index\n')
    return os.path.basename(prefix + '.index')


def delete_data(prefix):
    os.remove(prefix + DATA)
    return os.path.basename(prefix + DATA)


def flip_bits(prefix):
    """One byte of the data file inverted, the size unchanged: only the checksums tell."""
    path = prefix + DATA
    data = bytearray(open(path, 'rb').read())
    data[len(data) // 2] ^= 0xFF
    with open(path, 'wb') as f:
        f.write(bytes(data))
    return os.path.basename(path)


DAMAGES = [truncate_data, garbage_index, delete_data, flip_bits]


def files_of(exp_dir, itr):
    """{name: bytes} of the checkpoint of iteration itr."""
    return {name: (exp_dir / name).read_bytes() for name in os.listdir(exp_dir)
            if name.startswith('model-%d.' % itr)}


def one_error_line(proc):
    """The one 'Error:' line of a run that stopped with status 2 and no traceback."""
    assert proc.returncode == 2, describe(proc)
    assert 'Traceback' not in proc.stderr, describe(proc)
    errors = [line for line in proc.stderr.splitlines() if line.startswith('Error: ')]
    assert len(errors) == 1, describe(proc)
    return errors[0]


def warning_lines(proc):
    return [line for line in proc.stderr.splitlines() if line.startswith('Warning: ')]


## Testing (--train=False) a damaged latest checkpoint ------------------------------------------------

@pytest.mark.parametrize('damage', DAMAGES, ids=lambda d: d.__name__)
def test_testing_a_damaged_latest_checkpoint_names_the_file(damage, logdir):
    exp_dir = logdir / SINUSOID_EXP
    damaged = damage(str(exp_dir / 'model-1001'))
    proc = run_main(*SINUSOID, '--train=False', '--logdir=%s' % logdir, cwd=logdir.parent)
    line = one_error_line(proc)
    assert str(exp_dir / 'model-1001') in line and damaged in line, line
    assert '--test_iter=1000' in line, line  # the newest intact one, to test instead
    assert not any(name.startswith('test_') for name in os.listdir(exp_dir))  # nothing scored


def test_testing_a_damaged_checkpoint_by_its_iteration_names_the_file(logdir):
    exp_dir = logdir / SINUSOID_EXP
    damaged = truncate_data(str(exp_dir / 'model-1000'))
    proc = run_main(*SINUSOID, '--train=False', '--test_iter=1000', '--logdir=%s' % logdir, cwd=logdir.parent)
    line = one_error_line(proc)
    assert str(exp_dir / 'model-1000') in line and damaged in line, line


## Resuming training from a damaged latest checkpoint -------------------------------------------------

@pytest.mark.parametrize('damage', DAMAGES, ids=lambda d: d.__name__)
def test_resuming_falls_back_to_the_newest_intact_checkpoint(damage, logdir):
    exp_dir = logdir / SINUSOID_EXP
    good = files_of(exp_dir, 1000)
    damaged = damage(str(exp_dir / 'model-1001'))
    proc = run_main(*SINUSOID, '--metatrain_iterations=1002', '--logdir=%s' % logdir, cwd=logdir.parent)
    assert proc.returncode == 0, describe(proc)
    assert 'Traceback' not in proc.stderr, describe(proc)
    warnings = warning_lines(proc)
    assert len(warnings) == 1 and damaged in warnings[0] and 'model-1000' in warnings[0], describe(proc)
    # resumed after iteration 1000 (not from scratch): it trained iteration 1001 alone and saved it
    assert 'Restoring model weights from %s ' % (exp_dir / 'model-1000') in proc.stdout, describe(proc)
    assert proc.stdout.splitlines()[-1].startswith('Last checkpoint: %s ' % (exp_dir / 'model-1001'))
    assert files_of(exp_dir, 1000) == good  # the intact one untouched


def test_resuming_with_no_intact_checkpoint_stops_and_writes_nothing(logdir):
    exp_dir = logdir / SINUSOID_EXP
    truncate_data(str(exp_dir / 'model-1000'))
    damaged = flip_bits(str(exp_dir / 'model-1001'))
    before = {name: (exp_dir / name).read_bytes() for name in os.listdir(exp_dir)}
    proc = run_main(*SINUSOID, '--metatrain_iterations=1002', '--logdir=%s' % logdir, cwd=logdir.parent)
    line = one_error_line(proc)
    assert str(exp_dir / 'model-1001') in line and damaged in line, line
    assert {name: (exp_dir / name).read_bytes() for name in os.listdir(exp_dir)} == before


## A damaged list of checkpoints (the 'checkpoint' file) ----------------------------------------------

STATE_DAMAGES = {'garbage': b'garbage {{{\n', 'empty': b''}


def assert_went_past_the_damaged_list(proc, exp_dir):
    """main.py ran, named the damaged list in one Warning line (no traceback, no TF parse warning) and
    restored model-1001, found on disk."""
    assert proc.returncode == 0, describe(proc)
    assert 'Traceback' not in proc.stderr and not ABSL_WARNING.search(proc.stderr), describe(proc)
    warnings = warning_lines(proc)
    assert len(warnings) == 1 and str(exp_dir / 'checkpoint') in warnings[0], describe(proc)
    assert 'Restoring model weights from %s ' % (exp_dir / 'model-1001') in proc.stdout, describe(proc)


@pytest.mark.parametrize('content', sorted(STATE_DAMAGES))
def test_testing_with_a_damaged_list_finds_the_checkpoints_on_disk(content, logdir):
    exp_dir = logdir / SINUSOID_EXP
    (exp_dir / 'checkpoint').write_bytes(STATE_DAMAGES[content])
    proc = run_main(*SINUSOID, '--train=False', '--logdir=%s' % logdir, cwd=logdir.parent)
    assert_went_past_the_damaged_list(proc, exp_dir)
    assert (exp_dir / 'test_ubs10_stepsize0.001.csv').exists()
    assert (exp_dir / 'checkpoint').read_bytes() == STATE_DAMAGES[content]  # a test writes no checkpoint list


@pytest.mark.parametrize('content', sorted(STATE_DAMAGES))
def test_resuming_with_a_damaged_list_finds_the_checkpoints_on_disk(content, logdir):
    exp_dir = logdir / SINUSOID_EXP
    (exp_dir / 'checkpoint').write_bytes(STATE_DAMAGES[content])
    kept = {itr: files_of(exp_dir, itr) for itr in (1000, 1001)}
    proc = run_main(*SINUSOID, '--metatrain_iterations=1003', '--logdir=%s' % logdir, cwd=logdir.parent)
    assert_went_past_the_damaged_list(proc, exp_dir)
    assert proc.stdout.splitlines()[-1].startswith('Last checkpoint: %s ' % (exp_dir / 'model-1002'))
    assert {itr: files_of(exp_dir, itr) for itr in (1000, 1001)} == kept  # neither rewritten nor deleted
    listed = (exp_dir / 'checkpoint').read_text()  # the save wrote a new list
    assert listed.startswith('model_checkpoint_path: "model-1002"'), listed


def test_testing_with_the_list_deleted_finds_the_checkpoints_on_disk(logdir):
    exp_dir = logdir / SINUSOID_EXP
    (exp_dir / 'checkpoint').unlink()
    proc = run_main(*SINUSOID, '--train=False', '--logdir=%s' % logdir, cwd=logdir.parent)
    assert proc.returncode == 0, describe(proc)
    assert 'Restoring model weights from %s ' % (exp_dir / 'model-1001') in proc.stdout, describe(proc)


## A checkpoint that reads back but is not what its name says ------------------------------------------

def test_a_renamed_checkpoint_is_refused(logdir):
    exp_dir = logdir / SINUSOID_EXP
    for name in os.listdir(exp_dir):
        if name.startswith('model-1001.'):
            (exp_dir / name).rename(exp_dir / name.replace('model-1001.', 'model-1005.'))
    proc = run_main(*SINUSOID, '--train=False', '--test_iter=1005', '--logdir=%s' % logdir, cwd=logdir.parent)
    line = one_error_line(proc)
    assert 'holds the state after iteration 1001, not 1005' in line, line


## Damage after the check: Checkpoints.restore on its own ----------------------------------------------

@pytest.mark.parametrize('damage', DAMAGES, ids=lambda d: d.__name__)
def test_restore_names_a_file_damaged_after_path_for_read_it(damage, tmp_path):
    """The files are read back by path_for; a file damaged between that and the restore is named too."""
    import main
    from test_units import sinusoid_model
    main.Checkpoints(sinusoid_model(), str(tmp_path)).save(1000)
    main.Checkpoints(sinusoid_model(), str(tmp_path)).save(1001)
    ckpt = main.Checkpoints(sinusoid_model(), str(tmp_path))
    path = ckpt.path_for(-1)
    assert path == str(tmp_path / 'model-1001')
    damaged = damage(path)
    with pytest.raises(main.DamagedCheckpoint) as caught:
        ckpt.restore(path)
    message = str(caught.value)
    assert '\n' not in message and path in message and damaged in message, message
    assert 'run the same command again to resume from %s' % (tmp_path / 'model-1000') in message, message


## Flags: one problem, one line ------------------------------------------------------------------------

def test_negative_iterations_give_one_error_line(tmp_path):
    proc = run_main('--metatrain_iterations=-5', '--logdir=%s' % (tmp_path / 'logs'), cwd=tmp_path, timeout=120)
    assert proc.returncode == 2, describe(proc)
    assert proc.stderr.splitlines() == ['Error: --metatrain_iterations=-5 must be 0 or more'], describe(proc)
