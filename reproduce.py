"""Reproduce the paper's experiments from the command line and compare with the published figures.

    python reproduce.py --list
    python reproduce.py EXPERIMENT [--metatrain_iterations N] [--logdir D] [--data_dir D] [-- MAIN.PY FLAGS]
    python reproduce.py EXPERIMENT --compare-first-order [--metatrain_iterations N] ...
    python reproduce.py --check CSV [--experiment EXPERIMENT] [--plot [--plot_dir D]]
    python reproduce.py --release models/EXPERIMENT
    python reproduce.py --table [--variants] [--format=markdown]

EXPERIMENT is a name from paper.py (see --list). The command trains with the
reference command line of the experiment by running main.py in a subprocess
(the command is printed first, so it can be typed by hand), tests on the
test split (--train=False --test_set=True), reads the test CSV that main.py
writes (<logdir>/<exp_string>/test_ubs{K}_stepsize{alpha}.csv) and prints

    experiment | step | iterations | published | ours | difference | verdict

with the mean +- 95% confidence interval; accuracies in percent, sinusoid
figures as mean squared error. Verdict (verdict()): "below" when our whole
confidence interval is worse than the published one, however wide;
"undetermined" when our mean or its interval is not a finite number, or when
our interval reaches both better than the published figure and worse than it
by more than the figure itself (an MSE interval from below the figure to above
twice it, an accuracy one from above it to below 0 %: it decides nothing);
otherwise "reproduced": the intervals overlap (touching counts) or our figure
is better (accuracy higher, MSE lower); "n/a" where the paper gives no
figure. A line under the table says why a row is undetermined. The
iterations column holds the iterations the tested checkpoint was trained for
against the paper's count, so a shortened run is visible in the table.

For the sinusoid, where a few divergent test tasks can dominate the mean,
two more columns give what tools/sinusoid_study.py found robust, from the per-task
MSEs in the test .pkl beside the CSV (summarize, below): the median
over all tasks, and the mean over the tasks whose MSE never exceeds 10 at
any step, with their count.

An evaluation-only EXPERIMENT (paper.py's `evaluates`: the 5-shot Omniglot
cells, the 1-shot model evaluated at 5 shots; the sinusoid K=5 cells, the
K=10 model evaluated at K=5) trains nothing: it tests the trained model of
the experiment it evaluates, found in --logdir (default: the released model,
models/<that experiment>), with main.py --train=False
--update_batch_size=K --train_update_batch_size=K_trained. main.py writes
the test CSV and pkl beside that model's own (test_ubs{K}_stepsize{alpha}),
and this command writes the verdict beside them, in
check_ubs{K}_stepsize{alpha}.txt (check.txt is the model's own test). A
logdir that holds another experiment's model (another network, N-way, ...),
or no trained model, is an error.

An evaluation-only cell with a step_grid in paper.py (the pretrained
sinusoid baseline, which the paper fine-tunes "using an automatically tuned
step size") first tests the model on main.py's validation tasks at each step
of the grid, in a copy of its latest checkpoint, and keeps the step the rule
of docs/experiments.md ("The tuned step size") chooses: the validation CSVs
go to tune_ubs{K}/ beside the model, the choice to tune_ubs{K}.txt, and the
test runs at that step.

--table prints the paper's Table 1 (Omniglot and miniImagenet; rows MAML,
first order, no conv) and its sinusoid figure, each cell with the published
figure, ours, the iterations trained and the verdict of the model released
in models/, as its check file (written by --release, or by an evaluation)
gives them: the README's results table. --table --variants prints the other
runs of models/ (trained another way than the paper's figures were, or
without a published figure), one row per reported step.

--metatrain_iterations N shortens training (for the pretrained and oracle
baselines it sets pretrain_iterations, their training length). Training
resumes from the checkpoints in the logdir (main.py's --resume), so an
interrupted run continues when the same command is repeated. Flags after
"--" go to main.py as given, after the experiment's own, so they override
them (for example "-- --seed=1").

--compare-first-order runs the experiment with and without --stop_grad=True
(each training and test in its own fresh process) and prints, side by side,
the accuracy at the paper's step, seconds per training iteration (from the
times at which main.py printed its "Iteration N" lines, so start-up, data
loading and tracing are excluded) and the peak resident memory of each
training process (its own rusage, from os.wait4).

Figures (with matplotlib, the optional extra: pip install -e '.[plots]'):
after testing, the metric against inner steps 0..10 with our 95% CI band and
the published figure(s) is written beside the CSV (test_ubs{K}_stepsize{alpha}.png;
--check writes it with --plot). Figures of a CSV under models/ (a released
model: models/ is tracked) go to logs/figures/<logdir name>/<exp_string>/
instead, and --plot_dir D puts every figure in D/<logdir name>/<exp_string>/.
A sinusoid run also gets the paper's
qualitative figure (test_ubs{K}_stepsize{alpha}_qualitative.png): test tasks
0..2 of the CSV, the true sine, the K support points and the fits before
adaptation and after 1 and 10 inner steps; MAML and the pretrained baseline
side by side when the other one is trained too (in logs/<its name>, or
--partner_logdir). Without matplotlib a one-line note says how to get them;
the table and the exit status are the same either way.

Exit status: 0 when every row with a published figure is reproduced, 1 when
some row is below or undetermined, 2 on errors (one line, "Error: ...").
"""
import argparse
import copy
import csv
import dataclasses
import io
import math
import os
import pickle
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from absl import flags

import paper

REPO = os.path.dirname(os.path.abspath(__file__))
MAIN = os.path.join(REPO, 'main.py')
REPRODUCED, BELOW, UNDETERMINED, NO_FIGURE = 'reproduced', 'below', 'undetermined', 'n/a'
COLUMNS = ('experiment', 'step', 'iterations', 'published', 'ours', 'difference', 'verdict')
ROBUST_COLUMNS = ('median', 'mean of tasks never > 10')  # sinusoid, from the pkl (summarize)
TABLE_COLUMNS = ('experiment', 'step', 'paper', 'ours', 'iterations', 'verdict', 'model in models/')
MODELS = os.path.join(REPO, 'models')
RELEASED_FIGURES = os.path.join('logs', 'figures')  # figures of released models: logs/ is not tracked
COMPARE_COLUMNS = ('variant', 'step', 'iterations', 'published', 'ours', 'verdict', 's/iter',
                   'CPU s (train)', 'peak RSS (train)')
ITERATION_LINE = re.compile(r'^(Pretrain )?Iteration (\d+):')
RESTORE_LINE = re.compile(r'^Restoring model weights from (\S+)')
CHECKPOINT_ITERATION = re.compile(r'model-?(\d+)$')  # ours: model-N; the reference's TF1: modelN
# tf1_checkpoint.REFERENCE_FILE, repeated: importing tf1_checkpoint imports TensorFlow (seconds),
# and --check only needs the file names (a test checks that the two agree)
REFERENCE_CHECKPOINT_FILE = re.compile(r'^model(\d+)\.index$')
SINE_PARTNERS = {'sinusoid-5shot': 'sinusoid-5shot-pretrained',  # drawn side by side in the
                 'sinusoid-5shot-pretrained': 'sinusoid-5shot',  # sinusoid's qualitative figure
                 'sinusoid-5shot-train5': 'sinusoid-5shot-pretrained-train5',
                 'sinusoid-5shot-pretrained-train5': 'sinusoid-5shot-train5'}
VARIANT_COLUMNS = TABLE_COLUMNS + ('protocol',)


class ReproduceError(Exception):
    pass


class ArgumentParser(argparse.ArgumentParser):
    """A usage error as one line in the style of every other error: 'Error: ...', exit status 2."""

    def error(self, message):
        self.exit(2, 'Error: %s (python reproduce.py --help)\n' % message)


## main.py's flags ---------------------------------------------------------------------------

def main_flag_values(args):
    """main.py's flags parsed from args (a private copy: main.FLAGS is left untouched).

    Applies what main.py derives before naming the experiment folder (main.fill_train_flags).
    Raises absl.flags.Error for an unknown flag or a bad value.
    """
    import main
    values = copy.deepcopy(main.FLAGS)
    values.unparse_flags()
    values(['main.py'] + list(args))
    main.fill_train_flags(values)
    return values


def exp_dir_name(args):
    import main
    return main.experiment_name(main_flag_values(args))


def csv_name(args):
    values = main_flag_values(args)
    return 'test_ubs%s_stepsize%s.csv' % (values.update_batch_size, values.update_lr)


