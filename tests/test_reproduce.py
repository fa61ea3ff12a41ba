"""reproduce.py: the paper table, the verdict, and the commands end to end on small runs."""
import io
import math
import os
import pathlib
import pickle
import re
import subprocess
import sys
import tempfile

import numpy as np
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
    header = next(i for i, line in enumerate(lines) if re.split(r'\s{2,}', line.strip())[:len(COLUMNS)] == COLUMNS)
    rows = []
    for line in lines[header + 2:]:
        if not line.strip() or line.startswith('verdict:'):
            break
        rows.append(re.split(r'\s{2,}', line.strip()))
    return rows


## The table --------------------------------------------------------------------------------------

# The rows of SPEC.md's "Published figures" table, by their first cell, and the paper.py experiments
# their figures belong to: one experiment per figure of a row ("a / b" cells), or for the sinusoid
# rows one per step (1 / 5 / 10 steps), for each experiment listed.
SPEC_ROWS = {
    'Omniglot 5-way 1-shot': [['omniglot-5way-1shot']],
    'Omniglot 5-way 5-shot': [['omniglot-5way-5shot', 'omniglot-5way-5shot-train5']],
    'Omniglot 20-way 1-shot': [['omniglot-20way-1shot']],
    'Omniglot 20-way 5-shot': [['omniglot-20way-5shot']],
    'Omniglot 5-way 1-shot, fc net': [['omniglot-5way-1shot-fc']],
    'Omniglot 5-way 5-shot, fc net': [['omniglot-5way-5shot-fc', 'omniglot-5way-5shot-fc-train5']],
    'miniImagenet 5-way 1-shot': [['miniimagenet-5way-1shot']],
    'miniImagenet 5-way 5-shot': [['miniimagenet-5way-5shot', 'miniimagenet-5way-5shot-mbs4']],
    'miniImagenet first order 1-shot / 5-shot': [['miniimagenet-5way-1shot-fo'], ['miniimagenet-5way-5shot-fo']],
    'Omniglot first order (Reptile paper, Table) 5w1s / 5w5s / 20w1s / 20w5s': [
        ['omniglot-5way-1shot-fo'], ['omniglot-5way-5shot-fo'], ['omniglot-20way-1shot-fo'], ['omniglot-20way-5shot-fo']],
    'Sinusoid K=5, MSE after 1 / 5 / 10 steps (paper appendix)': 'steps',
    'Sinusoid K=5, pretrained baseline, 1 / 5 / 10 steps': 'steps',
}
SPEC_SINUSOID = {'Sinusoid K=5, MSE after 1 / 5 / 10 steps (paper appendix)': [
                     'sinusoid-5shot', 'sinusoid-5shot-train5', 'sinusoid-5shot-train5-alpha0.001'],
                 'Sinusoid K=5, pretrained baseline, 1 / 5 / 10 steps': ['sinusoid-5shot-pretrained',
                                                                        'sinusoid-5shot-pretrained-step0.01',
                                                                        'sinusoid-5shot-pretrained-train5']}
FIGURE = re.compile(r'^(\d+(?:\.\d+)?)(?: \+- (\d+(?:\.\d+)?))?')


def spec_published_figures(spec):
    """{experiment: [(mean, ci or None) per reported step]} from SPEC.md's table of published figures."""
    section = spec.split('## Published figures')[1].split('\n## ')[0]
    figures = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip('|').split('|')]
        if len(cells) != 3 or cells[0] not in SPEC_ROWS:
            continue
        values = []
        for part in cells[2].split(' / '):
            match = FIGURE.match(part.strip())
            assert match, (cells[0], part)
            values.append((float(match.group(1)), float(match.group(2)) if match.group(2) else None))
        if SPEC_ROWS[cells[0]] == 'steps':
            for name in SPEC_SINUSOID[cells[0]]:
                figures[name] = values
        else:
            assert len(values) == len(SPEC_ROWS[cells[0]]), cells
            for names, value in zip(SPEC_ROWS[cells[0]], values):
                for name in names:
                    figures[name] = [value]
    return figures


