"""reproduce.py: the paper table, the verdict, and the commands end to end on small runs."""
import io
import os
import re
import subprocess
import sys

import pytest

import paper
import reproduce
from conftest import REPO, SHARED
from runner import user_env
from synthetic import make_omniglot

COLUMNS = ['experiment', 'step', 'iterations', 'published', 'ours', 'difference', 'verdict']


def write_test_csv(path, means, ci95, steps=11):
    """A test CSV as main.py writes it: header update0..update10, rows means, stds, ci95."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    stds = [c * 600 ** 0.5 / 1.96 for c in ci95]
    with open(path, 'w') as f:
        f.write(','.join('update%d' % i for i in range(steps)) + '\n')
        for row in (means, stds, ci95):
            f.write(','.join(repr(float(v)) for v in row) + '\n')
    return path


def omniglot_csv(tmp_path, step3_accuracy, step3_ci):
    """A test CSV in the folder layout of the Omniglot 5-way 1-shot experiment (fractions)."""
    experiment = paper.get('omniglot-5way-1shot')
    flags = reproduce.experiment_flags(experiment, logdir=str(tmp_path / 'omniglot-5way-1shot'))
    path = reproduce.test_csv_path(flags + ['--train=False'])
    means = [0.2] * 11
    ci95 = [0.01] * 11
    means[3], ci95[3] = step3_accuracy, step3_ci
    return write_test_csv(path, means, ci95)


def check(path, name=None):
    out = io.StringIO()
    status = reproduce.cmd_check(path, name, 'text', out=out)
    return status, out.getvalue()


def table_rows(text):
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split() == COLUMNS)
    rows = []
    for line in lines[header + 2:]:
        if not line.strip() or line.startswith('verdict:'):
            break
        rows.append(re.split(r'\s{2,}', line.strip()))
    return rows


## The table --------------------------------------------------------------------------------------

def test_paper_table_matches_spec():
    """Every published figure of paper.py appears in SPEC.md's table of published figures."""
    spec = (SHARED / 'SPEC.md').read_text() if (SHARED / 'SPEC.md').exists() else None
    if spec is None:
        pytest.skip('../shared/SPEC.md is absent')
    section = spec.split('## Published figures')[1].split('\n## ')[0]
    for experiment in paper.EXPERIMENTS:
        for figure in experiment.published:
            if figure is None:
                continue
            mean, ci = figure
            if experiment.metric == paper.MSE:
                candidates = ['%g' % mean]
            else:
                candidates = ['%.1f +- %.1f' % (mean, ci), '%.2f +- %.2f' % (mean, ci)]
            assert any(c in section for c in candidates), (experiment.name, figure)


def test_experiment_steps_follow_the_paper():
    for experiment in paper.EXPERIMENTS:
        if experiment.name.startswith('omniglot-5way'):
            assert experiment.steps == (3,)
        elif experiment.name.startswith('omniglot-20way'):
            assert experiment.steps == (5,)
        elif experiment.name.startswith('miniimagenet'):
            assert experiment.steps == (10,)
        else:
            assert experiment.steps == (1, 5, 10)
        assert len(experiment.published) == len(experiment.steps)


## The verdict on crafted CSVs ----------------------------------------------------------------------

@pytest.mark.parametrize('accuracy, ci, verdict, status', [
    (0.995, 0.002, 'reproduced', 0),   # above the published 98.7 +- 0.4
    (0.980, 0.004, 'reproduced', 0),   # 98.0 +- 0.4 overlaps 98.7 +- 0.4 (98.4 >= 98.3)
    (0.975, 0.004, 'below', 1),        # 97.5 +- 0.4 does not reach 98.3
])
def test_verdict_of_a_crafted_csv(tmp_path, accuracy, ci, verdict, status):
    path = omniglot_csv(tmp_path, accuracy, ci)
    code, text = check(path)   # the experiment is found from the folder and file names
    rows = table_rows(text)
    assert len(rows) == 1
    row = dict(zip(COLUMNS, rows[0]))
    assert row['experiment'] == 'omniglot-5way-1shot'
    assert row['step'] == '3'
    assert row['published'] == '98.70 +- 0.40'
    assert row['ours'] == '%.2f +- %.2f' % (100 * accuracy, 100 * ci)
    assert row['difference'] == '%+.2f' % (100 * accuracy - 98.7)
    assert row['verdict'] == verdict
    assert code == status


