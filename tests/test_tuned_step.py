"""The pretrained baseline's tuned step size (paper, section 5.1: "using an automatically tuned step size"):
the rule of docs/experiments.md ("The tuned step size"), as reproduce.py applies it on validation tasks,
and the record it leaves beside the released model."""
import dataclasses
import io
import os
import subprocess
import sys

import pytest

import paper
import reproduce
from conftest import REPO
from runner import describe, main_command, train_experiment, user_env

CELL = 'sinusoid-5shot-pretrained'


def curve(step1, later):
    """{step: validation mean}: `step1` after one step, `later` at steps 2..10 (step 0 is not scored)."""
    return {0: 9.0, 1: step1, **{step: later for step in range(2, 11)}}


def test_the_rule_takes_the_best_mean_over_steps_1_to_10_not_the_best_first_step():
    experiment = paper.get(CELL)
    curves = {0.01: curve(2.0, 1.9), 0.1: curve(1.0, 3.0), 0.5: curve(0.5, float('inf'))}
    best, scores = reproduce.choose_step(experiment, curves)
    assert best == 0.01                                   # 0.1 is best after one step, worse over the curve
    assert scores[0.01] == pytest.approx((2.0 + 9 * 1.9) / 10)
    assert scores[0.5] is None                            # not finite at some step: out, however good step 1
    accuracy = dataclasses.replace(experiment, metric=paper.ACCURACY)
    assert reproduce.choose_step(accuracy, {0.1: curve(0.9, 0.9), 0.4: curve(0.95, 0.95)})[0] == 0.4


def test_no_finite_candidate_is_an_error():
    curves = {0.1: curve(float('nan'), 1.0), 0.5: curve(1.0, float('inf'))}
    with pytest.raises(reproduce.ReproduceError, match='no step size of 0.1, 0.5 gives finite'):
        reproduce.choose_step(paper.get(CELL), curves)


def test_the_pretrained_cell_tunes_its_step_and_keeps_its_models_folder():
    experiment, source = paper.get(CELL), paper.source_of(paper.get(CELL))
    assert experiment.step_grid == paper.PRETRAINED_STEP_GRID and len(experiment.step_grid) >= 5
    assert list(experiment.step_grid) == sorted(experiment.step_grid)
    assert experiment.update_lr in experiment.step_grid[1:-1]   # never at the grid's edge (rule 4)
    assert float(experiment.flag_value('train_update_lr')) == source.update_lr
    assert reproduce.exp_dir_name(list(experiment.flags)) == reproduce.exp_dir_name(list(source.flags))
    assert 'tuned' in experiment.protocol
    # the cell's former step, MAML's 0.01, is a variant of the same model
    untuned = paper.get('sinusoid-5shot-pretrained-step0.01')
    assert untuned.variant and untuned.evaluates == source.name and untuned.update_lr == 0.01
    assert [e.name for e in paper.EXPERIMENTS if e.step_grid] == [CELL]