def test_csv_path(args):
    """Where main.py --train=False writes the test CSV for these flags."""
    values = main_flag_values(args)
    return os.path.join(values.logdir, exp_dir_name(args), csv_name(args))


def without_flag(flags, name):
    """flags without any value of --name."""
    return [f for f in flags if f.lstrip('-').partition('=')[0] != name]


def set_iterations(flags, iterations):
    """Shorten (or lengthen) training: metatrain_iterations, or pretrain_iterations when
    the experiment trains by pretraining only (the pretrained and oracle baselines)."""
    values = main_flag_values(flags)
    name = 'pretrain_iterations' if values.metatrain_iterations == 0 else 'metatrain_iterations'
    return without_flag(flags, name) + ['--%s=%d' % (name, iterations)]


def experiment_flags(experiment, logdir, iterations=None, data_dir=None, extra=(), stop_grad=None):
    flags = list(experiment.flags)
    if stop_grad is not None:
        flags = without_flag(flags, 'stop_grad') + ['--stop_grad=%s' % stop_grad]
    if iterations is not None:
        flags = set_iterations(flags, iterations)
    flags.append('--logdir=%s' % logdir)
    if data_dir:
        flags.append('--data_dir=%s' % data_dir)
    return flags + list(extra)


def default_logdir(name):
    """Where a run of experiment `name` goes: logs/NAME; for an evaluation-only cell, the released model
    it evaluates (models/<that experiment>, as a path from the current folder)."""
    experiment = paper.BY_NAME.get(name)
    if experiment is not None and experiment.evaluates:
        return os.path.relpath(os.path.join(MODELS, experiment.evaluates))
    return os.path.join('logs', name)


def check_name(experiment, flags=None):
    """The verdict file beside a test CSV: check.txt for a model's own test, and for an evaluation-only
    cell, which shares its model's folder, check_ubs{K}_stepsize{alpha}.txt after its CSV (of `flags`,
    default the experiment's: a tuned step may differ on another model)."""
    if not experiment.evaluates:
        return 'check.txt'
    return 'check' + csv_name(list(flags or experiment.flags))[len('test'):-len('.csv')] + '.txt'


## Running main.py ---------------------------------------------------------------------------

class RunResult:
    def __init__(self, command, returncode, seconds, maxrss_kb, cpu_seconds, iteration_times, restored=None):
        self.command, self.returncode, self.seconds = command, returncode, seconds
        self.maxrss_kb, self.cpu_seconds = maxrss_kb, cpu_seconds
        self.iteration_times = iteration_times  # [(iteration, time)] of the printed lines
        self.restored = restored  # the checkpoint main.py restored, as it printed it

    @property
    def restored_iterations(self):
        """Iterations the restored checkpoint was trained for (checkpoint N is saved after iteration N)."""
        match = CHECKPOINT_ITERATION.search(self.restored or '')
        return int(match.group(1)) + 1 if match else None

    @property
    def seconds_per_iteration(self):
        """Slope between the first and last printed iteration lines (None: fewer than two)."""
        if len(self.iteration_times) < 2:
            return None
        (i0, t0), (i1, t1) = self.iteration_times[0], self.iteration_times[-1]
        return (t1 - t0) / (i1 - i0) if i1 > i0 else None


def command_line(args, program=MAIN):
    """The command as a user would type it in the current directory."""
    path = os.path.relpath(program)
    path = program if path.startswith('..') else path
    return ' '.join(shlex.quote(a) for a in ['python', path] + list(args))


def run_main(args, out=sys.stdout, program=MAIN):
    """Run main.py with args in a fresh process, echoing its output; measure it.

    Its peak resident memory is that process's own rusage (os.wait4 on its
    pid), so runs made one after another are measured independently.
    """
    command = command_line(args, program)
    print('$ ' + command, file=out, flush=True)
    pretrain = main_flag_values(args).pretrain_iterations
    start = time.time()
    # its own session: a Ctrl-C reaches this process only, which passes it on once (a second SIGINT
    # would interrupt main.py while it saves its checkpoint)
    proc = subprocess.Popen([sys.executable, program] + list(args), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1, start_new_session=True)
    times, restored = [], None
    try:
        for line in proc.stdout:
            now = time.time()
            out.write(line)
            out.flush()
            match = ITERATION_LINE.match(line)
            if match:
                itr = int(match.group(2)) + (0 if match.group(1) else pretrain)
                times.append((itr, now))
            match = RESTORE_LINE.match(line)
            if match:
                restored = match.group(1)
    except KeyboardInterrupt:
        proc.send_signal(2)  # main.py saves a checkpoint on SIGINT; the same command resumes
        for line in proc.stdout:  # its last lines say what it saved
            out.write(line)
        proc.wait()
        raise
    finally:
        proc.stdout.close()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    # ru_maxrss is in kilobytes on Linux, bytes on macOS
    maxrss_kb = usage.ru_maxrss / 1024.0 if sys.platform == 'darwin' else float(usage.ru_maxrss)
    cpu = usage.ru_utime + usage.ru_stime
    return RunResult(command, proc.returncode, time.time() - start, maxrss_kb, cpu, times, restored)


TEST_FLAGS = ['--train=False', '--test_set=True']


def train_and_test(flags, out=sys.stdout, train=True):
    """Train (unless train=False), then test on the test split; returns (train run, test run, csv path)."""
    train_run = None
    if train:
        train_run = run_main(flags, out)
        if train_run.returncode != 0:
            raise ReproduceError('training failed (exit status %d): %s' % (train_run.returncode, train_run.command))
    test_flags = flags + TEST_FLAGS
    path = test_csv_path(test_flags)
    started = time.time()
    test_run = run_main(test_flags, out)
    if test_run.returncode != 0:
        raise ReproduceError('testing failed (exit status %d): %s' % (test_run.returncode, test_run.command))
    if not os.path.exists(path) or os.path.getmtime(path) < started - 1:
        raise ReproduceError('the test did not write %s' % path)
    return train_run, test_run, path


## Reading results ---------------------------------------------------------------------------

def read_test_csv(path):
    """main.py's test CSV: header update0..updateN, then rows means, stds, ci95."""
    with open(path, newline='') as f:
        rows = list(csv.reader(f))
    if len(rows) < 4 or not all(h.startswith('update') for h in rows[0]):
        raise ReproduceError('%s is not a test CSV of main.py (header update0.., rows means, stds, ci95)' % path)
    header = rows[0]
    try:
        means, stds, ci95 = ([float(v) for v in row] for row in rows[1:4])
    except ValueError as exc:
        raise ReproduceError('%s: %s' % (path, exc)) from exc
    steps = [int(h[len('update'):]) for h in header]
    return {'means': dict(zip(steps, means)), 'stds': dict(zip(steps, stds)), 'ci95': dict(zip(steps, ci95))}


def trained_iterations(exp_dir):
    """Iterations of the latest checkpoint that exp_dir's 'checkpoint' file names (None if unknown)."""
    try:
        with open(os.path.join(exp_dir, 'checkpoint')) as f:
            match = re.search(r'^model_checkpoint_path:\s*"([^"]*)"', f.read(), re.M)
    except OSError:
        match = None
    match = match and CHECKPOINT_ITERATION.search(match.group(1))
    if match:
        return int(match.group(1)) + 1
    # a folder of the reference's checkpoints only (no 'checkpoint' file of ours): found by file name,
    # as tf1_checkpoint.find_reference_checkpoints finds them, without importing TensorFlow
    try:
        names = os.listdir(exp_dir)
    except OSError:
        return None
    found = [int(m.group(1)) for m in map(REFERENCE_CHECKPOINT_FILE.match, names) if m]
    return max(found) + 1 if found else None


def undetermined_because(published_mean, mean, ci, higher_is_better=True):
    """Why our figure cannot decide against the published one (None: it can).

    The rule: our mean or its 95% CI is not finite (tasks whose error overflowed),
    or our interval reaches both better than the published figure and worse than
    it by more than the figure itself: for an MSE, below the figure and above twice
    it; for an accuracy (in points), above the figure and below 0 %. Such an interval
    fits a model better than the paper's as well as one far worse: it decides nothing.
    An interval worse than the published one all the way is below, however wide.
    """
    if not (math.isfinite(mean) and math.isfinite(ci)):
        return 'our mean or its 95%% CI is not finite (%s +- %s)' % (mean, ci)
    low, high = mean - ci, mean + ci
    if higher_is_better:  # an accuracy: the published figure less itself is 0 %
        far_worse = 0.0
        wide = high > published_mean and low < far_worse
    else:  # an MSE: the published figure plus itself
        far_worse = 2 * published_mean
        wide = low < published_mean and high > far_worse
    if wide:
        return ('our 95%% CI (%s to %s) reaches both better than the published figure (%s) and worse than '
                'it by more than the figure itself (beyond %s)' % (
                    fmt_number(low), fmt_number(high), fmt_number(published_mean), fmt_number(far_worse)))
    return None


