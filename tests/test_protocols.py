"""How the paper obtained each figure (paper.py's protocols), the evaluation-only cells of reproduce.py,
and the results table in the layout of the paper's Table 1 (docs/experiments.md, the protocols)."""
import io
import os
import subprocess
import sys

import pytest

import paper
import reproduce
from conftest import REPO
from runner import describe, train_experiment, user_env


def write_test_csv(path, means, ci95):
    """A test CSV as main.py writes it: header update0..update10, rows means, stds, ci95."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        f.write(','.join('update%d' % i for i in range(len(means))) + '\n')
        for row in (means, [c * 600 ** 0.5 / 1.96 for c in ci95], ci95):
            f.write(','.join(repr(float(v)) for v in row) + '\n')
    return path


## The protocols of paper.py ---------------------------------------------------------------------------

# cell -> the experiment whose trained model it evaluates (docs/experiments.md quotes the sources)
EVALUATED = {
    'sinusoid-5shot': 'sinusoid-10shot',                      # paper, section 5.1: trained K=10, tested K=5
    'sinusoid-5shot-pretrained': 'sinusoid-10shot-pretrained',  # the reference's baseline command: K=10
    'sinusoid-5shot-pretrained-step0.01': 'sinusoid-10shot-pretrained',  # a variant: MAML's step, untuned
    'omniglot-5way-5shot': 'omniglot-5way-1shot',             # first author, cbfinn/maml issue #3
    'omniglot-5way-5shot-fo': 'omniglot-5way-1shot-fo',
    'omniglot-5way-5shot-fc': 'omniglot-5way-1shot-fc',
    'omniglot-20way-5shot': 'omniglot-20way-1shot',
    'omniglot-20way-5shot-fo': 'omniglot-20way-1shot-fo',
}


def test_the_cells_that_the_paper_obtained_from_another_model_evaluate_it():
    assert {e.name: e.evaluates for e in paper.EXPERIMENTS if e.evaluates} == EVALUATED


@pytest.mark.parametrize('name', sorted(EVALUATED))
def test_an_evaluation_cell_is_its_models_flags_tested_at_another_k(name):
    """Same network, N-way, meta-batch, step size and steps as the model it evaluates (only the K it is
    tested at differs), so main.py finds that model's folder; the model itself trains."""
    experiment, source = paper.get(name), paper.get(EVALUATED[name])
    assert source.evaluates is None
    differences = reproduce.flag_differences(experiment, source)
    if experiment.step_grid:  # a tuned step (tests/test_tuned_step.py): the model's own step names its folder
        assert {d.partition('=')[0] for d in differences} == {'--update_lr', '--train_update_lr'}
    else:
        assert differences == []
    assert experiment.trained_k == source.trained_k == source.evaluated_k
    assert experiment.evaluated_k == 5 != experiment.trained_k
    assert reproduce.exp_dir_name(list(experiment.flags)) == reproduce.exp_dir_name(list(source.flags))
    assert reproduce.csv_name(list(experiment.flags)) != reproduce.csv_name(list(source.flags))
    assert experiment.protocol and experiment.published[0] is not None  # a figure of the paper's own


def test_the_evaluations_of_one_model_write_files_of_their_own():
    """Two cells evaluating one model at the same K and step would write the same CSV and check file
    (a tuned step equal to a variant's fixed one, say): each evaluation's names differ from its siblings'."""
    names = [(e.evaluates, reproduce.check_name(e)) for e in paper.EXPERIMENTS if e.evaluates]
    assert len(names) == len(set(names)) and len(names) == len(EVALUATED)


def test_miniimagenet_meta_batch_is_the_papers_appendix():
    """Appendix A.1: "a meta batch-size of 4 and 2 tasks for 1-shot and 5-shot training"; the
    reference's 5-shot command (4) is a variant."""
    for name, mbs in (('miniimagenet-5way-1shot', 4), ('miniimagenet-5way-1shot-fo', 4),
                      ('miniimagenet-5way-5shot', 2), ('miniimagenet-5way-5shot-fo', 2),
                      ('miniimagenet-5way-5shot-mbs4', 4)):
        assert int(paper.get(name).flag_value('meta_batch_size')) == mbs, name
    assert paper.get('miniimagenet-5way-5shot-mbs4').variant