def test_tuning_scores_validation_tasks_then_tests_the_choice_beside_the_model(tmp_path):
    """A grid of a tiny step, a small one (not paper.py's) and one so large that the fine-tuning diverges:
    the small one wins. The validation CSVs and the record land beside the model, the model's own files
    (a test CSV named as a validation run at a step of the grid would be, included) are untouched, and the
    test CSV and check file are those of the chosen step."""
    logdir = tmp_path / 'sinusoid-10shot-pretrained'
    exp_dir = train_experiment('sinusoid-10shot-pretrained', logdir, 30)
    (exp_dir / 'test_ubs5_stepsize1e-07.csv').write_text('an earlier test at this step\n')
    (exp_dir / 'test_ubs5_stepsize1e-07.pkl').write_bytes(b'its tasks')
    own = {name: (exp_dir / name).read_bytes() for name in os.listdir(exp_dir)}
    experiment = dataclasses.replace(paper.get(CELL), step_grid=(1e-07, 0.03, 1000.0))
    opts, extra = reproduce.parse_args([CELL, '--logdir=%s' % logdir, '--plot_dir=%s' % (tmp_path / 'figures')])
    out = io.StringIO()
    reproduce.cmd_evaluate(experiment, opts, extra, out=out)
    printed = out.getvalue()
    assert {name: (exp_dir / name).read_bytes() for name in own} == own
    folder = exp_dir / 'tune_ubs5'
    assert sorted(os.listdir(folder)) == ['val_ubs5_stepsize0.03.csv', 'val_ubs5_stepsize1000.0.csv',
                                          'val_ubs5_stepsize1e-07.csv']
    assert printed.count('--update_lr=1e-07 --train=False --test_set=False') == 1   # validation tasks
    curves = reproduce.read_tuning(experiment, str(exp_dir))
    assert curves[1e-07][10] == pytest.approx(curves[1e-07][1], rel=1e-3)   # a tiny step: a flat curve (step 0
    assert curves[1e-07][1] != curves[0.03][1]                                # is the support loss)
    assert reproduce.choose_step(experiment, curves)[1][1000.0] is None       # diverged: out
    record = (exp_dir / 'tune_ubs5.txt').read_text()
    assert record == reproduce.tuning_text(experiment, curves, 30)
    assert record.splitlines()[-1] == 'chosen: 0.03' and 'model of 30 iterations' in record
    # the test: on test tasks (not the validation ones), at the chosen step, in the cell's own files
    assert '--update_lr=0.03 --train=False --test_set=True' in printed
    test_csv = exp_dir / 'test_ubs5_stepsize0.03.csv'
    assert reproduce.read_test_csv(str(test_csv))['means'] != curves[0.03]
    rows = reproduce.read_check_txt(str(exp_dir / 'check_ubs5_stepsize0.03.txt'))
    assert [row['experiment'] for row in rows] == [CELL] * 3
    assert 'paper.py gives %s --update_lr=%s' % (CELL, paper.PRETRAINED_STEP) in printed


def fake_validation(monkeypatch, score, fail_at=None):
    """main.py replaced: a validation run at step alpha writes a CSV whose every figure is score(alpha),
    and the run at fail_at fails; the checkpoint copy is skipped."""
    monkeypatch.setattr(reproduce, 'copy_latest_checkpoint', lambda *args: None)

    def run_main(flags, out):
        alpha = reproduce.main_flag_values(flags).update_lr
        if alpha == fail_at:
            return reproduce.RunResult('main.py', 1, 0, 0, 0, [])
        path = reproduce.test_csv_path(flags)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, 'w') as f:
            f.write(','.join('update%d' % i for i in range(11)) + '\n')
            f.writelines(','.join([repr(score(alpha))] * 11) + '\n' for _ in range(3))
        return reproduce.RunResult('main.py', 0, 0, 0, 0, [])
    monkeypatch.setattr(reproduce, 'run_main', run_main)


@pytest.mark.parametrize('score, edge', [(lambda alpha: 1.0 - alpha, 0.3), (lambda alpha: alpha, 0.1)])
def test_a_best_step_at_either_edge_of_the_grid_is_refused(tmp_path, monkeypatch, score, edge):
    experiment = dataclasses.replace(paper.get(CELL), step_grid=(0.1, 0.2, 0.3))
    fake_validation(monkeypatch, score)
    with pytest.raises(reproduce.ReproduceError, match='the best step, %s, is at the edge of the grid' % edge):
        reproduce.tune_step(experiment, str(tmp_path), reproduce.experiment_flags(experiment, 'x'), io.StringIO())
    assert (tmp_path / 'tune_ubs5.txt').read_text().splitlines()[-1] == (
        'chosen: none (%s is at the edge of the grid: widen step_grid in paper.py)' % edge)