def test_verdict_for_mse_lower_is_better():
    assert reproduce.verdict(0.67, None, 0.60, 0.05, higher_is_better=False) == 'reproduced'
    assert reproduce.verdict(0.67, None, 0.70, 0.05, higher_is_better=False) == 'reproduced'
    assert reproduce.verdict(0.67, None, 0.80, 0.05, higher_is_better=False) == 'below'
    assert reproduce.verdict(None, None, 0.80, 0.05) == 'n/a'


def test_check_from_the_command_line(tmp_path):
    path = omniglot_csv(tmp_path, 0.975, 0.004)
    proc = subprocess.run([sys.executable, str(REPO / 'reproduce.py'), '--check', path],
                          capture_output=True, text=True, cwd=str(tmp_path), timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert dict(zip(COLUMNS, table_rows(proc.stdout)[0]))['verdict'] == 'below'


CHECK_WITHOUT_TENSORFLOW = """
import sys
sys.path.insert(0, sys.argv[1])
import reproduce
status = reproduce.main(sys.argv[2:])
heavy = sorted(m for m in ('tensorflow', 'tf1_checkpoint', 'utils', 'maml') if m in sys.modules)
if heavy:   # an exit status of its own: 1 is the verdict "below", and an AssertionError's
    print('reproduce.py --check imported %s' % heavy, file=sys.stderr)
    sys.exit(3)
sys.exit(status)
"""


@pytest.mark.parametrize('plot', [False, True])
def test_check_does_not_import_tensorflow(tmp_path, plot):
    """--check judges a CSV in well under a second: TensorFlow (seconds to import) must stay out,
    also when the folder holds only the reference's TF1 checkpoints (found by file name)."""
    path = omniglot_csv(tmp_path, 0.975, 0.004)
    open(os.path.join(os.path.dirname(path), 'model29999.index'), 'w').close()
    args = ['--check', path] + (['--plot'] if plot else [])
    proc = subprocess.run([sys.executable, '-c', CHECK_WITHOUT_TENSORFLOW, str(REPO)] + args,
                          capture_output=True, text=True, cwd=str(tmp_path), timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr   # the verdict's status: below
    row = dict(zip(COLUMNS, table_rows(proc.stdout)[0]))
    assert (row['iterations'], row['verdict']) == ('30000/60000', 'below')
    png = path[:-len('.csv')] + '.png'
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    assert os.path.exists(png) == plot and (('figure: %s' % png) in proc.stdout) == plot


def test_reference_checkpoints_are_found_by_name_as_tf1_checkpoint_finds_them(tmp_path):
    import tf1_checkpoint
    names = ['model499.index', 'model999.index', 'model999.data-00000-of-00001', 'model-5000.index',
             'model1500.meta', 'amodel2000.index', 'model.index', 'model3000.index.tmp']
    for name in names:
        (tmp_path / name).write_text('')
    found = tf1_checkpoint.find_reference_checkpoints(str(tmp_path))
    assert sorted(found) == [499, 999]
    assert reproduce.trained_iterations(str(tmp_path)) == max(found) + 1 == 1000
    assert reproduce.REFERENCE_CHECKPOINT_FILE.pattern == tf1_checkpoint.REFERENCE_FILE.pattern
    assert reproduce.trained_iterations(str(tmp_path / 'absent')) is None


def test_check_of_a_file_that_is_not_a_test_csv(tmp_path):
    path = tmp_path / 'omniglot-5way-1shot' / 'notes.csv'
    path.parent.mkdir()
    path.write_text('a,b\n1,2\n')
    proc = subprocess.run([sys.executable, str(REPO / 'reproduce.py'), '--check', str(path),
                           '--experiment', 'omniglot-5way-1shot'],
                          capture_output=True, text=True, cwd=str(tmp_path), timeout=300)
    assert proc.returncode == 2
    assert 'is not a test CSV of main.py' in proc.stderr


## End to end ------------------------------------------------------------------------------------------

def run_reproduce(*args, cwd):
    env = user_env()
    return subprocess.run([sys.executable, str(REPO / 'reproduce.py')] + list(args), cwd=str(cwd), env=env,
                          capture_output=True, text=True, timeout=1200)


def test_list_shows_every_experiment(tmp_path):
    proc = run_reproduce('--list', cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for experiment in paper.EXPERIMENTS:
        assert experiment.name in proc.stdout


def test_sinusoid_end_to_end_prints_the_table(tmp_path):
    proc = run_reproduce('sinusoid-5shot', '--metatrain_iterations=1001', '--logdir=%s' % (tmp_path / 'logs'),
                         cwd=tmp_path)
    assert proc.returncode in (0, 1), proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [dict(zip(COLUMNS, r)) for r in table_rows(proc.stdout)]
    assert [r['step'] for r in rows] == ['1', '5', '10']
    assert all(r['iterations'] == '1001/70000' for r in rows)
    assert [r['published'] for r in rows] == ['0.670', '0.380', '0.350']
    assert all(r['verdict'] in ('reproduced', 'below') for r in rows)
    # a 1001-iteration model is far from the paper: the verdict and the exit status say so
    assert proc.returncode == (1 if any(r['verdict'] == 'below' for r in rows) else 0)
    assert '$ python' in proc.stdout and '--update_lr=0.01' in proc.stdout
    # the figures beside the CSV; the pretrained baseline is not trained, so MAML is drawn alone
    csv_path = reproduce.test_csv_path(reproduce.experiment_flags(
        paper.get('sinusoid-5shot'), str(tmp_path / 'logs')) + reproduce.TEST_FLAGS)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "pip install -e '.[plots]'" in proc.stdout
        return
    for png in (csv_path[:-len('.csv')] + '.png', csv_path[:-len('.csv')] + '_qualitative.png'):
        assert 'figure: %s' % png in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]
        assert open(png, 'rb').read(8) == b'\x89PNG\r\n\x1a\n'
    assert 'not beside sinusoid-5shot-pretrained: no trained model it can load in' in proc.stdout
    assert 'warning' not in proc.stderr


@pytest.fixture(scope='module')
def omniglot_data(tmp_path_factory):
    return make_omniglot(str(tmp_path_factory.mktemp('data')), alphabets=31, characters=40, drawings=4)


def test_compare_first_order_on_a_small_omniglot(omniglot_data, tmp_path):
    proc = run_reproduce('omniglot-5way-1shot', '--compare-first-order', '--metatrain_iterations=201',
                         '--logdir=%s' % (tmp_path / 'logs'), '--data_dir=%s' % omniglot_data,
                         '--', '--num_filters=8', '--meta_batch_size=2', cwd=tmp_path)
    assert proc.returncode in (0, 1), proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith('variant'))
    rows = [re.split(r'\s{2,}', line.strip()) for line in lines[header + 2:header + 4]]
    assert [r[0] for r in rows] == ['omniglot-5way-1shot (second order)', 'omniglot-5way-1shot (first order)']
    for row in rows:
        values = dict(zip(reproduce.COMPARE_COLUMNS, row))
        assert values['step'] == '3'
        assert values['iterations'] == '201/60000'
        assert float(values['s/iter']) > 0
        assert values['peak RSS (train)'].endswith(' MB') and float(values['peak RSS (train)'].split()[0]) > 100
    assert dict(zip(reproduce.COMPARE_COLUMNS, rows[0]))['published'] == '98.70 +- 0.40'
    assert dict(zip(reproduce.COMPARE_COLUMNS, rows[1]))['published'] == '98.30 +- 0.50'
    assert (tmp_path / 'logs' / 'cls_5.mbs_2.ubs_1.numstep1.updatelr0.4hidden8stopgradbatchnorm').is_dir()


def test_experiments_doc_holds_the_paper_table_as_paper_py_prints_it():
    # The tables of `reproduce.py --list --format=markdown` live in docs/experiments.md,
    # which the README links to; the two must not drift apart.
    out = io.StringIO()
    reproduce.cmd_list('markdown', out=out)
    table = out.getvalue().strip()
    assert table.count('\n') > 30  # both tables, not an empty string that is in any file
    assert table in (REPO / 'docs' / 'experiments.md').read_text()
    assert 'docs/experiments.md' in (REPO / 'README.md').read_text()