def verdict(published_mean, published_ci, mean, ci, higher_is_better=True):
    """n/a: no published figure; undetermined: our interval is not finite, or
    reaches from better than the paper to far worse (undetermined_because);
    reproduced: the 95% intervals overlap (touching counts), or ours is better;
    below: our whole interval is worse than the published one, however wide
    (an undetermined interval reaches better than the paper: never below)."""
    if published_mean is None:
        return NO_FIGURE
    if undetermined_because(published_mean, mean, ci, higher_is_better):
        return UNDETERMINED
    published_ci = published_ci or 0.0
    if higher_is_better:
        ok = mean + ci >= published_mean - published_ci
    else:
        ok = mean - ci <= published_mean + published_ci
    return REPRODUCED if ok else BELOW


def fmt_number(value):
    """3 significant decimals at most: 0.350, 36030.479."""
    return '%.3f' % value


def fmt_figure(mean, ci, metric):
    if mean is None:
        return '-'
    digits = 2 if metric == paper.ACCURACY else 3
    text = '%.*f' % (digits, mean)
    return text if ci is None else '%s +- %.*f' % (text, digits, ci)


def per_task_path(csv_path):
    """The test .pkl main.py writes beside the CSV: {'mses': [tasks, steps 0..10]}."""
    return os.path.splitext(csv_path)[0] + '.pkl'


# The sinusoid's robust figures. Defined here, where the user's command needs them;
# tools/sinusoid_study.py imports them from here (one definition for both).
REPORT_STEPS = (1, 5, 10)  # the inner steps the sinusoid figures are reported at
DIVERGED = 10.0  # the reference README's "tasks ever above MSE 10" (any of steps 0..10)


def summarize(mses):
    """The figures of one run's [tasks, 11] test MSEs, defined as the reference README does.

    median: over all tasks, a non-finite MSE (a diverged task) counted as
    +inf, i.e. as the worst; divergent: tasks with any MSE above 10 or not
    finite at any of steps 0..10 (step 0, the pre-update support loss,
    exceeds 10 for most large-amplitude tasks, so most of these never diverge;
    `diverged` counts only those above 10 after adaptation, steps 1..10);
    mean_others: the mean over the tasks that are not `divergent`.
    """
    import numpy as np
    mses = np.asarray(mses, dtype=np.float64)
    finite = np.where(np.isfinite(mses), mses, np.inf)
    bad = finite > DIVERGED
    others = ~bad.any(axis=1)
    steps = list(REPORT_STEPS)
    return {'median': tuple(np.median(finite[:, steps], axis=0)),
            'mean1': float(mses[:, 1].mean()),
            'ci1': float(1.96 * mses[:, 1].std() / math.sqrt(len(mses))),
            'divergent': int(bad.any(axis=1).sum()),
            'diverged': int(bad[:, 1:].any(axis=1).sum()),
            'mean_others': tuple(mses[others][:, steps].mean(axis=0))}


def robust_figures(experiment, csv_path):
    """{step: (median, mean of the tasks never above 10, their count, tasks, tasks diverged after
    adaptation)} from the per-task MSEs in the pkl, as summarize defines them; None for an
    accuracy or without a readable pkl."""
    if experiment.metric != paper.MSE or not os.path.exists(per_task_path(csv_path)):
        return None
    import numpy as np
    try:
        with open(per_task_path(csv_path), 'rb') as f:
            mses = np.asarray(pickle.load(f)['mses'], dtype=np.float64)
    except (OSError, pickle.UnpicklingError, KeyError, TypeError, ValueError) as exc:
        raise ReproduceError('%s: not a test pkl of main.py (%s)' % (per_task_path(csv_path), exc)) from exc
    if mses.ndim != 2 or mses.shape[1] <= max(experiment.steps):
        raise ReproduceError('%s holds MSEs of shape %s, not [tasks, steps 0..10]'
                             % (per_task_path(csv_path), mses.shape))
    summary = summarize(mses)
    kept = len(mses) - summary['divergent']
    return {step: (summary['median'][i], summary['mean_others'][i] if kept else None, kept, len(mses),
                   summary['diverged'])
            for i, step in enumerate(REPORT_STEPS)}


def robust_cells(figures, step):
    if figures is None or step not in figures:
        return {c: '-' for c in ROBUST_COLUMNS}
    median, mean_kept, kept, tasks, _ = figures[step]
    return {ROBUST_COLUMNS[0]: fmt_number(median),
            ROBUST_COLUMNS[1]: '%s (%d/%d)' % ('-' if mean_kept is None else fmt_number(mean_kept), kept, tasks)}


def why_undetermined(row, figures, higher_is_better):
    """The line under the table that says why a row is undetermined."""
    reason = undetermined_because(row['published_mean'], row['mean'], row['ci'], higher_is_better)
    step = int(row['step'])
    text = '%s step %s undetermined: %s' % (row['experiment'], row['step'], reason)
    if figures and step in figures:
        median, mean_kept, kept, tasks, diverged = figures[step]
        if diverged:
            text += '; %d of %d test tasks diverged (MSE above 10 after adaptation) and dominate the mean' % (
                diverged, tasks)
        text += '; the median is %s, the mean of the %d tasks never above 10 is %s' % (
            fmt_number(median), kept, '-' if mean_kept is None else fmt_number(mean_kept))
    return text


def result_rows(experiment, csv_path, iterations=None, label=None):
    """One row per reported step: dicts keyed by COLUMNS (plus the raw numbers; for the sinusoid
    also ROBUST_COLUMNS, and 'why' for an undetermined row)."""
    results = read_test_csv(csv_path)
    if iterations is None:
        iterations = trained_iterations(os.path.dirname(csv_path))
    figures = robust_figures(experiment, csv_path)
    rows = []
    for step, published in zip(experiment.steps, experiment.published):
        if step not in results['means']:
            raise ReproduceError('%s has no column update%d (the paper reports step %d)' % (csv_path, step, step))
        mean = results['means'][step] * experiment.scale
        ci = results['ci95'][step] * experiment.scale
        pub_mean, pub_ci = published if published else (None, None)
        digits = 2 if experiment.metric == paper.ACCURACY else 3
        rows.append({
            'experiment': label or experiment.name,
            'step': str(step),
            'iterations': '%s/%d' % ('?' if iterations is None else iterations, experiment.iterations),
            'published': fmt_figure(pub_mean, pub_ci, experiment.metric),
            'ours': fmt_figure(mean, ci, experiment.metric),
            'difference': '-' if pub_mean is None else '%+.*f' % (digits, mean - pub_mean),
            'verdict': verdict(pub_mean, pub_ci, mean, ci, experiment.higher_is_better),
            'mean': mean, 'ci': ci, 'published_mean': pub_mean, 'published_ci': pub_ci,
        })
        if figures is not None:
            rows[-1].update(robust_cells(figures, step))
        if rows[-1]['verdict'] == UNDETERMINED:
            rows[-1]['why'] = why_undetermined(rows[-1], figures, experiment.higher_is_better)
    return rows


def check_columns(rows):
    """COLUMNS, and the sinusoid's robust figures where the rows have them."""
    return COLUMNS + (ROBUST_COLUMNS if rows and ROBUST_COLUMNS[0] in rows[0] else ())


def format_table(rows, columns=COLUMNS, fmt='text'):
    cells = [[str(row[c]) for c in columns] for row in rows]
    if fmt == 'markdown':
        lines = ['| ' + ' | '.join(columns) + ' |', '|' + '|'.join(' --- ' for _ in columns) + '|']
        return '\n'.join(lines + ['| ' + ' | '.join(r) + ' |' for r in cells])
    widths = [max(len(c), *(len(r[i]) for r in cells)) if cells else len(c) for i, c in enumerate(columns)]
    line = lambda values: '  '.join(v.ljust(w) for v, w in zip(values, widths)).rstrip()
    return '\n'.join([line(columns), line(['-' * w for w in widths])] + [line(r) for r in cells])


LEGEND = ('verdict: reproduced = our 95% CI overlaps the published one, or our figure is better '
          '(accuracy higher, MSE lower); below = our whole 95% CI is worse than the published one, however '
          'wide; undetermined = our mean or CI is not finite, or our CI reaches both better than the published '
          'figure and worse than it by more than the figure itself (MSE above twice it, accuracy below 0 %); '
          'n/a = no published figure.')