def test_paper_table_matches_spec_value_by_value():
    """Every published figure of paper.py is the one SPEC.md gives for that experiment and step
    (a swap of two figures fails), and every experiment with a figure is checked."""
    if not (SHARED / 'SPEC.md').exists():
        pytest.skip('%s is absent (it is not part of a clone): nothing to compare paper.py with' % (SHARED / 'SPEC.md'))
    figures = spec_published_figures((SHARED / 'SPEC.md').read_text())
    assert len(figures) == (sum(len(names) for rows in SPEC_ROWS.values() if rows != 'steps' for names in rows)
                            + sum(len(names) for names in SPEC_SINUSOID.values()))
    for experiment in paper.EXPERIMENTS:
        published = [f for f in experiment.published if f is not None]
        if not published:
            assert experiment.name not in figures
            continue
        assert published == figures[experiment.name], experiment.name


def test_the_spec_comparison_fails_on_a_swap():
    """The comparison above, on a copy of the table with two figures swapped."""
    spec = ('## Published figures\n\n| experiment | reference command | published |\n| --- | --- | --- |\n'
            '| Omniglot 5-way 1-shot | x | 99.9 +- 0.1 |\n| Omniglot 5-way 5-shot | x | 98.7 +- 0.4 (paper) |\n')
    figures = spec_published_figures(spec)
    assert figures == {'omniglot-5way-1shot': [(99.9, 0.1)], 'omniglot-5way-5shot': [(98.7, 0.4)],
                       'omniglot-5way-5shot-train5': [(98.7, 0.4)]}
    assert list(paper.get('omniglot-5way-1shot').published) != figures['omniglot-5way-1shot']


def test_list_names_no_file_a_clone_lacks():
    out = io.StringIO()
    reproduce.cmd_list('text', out=out)
    assert 'SPEC' not in out.getvalue()
    assert 'the paper gives no number' in out.getvalue()


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


def test_verdict_at_the_boundary_intervals_exactly_touching():
    """Touching intervals count as overlapping; a hair apart they do not. The figures are exact in
    binary, so the edges really meet: 97.5 + 0.5 == 98.5 - 0.5 == 98.0."""
    assert 97.5 + 0.5 == 98.5 - 0.5
    assert reproduce.verdict(98.5, 0.5, 97.5, 0.5) == 'reproduced'
    assert reproduce.verdict(98.5, 0.5, math.nextafter(97.5, 0), 0.5) == 'below'
    assert reproduce.verdict(0.25, 0.125, 0.5, 0.125, higher_is_better=False) == 'reproduced'   # 0.375 both
    assert reproduce.verdict(0.25, 0.125, math.nextafter(0.5, 1), 0.125, higher_is_better=False) == 'below'
    assert reproduce.verdict(0.25, None, 0.375, 0.125, higher_is_better=False) == 'reproduced'   # no published CI


def test_verdict_below_when_our_whole_interval_is_worse_however_wide():
    """Issue 39: a 3,000-iteration sinusoid run, about ten times the paper's MSE (0.67, 0.38, 0.35) with
    its whole interval above it, is below at every step, though at steps 5 and 10 its CI is wider than
    the published figure."""
    assert reproduce.verdict(0.67, None, 3.560, 0.310, higher_is_better=False) == 'below'
    assert reproduce.verdict(0.38, None, 3.916, 0.404, higher_is_better=False) == 'below'
    assert reproduce.verdict(0.35, None, 4.522, 0.586, higher_is_better=False) == 'below'
    assert reproduce.undetermined_because(0.35, 4.522, 0.586, higher_is_better=False) is None
    # however wide: from 1.0 to 1e6 is worse than 0.35 all the way
    assert reproduce.verdict(0.35, None, 5e5 + 0.5, 5e5 - 0.5, higher_is_better=False) == 'below'