def test_runs_trained_the_other_way_are_variants_outside_the_front_table():
    front = set(paper.front_table_names())
    for name in ('sinusoid-5shot-train5', 'sinusoid-5shot-train5-alpha0.001', 'sinusoid-5shot-pretrained-train5',
                 'omniglot-5way-5shot-train5', 'omniglot-5way-5shot-fc-train5', 'sinusoid-10shot-alpha0.001'):
        experiment = paper.get(name)
        assert experiment.variant and experiment.evaluates is None and name not in front, name
        assert experiment.trained_k == experiment.evaluated_k
        assert name in reproduce.variant_names()
    assert not any(paper.get(name).variant for name in front)
    assert {name for name in EVALUATED if not paper.get(name).variant} <= front
    untuned = 'sinusoid-5shot-pretrained-step0.01'   # evaluated another way: a variant of the same model
    assert paper.get(untuned).variant and untuned not in front and untuned in reproduce.variant_names()


def test_table1_layout_names_the_papers_cells():
    cells = {(block, label, heading): (paper.table1_cell(name, suffix) or paper.Experiment('-', '', (), (), ())).name
             for block, columns in paper.TABLE1_BLOCKS for heading, name in columns
             for label, suffix in paper.TABLE1_ROWS}
    assert cells[('Omniglot', 'MAML (no conv)', '5-way 5-shot')] == 'omniglot-5way-5shot-fc'
    assert cells[('Omniglot', 'first order approx.', '20-way 5-shot')] == 'omniglot-20way-5shot-fo'
    assert cells[('Omniglot', 'MAML (no conv)', '20-way 1-shot')] == '-'           # the paper has no such cell
    assert cells[('miniImagenet', 'first order approx.', '5-way 5-shot')] == 'miniimagenet-5way-5shot-fo'
    assert cells[('miniImagenet', 'MAML (no conv)', '5-way 1-shot')] == '-'
    assert [name for _, name in paper.SINE_FIGURE] == ['sinusoid-5shot', 'sinusoid-5shot-pretrained']


## Evaluation-only cells: the command -------------------------------------------------------------------

def run_reproduce(*args, cwd):
    return subprocess.run([sys.executable, str(REPO / 'reproduce.py')] + list(args), cwd=str(cwd), env=user_env(),
                          capture_output=True, text=True, timeout=600)


def test_an_evaluation_tests_the_model_at_k5_and_writes_its_results_beside_it(tmp_path):
    """reproduce.py sinusoid-5shot --logdir=<a sinusoid-10shot run>: no training; the K=5 test CSV, pkl
    and check_ubs5_stepsize0.01.txt land in the K=10 model's folder; --check and the table find them."""
    models = tmp_path / 'models'
    exp_dir = train_experiment('sinusoid-10shot', models / 'sinusoid-10shot', 20)
    before = sorted(p for p in os.listdir(exp_dir) if p.startswith('model-'))
    proc = run_reproduce('sinusoid-5shot', '--logdir=%s' % (models / 'sinusoid-10shot'),
                         '--plot_dir=%s' % (tmp_path / 'figures'), cwd=tmp_path)
    assert proc.returncode in (0, 1), describe(proc)
    assert '--train=False' in proc.stdout and 'Iteration' not in proc.stdout   # tested, not trained
    assert '--update_batch_size=5 --train_update_batch_size=10' in proc.stdout
    assert sorted(p for p in os.listdir(exp_dir) if p.startswith('model-')) == before
    for name in ('test_ubs5_stepsize0.01.csv', 'test_ubs5_stepsize0.01.pkl', 'check_ubs5_stepsize0.01.txt'):
        assert (exp_dir / name).exists(), name
    check = (exp_dir / 'check_ubs5_stepsize0.01.txt').read_text()
    assert [row['experiment'] for row in reproduce.read_check_txt(str(exp_dir / 'check_ubs5_stepsize0.01.txt'))] \
        == ['sinusoid-5shot'] * 3
    assert check.splitlines()[2].split()[2] == '20/70000'   # the model's iterations
    # --check infers the cell from the model's folder name; the table reads the check file
    out = io.StringIO()
    reproduce.cmd_check(str(exp_dir / 'test_ubs5_stepsize0.01.csv'), None, 'text', out=out)
    assert out.getvalue() == check
    rows = reproduce.results_table_rows(str(models), ['sinusoid-5shot'])
    assert [r['ours'] for r in rows] == [r['ours'] for r in reproduce.read_check_txt(
        str(exp_dir / 'check_ubs5_stepsize0.01.txt'))]
    assert rows[0]['model in models/'] == 'yes'