ROBUST_LEGEND = ('median: over all test tasks; mean of tasks never > 10: over the tasks whose MSE stays at '
                 'most 10 at every step 0..10 (their count), as sinusoid_study.py defines them.')


def print_check(rows, fmt, out):
    """The table, the legend and why any row is undetermined."""
    columns = check_columns(rows)
    print(format_table(rows, columns, fmt=fmt), file=out)
    print(LEGEND, file=out)
    if columns != COLUMNS:
        print(ROBUST_LEGEND, file=out)
    for row in rows:
        if 'why' in row:
            print(row['why'], file=out)


def exit_status(rows):
    """0: every row with a published figure reproduced; 1: some row below or undetermined."""
    return 1 if any(r['verdict'] in (BELOW, UNDETERMINED) for r in rows) else 0


## Experiment lookup for --check ----------------------------------------------------------------

def infer_experiment(csv_path):
    """The experiment a test CSV belongs to, from its folder names; error if not unique."""
    exp_dir = os.path.dirname(os.path.abspath(csv_path))
    logdir_name = os.path.basename(os.path.dirname(exp_dir))
    candidates = []
    for experiment in paper.EXPERIMENTS:
        flags = experiment_flags(experiment, logdir='.')
        if (os.path.basename(exp_dir) == exp_dir_name(flags)
                and os.path.basename(csv_path) == csv_name(flags)):
            candidates.append(experiment)
    # a released model's folder is named after its experiment; an evaluation-only cell lives in its model's
    named = [e for e in candidates if (e.evaluates or e.name) == logdir_name]
    if named:
        return named[0]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise ReproduceError('%s matches no experiment of paper.py by its folder and file name; '
                             'name one with --experiment' % csv_path)
    raise ReproduceError('%s matches several experiments (%s); name one with --experiment'
                         % (csv_path, ', '.join(e.name for e in candidates)))


## Figures (plots.py; matplotlib is imported only here) -------------------------------------------

def figures_available(out):
    """True when matplotlib imports; otherwise prints the one-line install hint."""
    import plots
    if plots.available():
        return True
    print(plots.INSTALL_HINT, file=out)
    return False


def released(csv_path):
    """True for a CSV under the repository's models/ (a released model: the folder is tracked)."""
    return os.path.realpath(csv_path).startswith(os.path.realpath(MODELS) + os.sep)


def figure_path(csv_path, plot_dir=None, suffix=''):
    """Where a figure of this test CSV goes: beside it (test_ubs{K}_stepsize{alpha}{suffix}.png), or,
    with plot_dir or for a released model (then logs/figures), in <dir>/<logdir name>/<exp_string>/:
    a figure is output, not part of the release, and must not land in the tracked models/."""
    name = os.path.splitext(os.path.basename(csv_path))[0] + suffix + '.png'
    if plot_dir is None and not released(csv_path):
        return os.path.join(os.path.dirname(csv_path), name)
    exp_dir = os.path.dirname(os.path.abspath(csv_path))
    folder = os.path.join(plot_dir or RELEASED_FIGURES, os.path.basename(os.path.dirname(exp_dir)),
                          os.path.basename(exp_dir))
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, name)


def write_curve(experiment, csv_path, iterations, out, label=None, plot_dir=None):
    """The metric against inner steps (plots.curve) at figure_path; None if the folder is not writable."""
    import plots
    try:
        path = plots.curve(experiment, read_test_csv(csv_path), figure_path(csv_path, plot_dir), iterations, label)
    except OSError as exc:  # e.g. a read-only folder: the verdict stands
        print('Warning: no figure (%s)' % exc, file=sys.stderr)
        return None
    print('figure: %s' % path, file=out)
    return path


def sine_path(csv_path, plot_dir=None):
    return figure_path(csv_path, plot_dir, '_qualitative')


def sine_runs(experiment, flags, opts, extra):
    """[(experiment, main.py flags)] of the columns of the qualitative figure: this run and its partner.

    The partner (SINE_PARTNERS) is looked for in opts.partner_logdir or
    logs/<its name>, with the same extra flags, so with the same seed and test step.
    MAML comes first (left), the pretrained baseline second.
    """
    runs = [(experiment, flags)]
    partner = SINE_PARTNERS.get(experiment.name)
    if partner:
        partner = paper.get(partner)
        logdir = getattr(opts, 'partner_logdir', None) or default_logdir(partner.name)
        runs.append((partner, experiment_flags(partner, logdir, data_dir=opts.data_dir, extra=extra)))
    return sorted(runs, key=lambda run: run[0].flag_value('metatrain_iterations') == '0')  # stable: MAML first


def write_sine_figure(experiment, flags, csv_path, opts, extra, out):
    """The sinusoid's qualitative figure beside the CSV; loads the trained model(s), so imports TensorFlow."""
    import plots
    values = main_flag_values(flags)
    tasks = plots.sine_tasks(values.seed, values.update_batch_size)
    columns, missing = [], []
    for entry, entry_flags in sine_runs(experiment, flags, opts, extra):
        entry_values = main_flag_values(entry_flags)
        exp_dir = os.path.join(entry_values.logdir, exp_dir_name(entry_flags))
        try:
            loaded = plots.load_sine_model(entry_values, exp_dir)
        except Exception as exc:  # noqa: BLE001  (the partner's folder is not ours to vouch for)
            if entry is experiment:
                raise
            loaded, exp_dir = None, '%s (%s: %s)' % (exp_dir, type(exc).__name__, exc)
        if loaded is None:
            missing.append((entry, exp_dir))
            continue
        model, iterations = loaded
        title = '%s\n%s, test step size %g' % (entry.name, plots.iterations_text(iterations, entry),
                                               entry_values.update_lr)
        columns.append((title, [plots.sine_fits(model, task) for task in tasks]))
    if not columns:
        raise ReproduceError('no trained model in %s' % missing[0][1])
    path = plots.sine_figure(columns, tasks, sine_path(csv_path, getattr(opts, 'plot_dir', None)))
    print('figure: %s' % path, file=out)
    for entry, exp_dir in missing:
        print('  (not beside %s: no trained model it can load in %s; `python reproduce.py %s` trains one '
              'there, or give its logdir with --partner_logdir)' % (entry.name, exp_dir, entry.evaluates or entry.name),
              file=out)
    return path


def write_figures(experiment, flags, csv_path, iterations, opts, extra, out):
    """After a test: the curve, and for the sinusoid the qualitative figure. Never changes the verdict:
    a figure that fails is reported and skipped."""
    if not figures_available(out):
        return
    write_curve(experiment, csv_path, iterations, out, plot_dir=getattr(opts, 'plot_dir', None))
    if main_flag_values(flags).datasource == 'sinusoid':
        try:
            write_sine_figure(experiment, flags, csv_path, opts, extra, out)
        except Exception as exc:  # noqa: BLE001  (the table is printed; a figure must not turn it into an error)
            print('Warning: no qualitative figure (%s: %s)' % (type(exc).__name__, exc), file=sys.stderr)


## Commands -----------------------------------------------------------------------------------

def cmd_list(fmt='text', out=sys.stdout):
    rows = []
    for e in paper.EXPERIMENTS:
        for step, published in zip(e.steps, e.published):
            rows.append({'experiment': e.name, 'step': str(step),
                         'published': fmt_figure(*(published or (None, None)), e.metric),
                         'metric': 'accuracy %' if e.metric == paper.ACCURACY else 'MSE',
                         'source': e.source})
    print(format_table(rows, ('experiment', 'step', 'published', 'metric', 'source'), fmt), file=out)
    print('\nReference flags (main.py; reproduce.py adds --logdir=logs/EXPERIMENT):\n', file=out)
    if fmt == 'markdown':
        rows = [{'experiment': e.name, 'main.py flags': '`%s`' % ' '.join(e.flags), 'protocol': e.protocol,
                 'note': e.note} for e in paper.EXPERIMENTS]
        print(format_table(rows, ('experiment', 'main.py flags', 'protocol', 'note'), fmt), file=out)
        return 0
    for e in paper.EXPERIMENTS:
        print('  %-32s %s%s' % (e.name, ' '.join(e.flags), ('  # ' + e.note) if e.note else ''), file=out)
        print('  %-32s   protocol: %s' % ('', e.protocol), file=out)
    return 0


def require_test_csv(csv_path):
    """A missing CSV is the usual case before training: say what to do instead of a traceback."""
    if os.path.isdir(csv_path):
        raise ReproduceError('%s is a folder; give the test CSV in it (test_ubs{K}_stepsize{alpha}.csv, '
                             'written by main.py --train=False)' % csv_path)
    if not os.path.exists(csv_path):
        raise ReproduceError('no test CSV at %s: train and test first (python reproduce.py EXPERIMENT, '
                             'see --list), or give the CSV of a model in models/' % csv_path)