def test_verdict_undetermined_when_our_interval_reaches_better_than_the_paper_and_twice_as_bad():
    """An MSE is undetermined when its interval reaches below the published figure and above twice it,
    or is not finite; reaching exactly twice it, or exactly the figure, still decides."""
    for mean, ci in ((18396.669, 36026.458), (18398.723, 36030.479)):   # sinusoid-5shot step 10
        assert reproduce.verdict(0.35, None, mean, ci, higher_is_better=False) == 'undetermined'
    assert reproduce.verdict(0.38, None, 0.5, 0.3, higher_is_better=False) == 'undetermined'   # 0.2 to 0.8
    assert reproduce.verdict(0.25, None, 0.375, 0.125, higher_is_better=False) == 'reproduced'  # 0.25 to 0.5
    wider = 0.125 + 2 ** -50   # a hair below 0.25 and above 0.5, both ends exact in binary
    assert 0.375 - wider < 0.25 and 0.375 + wider > 0.5
    assert reproduce.verdict(0.25, None, 0.375, wider, higher_is_better=False) == 'undetermined'
    assert reproduce.verdict(0.25, None, 0.5, 0.25, higher_is_better=False) == 'reproduced'     # 0.25 to 0.75
    for mean, ci in ((float('nan'), float('nan')), (float('inf'), 1.0), (0.5, float('inf'))):
        assert reproduce.verdict(0.35, None, mean, ci, higher_is_better=False) == 'undetermined'
    assert reproduce.verdict(None, None, float('nan'), float('nan')) == 'n/a'
    reason = reproduce.undetermined_because(0.35, 18396.669, 36026.458, higher_is_better=False)
    assert reason == ('our 95% CI (-17629.789 to 54423.127) reaches both better than the published figure '
                      '(0.350) and worse than it by more than the figure itself (beyond 0.700)')
    assert 'not finite (nan +- nan)' in reproduce.undetermined_because(0.35, float('nan'), float('nan'), False)
    assert reproduce.undetermined_because(0.38, 0.691, 0.195, higher_is_better=False) is None


def test_verdict_of_accuracies_in_percentage_points():
    """For an accuracy the same rule in points: undetermined when our interval reaches above the
    published figure and below it by more than the figure itself, i.e. below 0 %."""
    assert reproduce.verdict(95.8, 0.3, 82.13, 0.66) == 'below'            # omniglot-20way-1shot
    assert reproduce.verdict(99.9, 0.1, 99.19, 0.16) == 'below'            # omniglot-5way-5shot
    assert reproduce.verdict(48.07, 1.75, 45.93, 1.81) == 'reproduced'     # miniimagenet-5way-1shot-fo
    assert reproduce.verdict(48.7, 1.84, 30.0, 35.0) == 'undetermined'    # -5 to 65
    assert reproduce.verdict(48.7, 1.84, 47.0, 49.0) == 'undetermined'    # -2 to 96
    assert reproduce.verdict(48.7, 1.84, 60.0, 50.0) == 'reproduced'      # 10 to 110: never below 0
    assert reproduce.verdict(48.7, 1.84, 20.0, 26.0) == 'below'           # -6 to 46, below 46.86
    assert reproduce.verdict(48.7, 1.84, float('nan'), 1.0) == 'undetermined'
    assert 'beyond 0.000' in reproduce.undetermined_because(48.7, 30.0, 35.0)


def test_check_of_a_short_sinusoid_run_ten_times_the_paper_says_below_at_every_step(tmp_path):
    """Issue 39's 3,000-iteration run through --check: the table says below at steps 1, 5 and 10, no line
    says undetermined, and the exit status is 1."""
    experiment = paper.get('sinusoid-5shot')
    flags = reproduce.experiment_flags(experiment, logdir=str(tmp_path / experiment.name))
    path = reproduce.test_csv_path(flags + ['--train=False'])
    means, ci95 = [1.0] * 11, [0.1] * 11
    for step, mean, ci in ((1, 3.560, 0.310), (5, 3.916, 0.404), (10, 4.522, 0.586)):
        means[step], ci95[step] = mean, ci
    write_test_csv(path, means, ci95)
    code, text = check(path, experiment.name)
    rows = [dict(zip(COLUMNS, r)) for r in table_rows(text)]
    assert [(r['step'], r['ours'], r['verdict']) for r in rows] == [
        ('1', '3.560 +- 0.310', 'below'), ('5', '3.916 +- 0.404', 'below'), ('10', '4.522 +- 0.586', 'below')]
    assert 'undetermined:' not in text
    assert code == 1


def sinusoid_run(tmp_path, mses, name='sinusoid-5shot'):
    """A test CSV and pkl of a sinusoid experiment from per-task MSEs [tasks, 11], as main.write_results
    writes them (mean, std, 95% CI)."""
    experiment = paper.get(name)
    flags = reproduce.experiment_flags(experiment, logdir=str(tmp_path / name))
    path = reproduce.test_csv_path(flags + ['--train=False'])
    mses = np.asarray(mses, dtype=np.float64)
    with np.errstate(invalid='ignore'):
        ci95 = 1.96 * mses.std(0) / np.sqrt(len(mses))
    write_test_csv(path, mses.mean(0), ci95)
    with open(path[:-len('.csv')] + '.pkl', 'wb') as f:
        pickle.dump({'mses': mses}, f)
    return path