def test_a_failed_validation_run_leaves_the_previous_tuning_as_it_was(tmp_path, monkeypatch):
    experiment = dataclasses.replace(paper.get(CELL), step_grid=(0.1, 0.2, 0.3))
    flags = reproduce.experiment_flags(experiment, 'x')
    fake_validation(monkeypatch, lambda alpha: abs(alpha - 0.2))
    assert reproduce.tune_step(experiment, str(tmp_path), flags, io.StringIO()) == 0.2
    before = {p: p.read_bytes() for p in sorted(tmp_path.rglob('*')) if p.is_file()}
    assert len(before) == 4   # three CSVs and the record
    fake_validation(monkeypatch, lambda alpha: 5.0, fail_at=0.3)
    with pytest.raises(reproduce.ReproduceError, match='the validation test at step 0.3 failed'):
        reproduce.tune_step(experiment, str(tmp_path), flags, io.StringIO())
    assert {p: p.read_bytes() for p in sorted(tmp_path.rglob('*')) if p.is_file()} == before


@pytest.mark.parametrize('extra', [['--update_lr=0.02'], ['--test_set=True'], ['--test_iter=5']])
def test_flags_that_would_undo_the_tuning_are_refused(tmp_path, extra):
    """A user's step, the test tasks or another checkpoint: one error line, before any run."""
    proc = subprocess.run([sys.executable, str(REPO / 'reproduce.py'), CELL, '--logdir=%s' % tmp_path, '--']
                          + extra, capture_output=True, text=True, cwd=str(tmp_path), env=user_env(), timeout=120)
    assert proc.returncode == 2, describe(proc)
    assert proc.stderr.strip() == ('Error: %s tunes its step size on validation tasks of the latest checkpoint: %s '
                                   'does not apply (a fixed step: sinusoid-5shot-pretrained-step0.01)'
                                   % (CELL, extra[0]))


def test_tuning_needs_a_checkpoint_of_main_py(tmp_path):
    (tmp_path / 'model69999.index').write_text('a checkpoint of the reference, not main.py\'s')
    with pytest.raises(reproduce.ReproduceError, match='needs a checkpoint of main.py .* found none'):
        reproduce.copy_latest_checkpoint(str(tmp_path), str(tmp_path / 'copy'))


def released_tuning():
    experiment = paper.get(CELL)
    exp_dir = reproduce.released_dir(experiment)
    if reproduce.trained_iterations(exp_dir) is None:
        pytest.skip('%s is not released' % exp_dir)
    return experiment, exp_dir


def test_the_released_record_still_chooses_the_step_of_paper_py():
    """The validation CSVs committed beside the released pretrained model: the rule, applied to them today,
    gives paper.py's step and the committed record, and they are of the model's latest checkpoint."""
    experiment, exp_dir = released_tuning()
    curves = reproduce.read_tuning(experiment, exp_dir)
    assert list(curves) == list(experiment.step_grid), 'a validation CSV of the grid is missing'
    assert sorted(os.listdir(reproduce.tuning_dir(experiment, exp_dir))) == sorted(
        reproduce.validation_csv_name(experiment, alpha) for alpha in experiment.step_grid)
    assert reproduce.choose_step(experiment, curves)[0] == experiment.update_lr
    with open(reproduce.tuning_record(experiment, exp_dir)) as f:
        assert f.read() == reproduce.tuning_text(experiment, curves, reproduce.trained_iterations(exp_dir))


def test_the_released_validation_csv_of_the_chosen_step_rescores(tmp_path):
    """main.py on a copy of the released model, validation tasks at paper.py's step: the committed CSV."""
    experiment, exp_dir = released_tuning()
    flags = reproduce.experiment_flags(experiment, str(tmp_path))
    reproduce.copy_latest_checkpoint(exp_dir, str(tmp_path / os.path.basename(exp_dir)))
    proc = subprocess.run(main_command(*flags, '--train=False', '--test_set=False'), cwd=str(tmp_path),
                          env=user_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, describe(proc)
    rescored = reproduce.read_test_csv(reproduce.test_csv_path(flags))['means']
    committed = reproduce.read_tuning(experiment, exp_dir)[experiment.update_lr]
    assert sorted(rescored) == sorted(committed) == list(range(11))
    for step in committed:
        assert rescored[step] == pytest.approx(committed[step], rel=1e-5), step