def cmd_check(csv_path, name, fmt, out=sys.stdout, plot=False, plot_dir=None):
    """The verdict on a CSV; with plot, also its curve PNG (matplotlib's import alone costs
    about a second, twice the rest of --check, so only when asked)."""
    require_test_csv(csv_path)
    experiment = paper.get(name) if name else infer_experiment(csv_path)
    iterations = trained_iterations(os.path.dirname(csv_path))
    rows = result_rows(experiment, csv_path, iterations)
    print_check(rows, fmt, out)
    if plot and figures_available(out):
        write_curve(experiment, csv_path, iterations, out, plot_dir=plot_dir)
    return exit_status(rows)


## Evaluation-only cells (paper.py's `evaluates`) --------------------------------------------------

EVALUATED_FLAGS = ('update_batch_size', 'train_update_batch_size')  # what an evaluation changes of its model's


def flag_differences(experiment, other):
    """The main.py flags, as given, in which two experiments differ beyond the K they are tested at."""
    def given(e):
        return {f for f in e.flags if f.lstrip('-').partition('=')[0] not in EVALUATED_FLAGS}
    return sorted(given(experiment) ^ given(other))


def check_source_logdir(experiment, logdir):
    """The run folder of the trained model that the evaluation-only `experiment` tests, in logdir, after
    checking that it is a model of the experiment it evaluates: ReproduceError otherwise."""
    source = paper.source_of(experiment)
    holder = paper.BY_NAME.get(os.path.basename(os.path.normpath(logdir)))
    if holder is not None and holder.evaluates:
        holder = None  # a folder named after an evaluation cell (logs/omniglot-5way-5shot): its name says nothing
    if holder is not None and trained_iterations(os.path.join(logdir, exp_dir_name(list(holder.flags)))) is None:
        holder = None  # an empty or new folder holds no model of another experiment: say what is missing below
    if holder is not None and holder.name != source.name:
        differences = flag_differences(source, holder)
        raise ReproduceError('%s holds %s, not %s, the model that %s evaluates (%s)' % (
            logdir, holder.name, source.name, experiment.name,
            'they differ in %s' % ' '.join(differences) if differences else 'trained at K=%d, not %d' % (
                holder.trained_k, source.trained_k)))
    exp_dir = os.path.join(logdir, exp_dir_name(experiment_flags(experiment, logdir)))
    if trained_iterations(exp_dir) is None:
        others = sorted(os.listdir(logdir)) if os.path.isdir(logdir) else []
        raise ReproduceError('no trained model of %s in %s%s: train it first (python reproduce.py %s), or give '
                             'its logdir with --logdir' % (
                                 source.name, exp_dir, ' (the logdir holds %s: another configuration)'
                                 % ', '.join(others) if others else '', source.name))
    return exp_dir


def refuse_training_options(experiment, opts):
    for option, given in (('--metatrain_iterations', opts.metatrain_iterations is not None),
                          ('--compare-first-order', opts.compare_first_order)):
        if given:
            raise ReproduceError('%s is an evaluation of the model of %s and trains nothing: %s does not apply '
                                 '(train the model with python reproduce.py %s)' % (
                                     experiment.name, experiment.evaluates, option, experiment.evaluates))


def cmd_evaluate(experiment, opts, extra, out=sys.stdout):
    """An evaluation-only cell: test its model at the cell's K (at the step the rule picks on validation
    tasks, for a cell with a step_grid), and write the verdict beside the CSV."""
    refuse_training_options(experiment, opts)
    refuse_tuned_flags(experiment, extra)
    logdir = opts.logdir or default_logdir(experiment.name)
    flags = experiment_flags(experiment, logdir, data_dir=opts.data_dir, extra=extra)
    main_flag_values(flags)  # fail early on a bad flag
    exp_dir = check_source_logdir(experiment, logdir)
    print('[%s] %s: %s; %s' % (time.strftime('%Y-%m-%d %H:%M:%S'), experiment.name, experiment.description,
                               experiment.protocol), file=out)
    if experiment.step_grid:
        flags = without_flag(flags, 'update_lr') + ['--update_lr=%s' % tune_step(experiment, exp_dir, flags, out)]
    _, test_run, path = train_and_test(flags, out, train=False)
    rows = result_rows(experiment, path, iterations=test_run.restored_iterations)
    print('\n[%s] test results: %s' % (time.strftime('%Y-%m-%d %H:%M:%S'), path), file=out)
    print_check(rows, opts.format, out)
    check = io.StringIO()
    status = cmd_check(path, experiment.name, 'text', out=check)
    check_path = os.path.join(exp_dir, check_name(experiment, flags))
    with open(check_path, 'w') as f:
        f.write(check.getvalue())
    print('wrote %s' % check_path, file=out)
    write_figures(experiment, flags, path, test_run.restored_iterations, opts, extra, out)
    return status


## Tuned step sizes (paper.py's step_grid) ---------------------------------------------------------

TUNED_STEPS = range(1, 11)  # the rule scores the whole curve after adaptation, steps 1..10
TUNING_DECIDES = ('update_lr', 'test_set', 'test_iter')  # flags of a tuned cell that the tuning sets


def refuse_tuned_flags(experiment, extra):
    """The tuning chooses the step on validation tasks of the latest checkpoint: extra flags that would
    change the step, the tasks or the checkpoint are an error, not silently overridden."""
    given = [f for f in extra if f.lstrip('-').partition('=')[0] in TUNING_DECIDES]
    if experiment.step_grid and given:
        untuned = [e.name for e in paper.EXPERIMENTS if e.evaluates == experiment.evaluates and not e.step_grid]
        raise ReproduceError('%s tunes its step size on validation tasks of the latest checkpoint: %s does not '
                             'apply%s' % (experiment.name, ' '.join(given),
                                          ' (a fixed step: %s)' % ', '.join(untuned) if untuned else ''))


def tuning_dir(experiment, exp_dir):
    """Where the validation CSVs of a tuned cell live: a folder beside its model (tune_ubs{K})."""
    return os.path.join(exp_dir, 'tune_ubs%d' % experiment.evaluated_k)


def tuning_record(experiment, exp_dir):
    return tuning_dir(experiment, exp_dir) + '.txt'


def validation_csv_name(experiment, alpha):
    return 'val_ubs%d_stepsize%s.csv' % (experiment.evaluated_k, alpha)


def choose_step(experiment, curves):
    """The rule (docs/experiments.md, "The tuned step size"): {alpha: {step: validation mean}} ->
    (the alpha whose mean over steps 1..10 is best, {alpha: that mean or None when not finite})."""
    scores = {}
    for alpha, means in curves.items():
        values = [means.get(step, float('nan')) for step in TUNED_STEPS]
        scores[alpha] = sum(values) / len(values) if all(math.isfinite(v) for v in values) else None
    finite = [alpha for alpha in curves if scores[alpha] is not None]
    if not finite:
        raise ReproduceError('no step size of %s gives finite validation figures at steps 1..10'
                             % ', '.join(map(str, curves)))
    best = (max if experiment.higher_is_better else min)(finite, key=lambda alpha: scores[alpha])
    return best, scores


def at_edge(experiment, alpha):
    return alpha in (experiment.step_grid[0], experiment.step_grid[-1])


def tuning_text(experiment, curves, iterations):
    """The record of a tuning, written beside the model: each step's validation figures and the choice
    (none when the best step is at the edge of the grid: the rule does not accept it)."""
    best, scores = choose_step(experiment, curves)
    shown = (1, 5, 10)
    lines = ['%s: step size tuned on 600 validation tasks (main.py --train=False --test_set=False), '
             'K=%d, model of %s iterations' % (experiment.name, experiment.evaluated_k, iterations),
             'rule: the %s mean validation %s over steps 1..10 (docs/experiments.md, "The tuned step size")'
             % ('highest' if experiment.higher_is_better else 'lowest', experiment.metric),
             '%-8s  %s  %s' % ('alpha', '  '.join('%10s' % ('step %d' % s) for s in shown), 'mean 1..10')]
    for alpha in curves:
        figures = '  '.join('%10.4f' % curves[alpha].get(s, float('nan')) for s in shown)
        score = 'not finite' if scores[alpha] is None else '%.4f' % scores[alpha]
        lines.append('%-8s  %s  %s%s' % (alpha, figures, score, '  <- best' if alpha == best else ''))
    if at_edge(experiment, best):
        lines.append('chosen: none (%s is at the edge of the grid: widen step_grid in paper.py)' % best)
    else:
        lines.append('chosen: %s' % best)
    return '\n'.join(lines) + '\n'