def test_divergent_tasks_make_the_mean_undetermined_and_the_robust_figures_are_shown(tmp_path):
    """600 tasks near the paper's curve, 2 of them diverging after step 5 (as on our real run):
    steps 1 and 5 are judged, step 10 is undetermined, and the median and the mean over the
    other 598 tasks are printed beside the mean."""
    rng = np.random.default_rng(0)
    mses = np.abs(rng.normal(1.0, 0.3, size=(600, 1))) * np.array([[3.0] + [0.4] * 5 + [0.3] * 5])
    mses[:, 0] = 2.0                              # step 0 below 10 for every task
    mses[[7, 300], 6:] = [[1e3, 1e4, 1e5, 1e6, 1e7]] * 2   # two tasks diverge after step 5
    path = sinusoid_run(tmp_path, mses)
    code, text = check(path, 'sinusoid-5shot')   # the pretrained baseline's K=5 cell has the same folder and CSV names
    columns = COLUMNS + list(reproduce.ROBUST_COLUMNS)
    rows = [dict(zip(columns, r)) for r in table_rows(text)]
    kept = np.delete(mses, [7, 300], axis=0)
    for row, step in zip(rows, (1, 5, 10)):
        assert row['ours'] == '%.3f +- %.3f' % (mses[:, step].mean(), 1.96 * mses[:, step].std() / np.sqrt(600))
        assert row['median'] == '%.3f' % np.median(mses[:, step])
        assert row['mean of tasks never > 10'] == '%.3f (598/600)' % kept[:, step].mean()
    assert [r['verdict'] for r in rows] == [
        reproduce.verdict(0.67, None, mses[:, 1].mean(), 1.96 * mses[:, 1].std() / np.sqrt(600), False),
        reproduce.verdict(0.38, None, mses[:, 5].mean(), 1.96 * mses[:, 5].std() / np.sqrt(600), False),
        'undetermined']
    assert rows[0]['verdict'] != 'undetermined' and rows[1]['verdict'] != 'undetermined'
    why = [line for line in text.splitlines() if line.startswith('sinusoid-5shot step 10 undetermined: ')]
    assert len(why) == 1
    assert 'reaches both better than the published figure (0.350) and worse than it by more than' in why[0]
    assert '2 of 600 test tasks diverged' in why[0]
    assert 'the median is %.3f, the mean of the 598 tasks never above 10 is %.3f' % (
        np.median(mses[:, 10]), kept[:, 10].mean()) in why[0]
    assert code == 1   # undetermined is not reproduced


def test_without_the_pkl_a_sinusoid_row_has_no_robust_figures(tmp_path):
    path = sinusoid_run(tmp_path, np.full((600, 11), 0.3))
    os.remove(path[:-len('.csv')] + '.pkl')
    code, text = check(path, 'sinusoid-5shot')
    assert text.splitlines()[0].split() == COLUMNS
    assert [dict(zip(COLUMNS, r))['verdict'] for r in table_rows(text)] == ['reproduced'] * 3
    assert code == 0


def test_robust_figures_are_sinusoid_studys():
    """reproduce.py and tools/sinusoid_study.py share one definition of the figures (reproduce.py's:
    a user command does not import a tool), and robust_figures reports summarize's figures."""
    import sinusoid_study
    assert sinusoid_study.summarize is reproduce.summarize
    assert sinusoid_study.REPORT_STEPS is reproduce.REPORT_STEPS
    mses = np.full((4, 11), 0.5)
    mses[0, 0] = 11.0            # above 10 before adaptation only: not kept, not diverged
    mses[1, 7:] = np.inf         # diverged
    summary = reproduce.summarize(mses)
    assert (summary['divergent'], summary['diverged']) == (2, 1)
    with tempfile.TemporaryDirectory() as folder:
        path = sinusoid_run(pathlib.Path(folder), mses)
        figures = reproduce.robust_figures(paper.get('sinusoid-5shot'), path)
    assert figures[10] == (summary['median'][2], summary['mean_others'][2], 2, 4, 1)