def one_error_line(proc):
    assert proc.returncode == 2, describe(proc)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('Error: '), proc.stderr
    return lines[0]


@pytest.fixture(scope='module')
def fake_models(tmp_path_factory):
    """A models/ folder with a checkpoint file in the run folder of each of a few 1-shot Omniglot models:
    enough for the checks that come before main.py runs."""
    models = tmp_path_factory.mktemp('models')
    for name in ('omniglot-5way-1shot', 'omniglot-5way-1shot-fc', 'omniglot-20way-1shot'):
        exp_dir = models / name / reproduce.exp_dir_name(list(paper.get(name).flags))
        exp_dir.mkdir(parents=True)
        (exp_dir / 'checkpoint').write_text('model_checkpoint_path: "model-59999"\n')
    other = models / 'mine' / reproduce.exp_dir_name(list(paper.get('omniglot-20way-1shot').flags))
    other.mkdir(parents=True)
    (other / 'checkpoint').write_text('model_checkpoint_path: "model-99"\n')
    return models


@pytest.mark.parametrize('args, message', [
    (['omniglot-5way-5shot', '--logdir={models}/nothing-here'],
     'Error: no trained model of omniglot-5way-1shot in {models}/nothing-here/cls_5.mbs_32.ubs_1.numstep1.'
     'updatelr0.4batchnorm: train it first (python reproduce.py omniglot-5way-1shot), or give its logdir with '
     '--logdir'),
    (['omniglot-5way-5shot', '--logdir={models}/omniglot-5way-1shot-fc'],
     'Error: {models}/omniglot-5way-1shot-fc holds omniglot-5way-1shot-fc, not omniglot-5way-1shot, the model '
     'that omniglot-5way-5shot evaluates (they differ in --conv=False)'),
    (['omniglot-5way-5shot-fc', '--logdir={models}/omniglot-5way-1shot'],
     'Error: {models}/omniglot-5way-1shot holds omniglot-5way-1shot, not omniglot-5way-1shot-fc, the model '
     'that omniglot-5way-5shot-fc evaluates (they differ in --conv=False)'),
    (['omniglot-5way-5shot', '--logdir={models}/omniglot-20way-1shot'],
     'Error: {models}/omniglot-20way-1shot holds omniglot-20way-1shot, not omniglot-5way-1shot, the model that '
     'omniglot-5way-5shot evaluates (they differ in --meta_batch_size=16 --meta_batch_size=32 --num_classes=20 '
     '--num_updates=1 --num_updates=5 --update_lr=0.1 --update_lr=0.4)'),
    (['omniglot-5way-5shot', '--logdir={models}/mine'],
     'Error: no trained model of omniglot-5way-1shot in {models}/mine/cls_5.mbs_32.ubs_1.numstep1.'
     'updatelr0.4batchnorm (the logdir holds cls_20.mbs_16.ubs_1.numstep5.updatelr0.1batchnorm: another '
     'configuration): train it first (python reproduce.py omniglot-5way-1shot), or give its logdir with --logdir'),
    (['omniglot-5way-5shot', '--metatrain_iterations=5', '--logdir={models}/omniglot-5way-1shot'],
     'Error: omniglot-5way-5shot is an evaluation of the model of omniglot-5way-1shot and trains nothing: '
     '--metatrain_iterations does not apply (train the model with python reproduce.py omniglot-5way-1shot)'),
    (['omniglot-20way-5shot-fo', '--compare-first-order'],
     'Error: omniglot-20way-5shot-fo is an evaluation of the model of omniglot-20way-1shot-fo and trains '
     'nothing: --compare-first-order does not apply (train the model with python reproduce.py '
     'omniglot-20way-1shot-fo)'),
    (['--release', '{models}/omniglot-5way-5shot'],
     'Error: omniglot-5way-5shot is an evaluation of the model of omniglot-5way-1shot, released with it: run '
     'python reproduce.py omniglot-5way-5shot'),
])
def test_a_bad_combination_is_one_error_line(fake_models, tmp_path, args, message):
    (fake_models / 'omniglot-5way-5shot').mkdir(exist_ok=True)
    proc = run_reproduce(*[a.format(models=fake_models) for a in args], cwd=tmp_path)
    assert one_error_line(proc) == message.format(models=fake_models)