def read_tuning(experiment, exp_dir, folder=None):
    """{alpha: {step: validation mean}} from the validation CSVs of a tuned cell, in grid order."""
    folder = folder or tuning_dir(experiment, exp_dir)
    curves = {}
    for alpha in experiment.step_grid:
        path = os.path.join(folder, validation_csv_name(experiment, alpha))
        if os.path.exists(path):
            curves[alpha] = read_test_csv(path)['means']
    return curves


def copy_latest_checkpoint(exp_dir, to_dir):
    """The latest checkpoint of exp_dir (main.py's model-N) alone in to_dir, so that main.py tests it there:
    its test CSV has the same name on validation and test tasks, and the model's own must not be
    overwritten."""
    latest = None
    if os.path.exists(os.path.join(exp_dir, 'checkpoint')):
        latest = read_checkpoint_file(exp_dir).get('model_checkpoint_path', [None])[0]
    files = [name for name in os.listdir(exp_dir) if latest and name.startswith(latest + '.')]
    if not any(name.endswith('.index') for name in files):
        raise ReproduceError('tuning a step size needs a checkpoint of main.py (model-N, named in the '
                             '\'checkpoint\' file) in %s; found none' % exp_dir)
    os.makedirs(to_dir)
    for name in files:
        shutil.copy2(os.path.join(exp_dir, name), to_dir)
    with open(os.path.join(to_dir, 'checkpoint'), 'w') as f:
        f.write('model_checkpoint_path: "%s"\nall_model_checkpoint_paths: "%s"\n' % (latest, latest))


def validation_curves(experiment, exp_dir, flags, tmp, out):
    """Test a copy of the model on validation tasks at each step of the grid; the CSVs in tmp/tune."""
    folder = os.path.join(tmp, 'tune')
    os.makedirs(folder)
    copy_latest_checkpoint(exp_dir, os.path.join(tmp, 'logdir', os.path.basename(exp_dir)))
    for alpha in experiment.step_grid:
        run_flags = without_flag(without_flag(flags, 'logdir'), 'update_lr') + [
            '--logdir=%s' % os.path.join(tmp, 'logdir'), '--update_lr=%s' % alpha, '--train=False',
            '--test_set=False']
        run = run_main(run_flags, out)
        written = test_csv_path(run_flags)
        if run.returncode != 0 or not os.path.exists(written):
            raise ReproduceError('the validation test at step %s failed (exit status %d): %s'
                                 % (alpha, run.returncode, run.command))
        shutil.move(written, os.path.join(folder, validation_csv_name(experiment, alpha)))
    return folder


def tune_step(experiment, exp_dir, flags, out):
    """Test the model on validation tasks at each step of the grid; record and return the rule's choice.
    The validation CSVs and the record replace the old ones only once every run has succeeded."""
    print('\n[%s] tuning the step size on validation tasks: %s' % (
        time.strftime('%Y-%m-%d %H:%M:%S'), ', '.join(map(str, experiment.step_grid))), file=out)
    with tempfile.TemporaryDirectory() as tmp:
        new = validation_curves(experiment, exp_dir, flags, tmp, out)
        curves = read_tuning(experiment, exp_dir, folder=new)
        text = tuning_text(experiment, curves, trained_iterations(exp_dir))
        folder = tuning_dir(experiment, exp_dir)
        if os.path.isdir(folder):
            shutil.rmtree(folder)
        shutil.copytree(new, folder)
    with open(tuning_record(experiment, exp_dir), 'w') as f:
        f.write(text)
    print('\n' + text + 'wrote %s and %s/' % (tuning_record(experiment, exp_dir), folder), file=out)
    best, _ = choose_step(experiment, curves)
    if at_edge(experiment, best):
        raise ReproduceError('the best step, %s, is at the edge of the grid, which the rule does not accept: '
                             'widen %s\'s step_grid in paper.py' % (best, experiment.name))
    if best != experiment.update_lr:
        print('Note: paper.py gives %s --update_lr=%s, the choice on the released model; on this model the '
              'rule chose %s, which this test uses' % (experiment.name, experiment.update_lr, best), file=out)
    return best


def cmd_reproduce(experiment, opts, extra, out=sys.stdout):
    if experiment.evaluates:
        return cmd_evaluate(experiment, opts, extra, out)
    logdir = opts.logdir or default_logdir(experiment.name)
    flags = experiment_flags(experiment, logdir, opts.metatrain_iterations, opts.data_dir, extra)
    main_flag_values(flags)  # fail early on a bad flag
    print('[%s] %s: %s' % (time.strftime('%Y-%m-%d %H:%M:%S'), experiment.name, experiment.description), file=out)
    _, test_run, path = train_and_test(flags, out, train=not opts.no_train)
    rows = result_rows(experiment, path, iterations=test_run.restored_iterations)
    print('\n[%s] test results: %s' % (time.strftime('%Y-%m-%d %H:%M:%S'), path), file=out)
    print_check(rows, opts.format, out)
    write_figures(experiment, flags, path, test_run.restored_iterations, opts, extra, out)
    return exit_status(rows)


def cmd_compare(experiment, opts, extra, out=sys.stdout):
    """Second order and first order (--stop_grad=True) of one experiment, side by side."""
    if experiment.evaluates:
        refuse_training_options(experiment, opts)
    base = paper.second_order_of(experiment) or experiment
    first = paper.get(base.first_order) if base.first_order else None
    logdir = opts.logdir or default_logdir(base.name + '-compare')
    variants = [('second order', base, 'False'),
                ('first order', first or base, 'True')]
    rows, curves = [], []
    for label, entry, stop_grad in variants:
        flags = experiment_flags(base, logdir, opts.metatrain_iterations, opts.data_dir, extra, stop_grad=stop_grad)
        print('[%s] %s, %s' % (time.strftime('%Y-%m-%d %H:%M:%S'), base.name, label), file=out)
        train_run, test_run, path = train_and_test(flags, out, train=not opts.no_train)
        # the published figure of this variant; none for a first order that the paper does not report
        reference = entry if entry is not base or stop_grad == 'False' else without_figures(base)
        row = result_rows(reference, path, iterations=test_run.restored_iterations,
                          label='%s (%s)' % (base.name, label))[0]
        curves.append((reference, path, test_run.restored_iterations, row['experiment']))
        spi = train_run.seconds_per_iteration if train_run else None
        row.update({'variant': row['experiment'],
                    's/iter': '-' if spi is None else '%.3f' % spi,
                    'CPU s (train)': '-' if train_run is None else '%.0f' % train_run.cpu_seconds,
                    'peak RSS (train)': '-' if train_run is None else '%.0f MB' % (train_run.maxrss_kb / 1024.0)})
        rows.append(row)
    print('\n[%s] first order versus second order, %s' % (time.strftime('%Y-%m-%d %H:%M:%S'), base.name), file=out)
    print(format_table(rows, COMPARE_COLUMNS, fmt=opts.format), file=out)
    print(LEGEND + ' s/iter: wall time per training iteration between the first and last '
          '"Iteration N" lines of the run ("-": fewer than two such lines, e.g. resumed at the end); '
          'CPU s: user+system seconds of the whole training process; peak RSS: its maximum resident memory.',
          file=out)
    for row in rows:
        if 'why' in row:
            print(row['why'], file=out)
    if figures_available(out):
        for reference, path, iterations, label in curves:
            write_curve(reference, path, iterations, out, label, plot_dir=getattr(opts, 'plot_dir', None))
    return exit_status(rows)


## Releasing a trained run (models/) ----------------------------------------------------------------

CHECKPOINT_FILE_ENTRY = re.compile(r'^(\w+):\s*(.*)$')


def read_checkpoint_file(exp_dir):
    """The 'checkpoint' file of CheckpointManager as {key: [values]} (values unquoted)."""
    entries = {}
    with open(os.path.join(exp_dir, 'checkpoint')) as f:
        for line in f:
            match = CHECKPOINT_FILE_ENTRY.match(line.strip())
            if match:
                entries.setdefault(match.group(1), []).append(match.group(2).strip('"'))
    return entries