def test_reproduce_imports_no_tool(tmp_path):
    """A user command does not depend on tools/: reproduce.py, its sinusoid figures included, runs
    with only the repository root on sys.path and loads no module from tools/."""
    path = sinusoid_run(tmp_path, np.full((4, 11), 0.5))
    script = ('import sys; sys.path.insert(0, %r); import paper, reproduce; '
              'reproduce.robust_figures(paper.get("sinusoid-5shot"), %r); '
              'print(sorted(n for n, m in list(sys.modules.items()) '
              'if (getattr(m, "__file__", None) or "").startswith(%r)))'
              % (str(REPO), path, str(REPO / 'tools')))
    proc = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, cwd=str(tmp_path),
                          env=user_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == '[]'


def test_check_of_a_missing_csv_says_what_to_do(tmp_path):
    """The README's own --check example before any training: one line, no traceback, with or
    without --experiment (it used to be "matches no experiment" without)."""
    path = 'logs/omniglot-5way-1shot/cls_5.mbs_32.ubs_1.numstep1.updatelr0.4batchnorm/test_ubs1_stepsize0.4.csv'
    for extra in ([], ['--experiment', 'omniglot-5way-1shot']):
        proc = subprocess.run([sys.executable, str(REPO / 'reproduce.py'), '--check', path] + extra,
                              capture_output=True, text=True, cwd=str(tmp_path), timeout=300)
        assert proc.returncode == 2
        assert proc.stdout == ''
        assert proc.stderr.splitlines() == [
            'Error: no test CSV at %s: train and test first (python reproduce.py EXPERIMENT, see --list), '
            'or give the CSV of a model in models/' % path]
    proc = subprocess.run([sys.executable, str(REPO / 'reproduce.py'), '--check', str(tmp_path)],
                          capture_output=True, text=True, cwd=str(tmp_path), timeout=300)
    assert proc.returncode == 2 and proc.stderr.startswith('Error: %s is a folder' % tmp_path)
    assert len(proc.stderr.splitlines()) == 1


@pytest.mark.parametrize('args, message', [
    (['--bogus'], 'Error: unrecognized arguments: --bogus (python reproduce.py --help)'),
    ([], 'Error: give an EXPERIMENT, --list, --table, --check CSV or --release LOGDIR (python reproduce.py --help)'),
    (['omniglot'], "Error: unknown experiment 'omniglot'; see --list (python reproduce.py --help)"),
    (['--release', 'logs/sinusoid-10shot'], 'Error: logs/sinusoid-10shot is not a folder; give the logdir of a '
                                            'trained run, models/EXPERIMENT'),
])
def test_usage_errors_are_one_error_line(tmp_path, args, message):
    proc = subprocess.run([sys.executable, str(REPO / 'reproduce.py')] + args,
                          capture_output=True, text=True, cwd=str(tmp_path), timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [message]


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
    assert proc.stderr.startswith('Error: ') and 'is not a test CSV of main.py' in proc.stderr


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
    proc = run_reproduce('sinusoid-5shot-train5', '--metatrain_iterations=1001', '--logdir=%s' % (tmp_path / 'logs'),
                         cwd=tmp_path)
    rows = [dict(zip(COLUMNS + list(reproduce.ROBUST_COLUMNS), r)) for r in table_rows(proc.stdout)]
    assert [r['step'] for r in rows] == ['1', '5', '10']
    assert all(r['iterations'] == '1001/70000' for r in rows)
    assert [r['published'] for r in rows] == ['0.670', '0.380', '0.350']
    # "ours" is the CSV the test wrote, the median the pkl's, and the verdict the rule's on them
    csv_path = reproduce.test_csv_path(reproduce.experiment_flags(
        paper.get('sinusoid-5shot-train5'), str(tmp_path / 'logs')) + reproduce.TEST_FLAGS)
    written = reproduce.read_test_csv(csv_path)
    with open(csv_path[:-len('.csv')] + '.pkl', 'rb') as f:
        mses = pickle.load(f)['mses']
    expected = []
    for row, step, published in zip(rows, (1, 5, 10), (0.67, 0.38, 0.35)):
        mean, ci = written['means'][step], written['ci95'][step]
        assert row['ours'] == '%.3f +- %.3f' % (mean, ci)
        assert row['difference'] == '%+.3f' % (mean - published)
        assert row['median'] == '%.3f' % np.median(mses[:, step])
        expected.append(reproduce.verdict(published, None, mean, ci, higher_is_better=False))
        assert row['verdict'] == expected[-1]
    # a 1001-iteration model is far from the paper (MSE above 1 after a step): below, and the status says so
    assert expected[0] == 'below'
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert '$ python' in proc.stdout and '--update_lr=0.01' in proc.stdout
    # the figures beside the CSV; the pretrained baseline is not trained, so MAML is drawn alone
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "pip install -e '.[plots]'" in proc.stdout
        return
    for png in (csv_path[:-len('.csv')] + '.png', csv_path[:-len('.csv')] + '_qualitative.png'):
        assert 'figure: %s' % png in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]
        assert open(png, 'rb').read(8) == b'\x89PNG\r\n\x1a\n'
    assert 'not beside sinusoid-5shot-pretrained-train5: no trained model it can load in' in proc.stdout
    assert 'warning' not in proc.stderr