def test_the_default_model_of_an_evaluation_is_the_released_one():
    assert reproduce.default_logdir('omniglot-20way-5shot') == os.path.relpath(REPO / 'models' / 'omniglot-20way-1shot')
    assert reproduce.default_logdir('omniglot-20way-1shot') == os.path.join('logs', 'omniglot-20way-1shot')
    assert reproduce.check_name(paper.get('omniglot-20way-5shot')) == 'check_ubs5_stepsize0.1.txt'
    assert reproduce.check_name(paper.get('omniglot-20way-1shot')) == 'check.txt'


## The results table in the paper's layout --------------------------------------------------------------

def release(models, name, means_at_step, iterations=60000):
    """A test CSV and its check file where reproduce.py leaves them (an evaluation: in its model's folder)."""
    experiment = paper.get(name)
    exp_dir = reproduce.released_dir(experiment, str(models))
    os.makedirs(exp_dir, exist_ok=True)
    means, ci95 = [0.2] * 11, [0.01] * 11
    for step, (mean, ci) in zip(experiment.steps, means_at_step):
        means[step], ci95[step] = mean, ci
    path = write_test_csv(os.path.join(exp_dir, reproduce.csv_name(list(experiment.flags))), means, ci95)
    with open(os.path.join(exp_dir, 'checkpoint'), 'w') as f:
        f.write('model_checkpoint_path: "model-%d"\n' % (iterations - 1))
    out = io.StringIO()
    reproduce.cmd_check(path, name, 'text', out=out)
    with open(os.path.join(exp_dir, reproduce.check_name(experiment)), 'w') as f:
        f.write(out.getvalue())


def test_the_front_table_is_the_papers_table1_and_sinusoid_figure(tmp_path):
    models = tmp_path / 'models'
    release(models, 'omniglot-5way-1shot', [(0.9923, 0.0035)])
    release(models, 'omniglot-5way-5shot', [(0.9956, 0.0012)])          # the 1-shot model at 5 shots
    release(models, 'omniglot-5way-5shot-train5', [(0.9919, 0.0016)], iterations=10187)
    release(models, 'omniglot-20way-1shot', [(0.8213, 0.0066)], iterations=9238)
    live = models / 'omniglot-20way-1shot-fo' / reproduce.exp_dir_name(list(paper.get('omniglot-20way-1shot-fo').flags))
    live.mkdir(parents=True)   # a run still training: a checkpoint, no test yet
    (live / 'checkpoint').write_text('model_checkpoint_path: "model-1999"\n')
    release(models, 'sinusoid-10shot', [(0.4, 0.04), (0.2, 0.05), (0.19, 0.1)], iterations=70000)
    release(models, 'sinusoid-5shot', [(0.707, 0.074), (0.78, 0.379), (0.4, 0.1)], iterations=70000)
    out = io.StringIO()
    assert reproduce.cmd_table('markdown', out=out, models=str(models)) == 0
    text = out.getvalue()
    lines = text.splitlines()
    assert '| method | 5-way 1-shot | 5-way 5-shot | 20-way 1-shot | 20-way 5-shot |' in lines
    assert '| method | 5-way 1-shot | 5-way 5-shot |' in lines
    maml = next(line for line in lines if line.startswith('| MAML |'))
    assert maml == ('| MAML | 99.23 +- 0.35 (paper 98.7 +- 0.4) 60k reproduced | 99.56 +- 0.12 (paper 99.9 +- 0.1) '
                    '60k below | 82.13 +- 0.66 (paper 95.8 +- 0.3) 9.2k/60k below so far | - (paper 98.9 +- '
                    '0.2) not evaluated yet |')
    assert '| MAML (no conv) | - (paper 89.7 +- 1.1) | - (paper 97.5 +- 0.6) | - | - |' in lines
    assert ('| first order approx. | - (paper 98.3 +- 0.5) | - (paper 99.2 +- 0.2) | - (paper 89.4 +- 0.5) '
            'training, not tested yet | - (paper 97.9 +- 0.1) not evaluated yet |') in lines   # no live iterations
    assert '| MAML | - (paper 48.70 +- 1.84) | - (paper 63.11 +- 0.92) |' in lines
    assert '| 1 | 0.707 +- 0.074 (paper 0.67) 70k reproduced | - (paper 2.41) |' in lines
    assert 'omniglot-5way-5shot-train5' not in text and '99.19' not in text   # a variant: not here
    out = io.StringIO()
    reproduce.cmd_table('markdown', out=out, models=str(models), variants=True)
    variants = {line.split(' | ')[0][2:]: line for line in out.getvalue().splitlines()[2:]}
    assert '99.19 +- 0.16' in variants['omniglot-5way-5shot-train5']
    assert '10187/60000' in variants['omniglot-5way-5shot-train5']
    assert set(variants) == set(reproduce.variant_names())
    assert not set(variants) & set(paper.front_table_names())