def run_folder(logdir):
    """The one exp_string folder under logdir that holds a checkpoint of ours."""
    if not os.path.isdir(logdir):
        raise ReproduceError('%s is not a folder; give the logdir of a trained run, models/EXPERIMENT' % logdir)
    found = sorted(name for name in os.listdir(logdir)
                   if os.path.isfile(os.path.join(logdir, name, 'checkpoint')))
    if len(found) != 1:
        raise ReproduceError('%s should hold exactly one run folder with a checkpoint; found %s'
                             % (logdir, found or 'none'))
    return os.path.join(logdir, found[0])


def keep_latest_checkpoint(exp_dir):
    """Delete every checkpoint but the latest and make the 'checkpoint' file name only it."""
    entries = read_checkpoint_file(exp_dir)
    latest = entries['model_checkpoint_path'][0]
    stamps = dict(zip(entries.get('all_model_checkpoint_paths', []),
                      entries.get('all_model_checkpoint_timestamps', [])))
    removed = []
    for name in sorted(os.listdir(exp_dir)):
        match = re.match(r'^(model-\d+)\.(index|data-\d+-of-\d+)$', name)
        if match and match.group(1) != latest:
            os.remove(os.path.join(exp_dir, name))
            removed.append(name)
    lines = ['model_checkpoint_path: "%s"' % latest, 'all_model_checkpoint_paths: "%s"' % latest]
    if latest in stamps:
        lines.append('all_model_checkpoint_timestamps: %s' % stamps[latest])
    lines += ['last_preserved_timestamp: %s' % v for v in entries.get('last_preserved_timestamp', [])]
    temporary = os.path.join(exp_dir, 'checkpoint.tmp')
    with open(temporary, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    os.replace(temporary, os.path.join(exp_dir, 'checkpoint'))
    return latest, removed


def cmd_release(logdir, out=sys.stdout):
    """Make a trained run fit to commit: only its latest checkpoint, and check.txt beside a current test CSV."""
    name = os.path.basename(os.path.normpath(logdir))
    experiment = paper.BY_NAME.get(name)
    if experiment is None:
        raise ReproduceError('%s: a released run lives in a folder named after its experiment (see --list)' % logdir)
    if experiment.evaluates:
        raise ReproduceError('%s is an evaluation of the model of %s, released with it: run python reproduce.py %s'
                             % (name, experiment.evaluates, name))
    exp_dir = run_folder(logdir)
    flags = experiment_flags(experiment, logdir)
    if os.path.basename(exp_dir) != exp_dir_name(flags):
        raise ReproduceError('%s is not the folder of %s\'s flags (%s)' % (exp_dir, name, exp_dir_name(flags)))
    latest, removed = keep_latest_checkpoint(exp_dir)
    print('%s: kept %s, removed %d older checkpoint files' % (exp_dir, latest, len(removed)), file=out)
    csv_path = os.path.join(exp_dir, csv_name(flags))
    if not os.path.exists(csv_path):
        print('  no test CSV yet: test it with python main.py %s %s' % (' '.join(flags), ' '.join(TEST_FLAGS)),
              file=out)
        return 0
    if os.path.getmtime(csv_path) < os.path.getmtime(os.path.join(exp_dir, latest + '.index')):
        raise ReproduceError('%s is older than %s: test the checkpoint again first' % (csv_path, latest))
    check = io.StringIO()
    status = cmd_check(csv_path, name, 'text', out=check)
    with open(os.path.join(exp_dir, 'check.txt'), 'w') as f:
        f.write(check.getvalue())
    print('  wrote check.txt:\n' + check.getvalue(), file=out)
    stale_evaluations(experiment, exp_dir, latest, out)
    return status


def stale_evaluations(source, exp_dir, latest, out):
    """Say which evaluation-only cells of this model were tested on an older checkpoint than its latest."""
    for experiment in paper.EXPERIMENTS:
        if experiment.evaluates != source.name:
            continue
        if evaluated_iterations(experiment, exp_dir) != trained_iterations(exp_dir):
            print('  %s is not evaluated on %s yet: python reproduce.py %s --logdir=%s' % (
                experiment.name, latest, experiment.name, os.path.dirname(exp_dir)), file=out)


def evaluated_iterations(experiment, exp_dir):
    """The iterations of the model an evaluation-only cell was tested on, from its check file (not file
    times, which a clone does not keep); None when it has none."""
    path = os.path.join(exp_dir, check_name(experiment))
    if not os.path.exists(path):
        return None
    done = read_check_txt(path)[0]['iterations'].partition('/')[0]
    return int(done) if done.isdigit() else None


## The results table (README) ------------------------------------------------------------------------

def read_check_txt(path):
    """The rows of a check.txt (the text table of --check) as dicts keyed by its header."""
    with open(path) as f:
        lines = f.read().splitlines()
    header = re.split(r'\s{2,}', lines[0].strip())
    rows = []
    for line in lines[2:]:
        if not line.strip() or line.startswith('verdict:'):
            break
        rows.append(dict(zip(header, re.split(r'\s{2,}', line.strip()))))
    if not rows or header[:len(COLUMNS)] != list(COLUMNS):
        raise ReproduceError('%s is not the output of reproduce.py --check' % path)
    return rows


def released_dir(experiment, models=MODELS):
    """models/<experiment>/<exp_string>: where a run of the experiment is released; for an evaluation-only
    cell, its model's folder (the exp_string of its flags is that model's)."""
    return os.path.join(models, experiment.evaluates or experiment.name,
                        exp_dir_name(experiment_flags(experiment, models)))


def released_check(experiment, models=MODELS):
    """{step: row} of the released check file of the experiment (check_name), or {} when there is none."""
    path = os.path.join(released_dir(experiment, models), check_name(experiment))
    if not os.path.exists(path):
        return {}
    return {row['step']: row for row in read_check_txt(path)}


def training_iterations(experiment, models=MODELS):
    """Iterations done by a run of models/ that is still training (its latest checkpoint, not yet
    tested), as 'done/total'; None without one. For an evaluation-only cell, its model's."""
    exp_dir = released_dir(experiment, models)
    if not os.path.exists(os.path.join(exp_dir, 'checkpoint')):
        return None
    done = trained_iterations(exp_dir)
    return None if done is None else '%d/%d' % (done, experiment.iterations)


def table_verdict(row):
    """A check.txt row's verdict, with "so far" when its model was tested before the paper's count of
    iterations (a campaign run still training): such a verdict may yet change."""
    verdict_ = row.get('verdict', '-')
    done, _, total = row.get('iterations', '').partition('/')
    if verdict_ in (REPRODUCED, BELOW) and done.isdigit() and total.isdigit() and int(done) < int(total):
        return verdict_ + ' so far'
    return verdict_


def results_table_rows(models=MODELS, names=None):
    """One row per reported step of each experiment (of `names`, default all): TABLE_COLUMNS and the protocol."""
    rows = []
    for experiment in paper.EXPERIMENTS if names is None else [paper.get(name) for name in names]:
        check = released_check(experiment, models)
        training = None if check else training_iterations(experiment, models)
        untested = 'not evaluated yet' if experiment.evaluates else 'training, not tested'
        for step, published in zip(experiment.steps, experiment.published):
            row = check.get(str(step), {})
            rows.append({'experiment': experiment.name, 'step': str(step),
                         'paper': fmt_figure(*(published or (None, None)), experiment.metric),
                         'ours': row.get('ours', '-'), 'iterations': row.get('iterations', training or '-'),
                         'verdict': table_verdict(row),
                         'model in models/': 'yes' if check else untested if training else 'no',
                         **{c: row[c] for c in ROBUST_COLUMNS if c in row}})
    return rows


def paper_figure(published):
    """A published figure as the paper prints it: the decimals of its CI (99.9 +- 0.1, 48.70 +- 1.84)."""
    mean, ci = published
    if ci is None:
        return '%g' % mean
    digits = len(('%g' % ci).partition('.')[2])
    return '%.*f +- %.*f' % (digits, mean, digits, ci)


def compact_iterations(text):
    """'60000/60000' -> '60k'; '10187/60000' -> '10.2k/60k' (a run short of the paper's count)."""
    done, _, total = text.partition('/')
    if not (done.isdigit() and total.isdigit()):
        return text
    k = lambda n: ('%dk' % (n // 1000)) if n % 1000 == 0 else '%.1fk' % (n / 1000.0)
    return k(int(done)) if done == total else '%s/%s' % (k(int(done)), k(int(total)))


def table_cell(row, published):
    """One cell of the front table: ours (paper's figure), iterations, verdict; '-' without a paper figure."""
    if row is None or published is None:
        return '-'
    paper_text = '(paper %s)' % paper_figure(published)
    if row['ours'] == '-':
        # no iterations here: a run still training would change them at every checkpoint, and the README's
        # copy of the table with them (the tested iterations are in the cell once it has a test)
        state = {'no': '', 'training, not tested': ' training, not tested yet', 'not evaluated yet': ' not evaluated yet'}
        return '- %s%s' % (paper_text, state[row['model in models/']])
    return '%s %s %s %s' % (ours_text(row), paper_text, compact_iterations(row['iterations']), row['verdict'])


def ours_text(row):
    """Our figure for the front table. An undetermined sinusoid mean is a few diverging tasks' number, so
    the median of its check file stands in its place, named as such (the mean stays in the check file)."""
    median = row.get(ROBUST_COLUMNS[0], '-')
    if row['verdict'] != UNDETERMINED or median == '-':
        return row['ours']
    return 'mean dominated by diverging tasks; median %s' % median


def table1_rows(columns, models=MODELS):
    """The rows MAML, first order approx., MAML (no conv) of one block of Table 1."""
    rows = []
    for label, suffix in paper.TABLE1_ROWS:
        row = {'method': label}
        for heading, name in columns:
            experiment = paper.table1_cell(name, suffix)
            ours = results_table_rows(models, [experiment.name])[0] if experiment else None
            row[heading] = table_cell(ours, experiment.published[0] if experiment else None)
        rows.append(row)
    return rows


def sine_rows(models=MODELS):
    """The sinusoid figure: one row per reported step, a column per curve."""
    by_curve = {label: results_table_rows(models, [name]) for label, name in paper.SINE_FIGURE}
    rows = []
    for i, step in enumerate(paper.get(paper.SINE_FIGURE[0][1]).steps):
        row = {'inner steps': str(step)}
        for label, name in paper.SINE_FIGURE:
            row[label] = table_cell(by_curve[label][i], paper.get(name).published[i])
        rows.append(row)
    return rows


TABLE_NOTE = ('Each cell: ours, mean +- 95% CI over 600 test tasks (the paper\'s figure), iterations trained, '
              'verdict. Omniglot 5-shot: the 1-shot model evaluated at 5 shots; sinusoid: the K=10 models '
              'evaluated at K=5, the pretrained one at a tuned step (docs/experiments.md, the protocols). Other '
              'runs: --table --variants.')


def front_table(fmt='text', models=MODELS):
    """The paper's Table 1 and sinusoid figure, in the paper's layout, as text."""
    parts = []
    for block, columns in paper.TABLE1_BLOCKS:
        steps = sorted({paper.table1_cell(name, '').steps[0] for _, name in columns})
        parts.append('%s (accuracy %%, at inner step %s):' % (block, ' or '.join(map(str, steps))))
        parts.append(format_table(table1_rows(columns, models), ('method',) + tuple(h for h, _ in columns), fmt))
    parts.append('Sinusoid, K=5 (MSE after 1, 5 and 10 inner steps; the oracle is plotted in the paper without '
                 'a number, ours is among the variants):')
    parts.append(format_table(sine_rows(models), ('inner steps',) + tuple(label for label, _ in paper.SINE_FIGURE),
                              fmt))
    parts.append(TABLE_NOTE)
    return '\n\n'.join(parts)


def variant_names():
    """Every experiment that is not a cell of the front table, in paper.py's order."""
    front = set(paper.front_table_names())
    return [e.name for e in paper.EXPERIMENTS if e.name not in front]


def cmd_table(fmt='text', out=sys.stdout, models=MODELS, variants=False):
    """The paper's Table 1 and sinusoid figure with the released models' results (their check files), for
    the README; with variants, the other experiments, one row per step."""
    if variants:
        rows = [dict(row, protocol=paper.get(row['experiment']).protocol)
                for row in results_table_rows(models, variant_names())]
        print(format_table(rows, VARIANT_COLUMNS, fmt), file=out)
    else:
        print(front_table(fmt, models), file=out)
    return 0


def without_figures(experiment):
    return dataclasses.replace(experiment, published=tuple(None for _ in experiment.steps))


def parse_args(argv):
    if '--' in argv:
        split = argv.index('--')
        argv, extra = argv[:split], argv[split + 1:]
    else:
        extra = []
    parser = ArgumentParser(
        prog='reproduce.py', description='Reproduce the MAML paper\'s experiments and compare with the published figures.',
        epilog='Flags after "--" are passed to main.py unchanged. Experiments: ' + ', '.join(paper.BY_NAME))
    parser.add_argument('experiment', nargs='?', help='experiment name (see --list)')
    parser.add_argument('--list', action='store_true', help='list the experiments and their reference flags')
    parser.add_argument('--check', metavar='CSV', help='verdict for an existing test CSV, without training')
    parser.add_argument('--table', action='store_true',
                        help='the results table of the README: every experiment with the model released in '
                             'models/ (its check.txt): published figure, ours, iterations, verdict')
    parser.add_argument('--variants', action='store_true',
                        help='with --table: the other runs (trained another way than the paper\'s figures, or '
                             'without a published figure), one row per step')
    parser.add_argument('--release', metavar='LOGDIR',
                        help='make a trained run in LOGDIR (models/EXPERIMENT) fit to commit: only its '
                             'latest checkpoint, and check.txt (the --check output) beside its test CSV')
    parser.add_argument('--experiment', dest='experiment_opt', metavar='NAME',
                        help='the experiment of --check CSV (default: inferred from its folders)')
    parser.add_argument('--compare-first-order', action='store_true',
                        help='run with and without --stop_grad=True and compare accuracy, s/iter and memory')
    parser.add_argument('--metatrain_iterations', type=int, metavar='N',
                        help='train for N iterations instead of the paper\'s (shortened run)')
    parser.add_argument('--logdir', help='main.py --logdir (default: logs/EXPERIMENT, '
                                         'or logs/EXPERIMENT-compare with --compare-first-order)')
    parser.add_argument('--data_dir', help='main.py --data_dir (folder holding omniglot_resized/, miniImagenet/)')
    parser.add_argument('--no-train', action='store_true', help='only test the latest checkpoint in the logdir')
    parser.add_argument('--format', choices=('text', 'markdown'), default='text', help='table format')
    parser.add_argument('--plot', action='store_true',
                        help='with --check: also write the curve PNG beside the CSV (needs matplotlib; '
                             'a run of an EXPERIMENT always writes its figures); a CSV under models/ gets '
                             'its figure in logs/figures/ instead')
    parser.add_argument('--plot_dir', metavar='D',
                        help='write the figures in D/<logdir name>/<exp_string>/ instead of beside the CSV')
    parser.add_argument('--partner_logdir', metavar='D',
                        help='sinusoid: the logdir of the run drawn beside this one in the qualitative figure '
                             '(MAML beside the pretrained baseline; default: logs/<its name>)')
    opts = parser.parse_args(argv)
    name = opts.experiment_opt or opts.experiment
    if opts.experiment_opt and opts.experiment and opts.experiment_opt != opts.experiment:
        parser.error('two different experiments given: %s and %s' % (opts.experiment, opts.experiment_opt))
    opts.name = name
    if opts.variants and not opts.table:
        parser.error('--variants goes with --table')
    if not (opts.list or opts.table or opts.check or opts.release or name):
        parser.error('give an EXPERIMENT, --list, --table, --check CSV or --release LOGDIR')
    if name and name not in paper.BY_NAME:
        parser.error('unknown experiment %r; see --list' % name)
    if opts.metatrain_iterations is not None and opts.metatrain_iterations < 1:
        parser.error('--metatrain_iterations must be positive')
    return opts, extra


def main(argv=None):
    opts, extra = parse_args(sys.argv[1:] if argv is None else list(argv))
    try:
        if opts.list:
            return cmd_list(opts.format)
        if opts.table:
            return cmd_table(opts.format, variants=opts.variants)
        if opts.release:
            return cmd_release(opts.release)
        if opts.check:
            return cmd_check(opts.check, opts.name, opts.format, plot=opts.plot, plot_dir=opts.plot_dir)
        experiment = paper.get(opts.name)
        if opts.compare_first_order:
            return cmd_compare(experiment, opts, extra)
        return cmd_reproduce(experiment, opts, extra)
    except BrokenPipeError:  # the reader went away (python reproduce.py --table | head): nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (ReproduceError, flags.Error, OSError) as exc:  # OSError: a file unreadable or unwritable
        print('Error: %s' % exc, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print('Interrupted; the same command resumes from the last checkpoint main.py saved.', file=sys.stderr)
        return 130


if __name__ == '__main__':
    # Ctrl-C and kill -INT reach main() as KeyboardInterrupt even when a shell started this command as a
    # background job (SIGINT ignored, and inherited so by the main.py it runs), as main.py does
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main())