@pytest.fixture(scope='module')
def omniglot_data(tmp_path_factory):
    return make_omniglot(str(tmp_path_factory.mktemp('data')), alphabets=31, characters=40, drawings=4)


def test_compare_first_order_on_a_small_omniglot(omniglot_data, tmp_path):
    proc = run_reproduce('omniglot-5way-1shot', '--compare-first-order', '--metatrain_iterations=201',
                         '--logdir=%s' % (tmp_path / 'logs'), '--data_dir=%s' % omniglot_data,
                         '--', '--num_filters=8', '--meta_batch_size=2', cwd=tmp_path)
    lines = proc.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith('variant'))
    rows = [re.split(r'\s{2,}', line.strip()) for line in lines[header + 2:header + 4]]
    assert [r[0] for r in rows] == ['omniglot-5way-1shot (second order)', 'omniglot-5way-1shot (first order)']
    verdicts = []
    for row, folder in zip(rows, ('cls_5.mbs_2.ubs_1.numstep1.updatelr0.4hidden8batchnorm',
                                  'cls_5.mbs_2.ubs_1.numstep1.updatelr0.4hidden8stopgradbatchnorm')):
        values = dict(zip(reproduce.COMPARE_COLUMNS, row))
        written = reproduce.read_test_csv(str(tmp_path / 'logs' / folder / 'test_ubs1_stepsize0.4.csv'))
        mean, ci = 100 * written['means'][3], 100 * written['ci95'][3]
        assert values['ours'] == '%.2f +- %.2f' % (mean, ci)      # each variant's own CSV
        published = (98.7, 0.4) if 'stopgrad' not in folder else (98.3, 0.5)
        verdicts.append(reproduce.verdict(*published, mean, ci))
        assert values['verdict'] == verdicts[-1]
        assert values['step'] == '3'
        assert values['iterations'] == '201/60000'
        assert float(values['s/iter']) > 0
        assert values['peak RSS (train)'].endswith(' MB') and float(values['peak RSS (train)'].split()[0]) > 100
    assert dict(zip(reproduce.COMPARE_COLUMNS, rows[0]))['published'] == '98.70 +- 0.40'
    assert dict(zip(reproduce.COMPARE_COLUMNS, rows[1]))['published'] == '98.30 +- 0.50'
    assert proc.returncode == (0 if verdicts == ['reproduced'] * 2 else 1), proc.stdout[-3000:] + proc.stderr[-3000:]


def test_experiments_doc_holds_the_paper_table_as_paper_py_prints_it():
    # The tables of `reproduce.py --list --format=markdown` live in docs/experiments.md,
    # which the README links to; the two must not drift apart.
    out = io.StringIO()
    reproduce.cmd_list('markdown', out=out)
    table = out.getvalue().strip()
    assert table.count('\n') > 30  # both tables, not an empty string that is in any file
    assert table in (REPO / 'docs' / 'experiments.md').read_text()
    assert 'docs/experiments.md' in (REPO / 'README.md').read_text()


## The results table of the README -----------------------------------------------------------------------

def release(models, name, accuracy=None, ci=None, iterations=60000):
    """A released run as reproduce.py --release leaves it: a test CSV and check.txt (the --check output)."""
    experiment = paper.get(name)
    exp_dir = models / name / reproduce.exp_dir_name(list(experiment.flags))
    flags = reproduce.experiment_flags(experiment, logdir=str(models / name))
    path = reproduce.test_csv_path(flags + ['--train=False'])
    means, ci95 = [0.2] * 11, [0.01] * 11
    means[experiment.steps[0]], ci95[experiment.steps[0]] = accuracy, ci
    write_test_csv(path, means, ci95)
    (exp_dir / 'checkpoint').write_text('model_checkpoint_path: "model-%d"\n' % (iterations - 1))
    out = io.StringIO()
    reproduce.cmd_check(path, name, 'text', out=out)
    (exp_dir / 'check.txt').write_text(out.getvalue())