def test_paper_figures_keep_the_papers_decimals_and_iterations_are_compact():
    assert reproduce.paper_figure((99.9, 0.1)) == '99.9 +- 0.1'
    assert reproduce.paper_figure((48.70, 1.84)) == '48.70 +- 1.84'
    assert reproduce.paper_figure((0.35, None)) == '0.35'
    assert reproduce.compact_iterations('60000/60000') == '60k'
    assert reproduce.compact_iterations('10187/60000') == '10.2k/60k'
    assert reproduce.compact_iterations('-') == '-'


def test_variants_needs_table():
    proc = run_reproduce('--variants', cwd=REPO)
    assert one_error_line(proc) == 'Error: --variants goes with --table (python reproduce.py --help)'


def test_an_undetermined_sinusoid_cell_shows_its_robust_figures_not_the_mean():
    # a few diverging tasks make the mean a number like 8.6e10: the front table shows the median in its
    # place, named as such; a decided cell keeps the mean.
    row = {'ours': '85879576767.660 +- 168183641993.642', 'iterations': '70000/70000',
           'verdict': reproduce.UNDETERMINED, 'model in models/': 'yes',
           'median': '0.153', 'mean of tasks never > 10': '0.382 (572/600)'}
    cell = reproduce.table_cell(row, (0.35, None))
    assert '85879576767' not in cell
    assert 'median 0.153' in cell and cell.endswith('undetermined')
    decided = dict(row, ours='0.780 +- 0.379', verdict=reproduce.BELOW)
    assert reproduce.table_cell(decided, (0.38, None)).startswith('0.780 +- 0.379 (paper 0.38)')
    no_robust = {k: v for k, v in row.items() if k not in reproduce.ROBUST_COLUMNS}
    assert reproduce.table_cell(no_robust, (0.35, None)).startswith('85879576767.660')


def test_release_names_the_evaluations_made_on_an_older_checkpoint_by_iterations_not_file_times(tmp_path):
    # a clone does not keep file times: the check file's iterations say which checkpoint an evaluation tested
    source, evaluation = paper.get('omniglot-5way-1shot'), paper.get('omniglot-5way-5shot')
    exp_dir = tmp_path / reproduce.exp_dir_name(list(source.flags))
    exp_dir.mkdir()
    (exp_dir / 'checkpoint').write_text('model_checkpoint_path: "model-99"\n')
    check = exp_dir / reproduce.check_name(evaluation)

    def stale():
        out = io.StringIO()
        reproduce.stale_evaluations(source, str(exp_dir), 'model-99', out)
        return out.getvalue()

    assert 'omniglot-5way-5shot is not evaluated on model-99 yet' in stale()  # no check file
    row = '  '.join(('omniglot-5way-5shot', '3', '%d/60000', '99.90 +- 0.10', '99.56 +- 0.12', '-0.34', 'below'))
    header = '  '.join(reproduce.COLUMNS)
    check.write_text('\n'.join((header, '-' * len(header), row % 50, reproduce.LEGEND)) + '\n')
    assert 'not evaluated on model-99 yet' in stale()
    check.write_text('\n'.join((header, '-' * len(header), row % 100, reproduce.LEGEND)) + '\n')
    assert stale() == ''