def test_results_table_reads_each_released_check_txt(tmp_path):
    models = tmp_path / 'models'
    release(models, 'omniglot-5way-1shot', 0.9923, 0.0035)
    release(models, 'omniglot-20way-1shot', 0.90, 0.004, iterations=20000)
    (models / 'omniglot-5way-5shot-train5' / 'x').mkdir(parents=True)   # a folder without a checkpoint
    live = models / 'omniglot-5way-1shot-fc' / reproduce.exp_dir_name(list(paper.get('omniglot-5way-1shot-fc').flags))
    live.mkdir(parents=True)   # a run still training: a checkpoint, no test yet
    (live / 'checkpoint').write_text('model_checkpoint_path: "model-27480"\n'
                                     'all_model_checkpoint_paths: "model-27480"\n')
    rows = {r['experiment']: r for r in reproduce.results_table_rows(str(models))}
    assert len(reproduce.results_table_rows(str(models))) == sum(len(e.steps) for e in paper.EXPERIMENTS)
    assert rows['omniglot-5way-1shot'] == {
        'experiment': 'omniglot-5way-1shot', 'step': '3', 'paper': '98.70 +- 0.40', 'ours': '99.23 +- 0.35',
        'iterations': '60000/60000', 'verdict': 'reproduced', 'model in models/': 'yes'}
    assert rows['omniglot-20way-1shot'] == {
        'experiment': 'omniglot-20way-1shot', 'step': '5', 'paper': '95.80 +- 0.30', 'ours': '90.00 +- 0.40',
        'iterations': '20000/60000', 'verdict': 'below so far', 'model in models/': 'yes'}
    assert rows['omniglot-5way-5shot-train5'] == {
        'experiment': 'omniglot-5way-5shot-train5', 'step': '3', 'paper': '99.90 +- 0.10', 'ours': '-',
        'iterations': '-', 'verdict': '-', 'model in models/': 'no'}
    assert rows['omniglot-5way-1shot-fc'] == {
        'experiment': 'omniglot-5way-1shot-fc', 'step': '3', 'paper': '89.70 +- 1.10', 'ours': '-',
        'iterations': '27481/60000', 'verdict': '-', 'model in models/': 'training, not tested'}


def readme_results_table():
    """The table between the README's markers of the results table."""
    text = (REPO / 'README.md').read_text()
    start = text.index('<!-- results table: python reproduce.py --table --format=markdown -->')
    end = text.index('<!-- end of the results table -->')
    return text[start:end].split('\n', 1)[1].strip()


def test_readme_results_table_is_what_reproduce_prints():
    """The front page's table is `reproduce.py --table --format=markdown` of the committed models/:
    a model released (or re-released) without updating the README fails here."""
    out = io.StringIO()
    reproduce.cmd_table('markdown', out=out)
    printed = out.getvalue().strip()
    maml_rows = [line for line in printed.splitlines() if line.startswith('| MAML |')]
    assert len(maml_rows) == len(paper.TABLE1_BLOCKS) and '| inner steps | MAML | pretrained |' in printed
    assert readme_results_table() == printed


def test_ctrl_c_during_training_saves_and_ends_without_a_traceback(tmp_path):
    """SIGINT to reproduce.py's process group, as Ctrl-C sends it: main.py saves its checkpoint once,
    reproduce.py says how to resume, exit status 130. Started as a shell starts a background job
    (SIGINT ignored), so a kill -INT to `python reproduce.py ... &` works too."""
    import signal
    proc = subprocess.Popen([sys.executable, str(REPO / 'reproduce.py'), 'sinusoid-5shot-train5',
                             '--logdir=%s' % (tmp_path / 'logs')], cwd=str(tmp_path), env=user_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        for line in proc.stdout:
            if line.startswith('Iteration 1000:'):
                os.killpg(proc.pid, signal.SIGINT)
                break
        out, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 130, out + err
    assert 'Traceback' not in err, err
    saved = re.search(r'^Interrupted after iteration (\d+); saved (\S+)\. Resume with the same command\.$', out, re.M)
    assert saved, out + err
    assert os.path.exists(saved.group(2) + '.index')
    assert err.splitlines()[-1] == 'Interrupted; the same command resumes from the last checkpoint main.py saved.'
