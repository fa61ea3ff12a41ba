"""The figures reproduce.py writes beside a test CSV.

    curve(...)        the metric against inner steps 0..10, our 95% CI band and the
                      published figure(s): test_ubs{K}_stepsize{alpha}.png
    sine_figure(...)  the sinusoid's qualitative figure: a few test tasks, the true
                      sine, the K support points and the fits before adaptation and
                      after 1 and 10 inner steps, one column per trained model

matplotlib is an optional extra (pip install -e '.[plots]'). It is imported
only when a figure is drawn, through its object-oriented API on the Agg
canvas (no pyplot, no display, no global state): `reproduce.py --list` and
`--check` never pay its import (0.5 s on a quiet core here, 2.5 s on a busy
one: more than the rest of --check) unless asked to draw.
TensorFlow is imported only by load_sine_model and sine_fits, which run
after a test, when the model has to be loaded anyway.
"""
import os

import numpy as np

import paper

INSTALL_HINT = ("figures: not drawn, matplotlib is missing; pip install -e '.[plots]' to get them "
                "(the table is unaffected)")
SINE_STEPS = (0, 1, 10)           # the fits drawn: before adaptation, after 1 and 10 inner steps
SINE_TASKS = 3                    # test tasks 0..2: the first tasks of the test CSV
SINE_GRID = np.linspace(-5.0, 5.0, 201)  # the sinusoid's input range (data_generator.input_range)
DPI = 110


class PlotsUnavailable(Exception):
    """matplotlib cannot be imported."""


def available():
    try:
        _matplotlib()
    except PlotsUnavailable:
        return False
    return True


def _matplotlib():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise PlotsUnavailable(INSTALL_HINT) from exc
    return Figure, FigureCanvasAgg


def _figure(**options):
    """A figure on its own Agg canvas: PNGs without a display, whatever MPLBACKEND says."""
    Figure, FigureCanvasAgg = _matplotlib()
    fig = Figure(**options)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path):
    """Write atomically: an interrupted save never leaves a truncated PNG under the final name."""
    tmp = path + '.tmp.png'
    fig.savefig(tmp, dpi=DPI)
    os.replace(tmp, path)
    return path


## The metric against inner steps ------------------------------------------------------------------

def curve_path(csv_path):
    """test_ubs1_stepsize0.4.csv -> test_ubs1_stepsize0.4.png, beside it."""
    return os.path.splitext(csv_path)[0] + '.png'


def metric_label(experiment):
    return 'accuracy (%)' if experiment.metric == paper.ACCURACY else 'mean squared error'


def iterations_text(iterations, experiment):
    return '%s/%d iterations trained' % ('?' if iterations is None else iterations, experiment.iterations)


def curve(experiment, results, path, iterations=None, label=None):
    """Draw the test CSV's results (reproduce.read_test_csv's dict, CSV units) to path (curve_figure)."""
    return _save(curve_figure(experiment, results, iterations, label), path)


def curve_figure(experiment, results, iterations=None, label=None):
    """The figure of curve(), not saved (the tests read its axes).

    Two panels: all steps 0..10, and steps 1..10 on their own scale, where
    the published figures sit (beside step 0's chance level or large MSE
    their CI bars and ours would be a few pixels tall).
    """
    steps = sorted(results['means'])
    mean = np.array([results['means'][s] for s in steps]) * experiment.scale
    ci = np.array([results['ci95'][s] for s in steps]) * experiment.scale
    fig = _figure(figsize=(10.5, 4.2), layout='constrained')
    axes = fig.subplots(1, 2)
    for ax, first in zip(axes, (0, 1)):
        shown = np.array([s >= first for s in steps])
        finite = shown & np.isfinite(mean) & np.isfinite(ci)   # a diverged task makes the mean inf or NaN
        x = np.array(steps)
        low, high = np.where(finite, mean - ci, np.nan), np.where(finite, mean + ci, np.nan)
        log = _log_scale(experiment, mean[finite], high[finite])
        if log:  # an interval reaching below 0 is drawn down to the axis, not to minus infinity
            ax.set_yscale('log')
            low = np.maximum(low, mean[finite].min() / 3)
        ax.fill_between(x[shown], low[shown], high[shown], color='tab:blue', alpha=0.25, lw=0,
                        label='ours: 95% CI of the mean')
        ax.plot(x[shown], np.where(finite, mean, np.nan)[shown], 'o-', color='tab:blue', ms=4,
                label='ours: mean over the test tasks')
        _published(ax, experiment, steps[-1])
        _not_finite(ax, x[shown & ~finite])
        ax.set_xlabel('inner gradient steps at test time')
        ax.set_ylabel(metric_label(experiment) + (' (log scale)' if log else ''))
        ax.set_xticks(x[shown])
        ax.grid(alpha=0.3)
    axes[0].set_title('steps 0-%d' % steps[-1], fontsize=10)
    axes[1].set_title('steps 1-%d (zoomed)' % steps[-1], fontsize=10)
    axes[0].legend(fontsize=8, loc='best')
    fig.suptitle('%s: %s\n%s' % (label or experiment.name, iterations_text(iterations, experiment),
                                 experiment.description), fontsize=11)
    return fig


def _log_scale(experiment, mean, high):
    """An MSE spanning more than a factor 20 (e.g. a few test tasks that diverge after many
    steps) on a log axis: on a linear one everything else would be a flat line at 0."""
    if experiment.metric != paper.MSE or not mean.size or mean.min() <= 0:
        return False
    published = [f[0] for f in experiment.published if f]
    return max([high.max()] + published) / min([mean.min()] + published) > 20


def _not_finite(ax, steps):
    """Grey out the steps whose mean or CI is inf or NaN, and say so: nothing to draw there."""
    for step in steps:
        ax.axvspan(step - 0.5, step + 0.5, color='0.85', alpha=0.6, lw=0)
    if len(steps):
        ax.text(0.98, 0.5, 'mean or CI not finite\n(inf or NaN) at step%s %s' % (
                    's' if len(steps) > 1 else '', ', '.join(str(s) for s in steps)),
                transform=ax.transAxes, ha='right', va='center', fontsize=8, color='0.3')


def _published(ax, experiment, last_step):
    """The published figure(s) at their step(s), with the 95% CI where the paper gives one."""
    figures = [(s, f) for s, f in zip(experiment.steps, experiment.published) if f]
    if not figures:
        return
    with_ci = [f[1] is not None for _, f in figures]
    label = 'published: mean \u00b1 95% CI' if all(with_ci) else (
        'published (no CI given)' if not any(with_ci) else 'published (\u00b1 95% CI where given)')
    ax.errorbar([s for s, _ in figures], [f[0] for _, f in figures], yerr=[f[1] or 0 for _, f in figures],
                fmt='D', color='tab:red', ms=6, capsize=5, elinewidth=1.5, zorder=5, label=label)
    for step, (value, ci) in figures:
        text = 'paper %g' % value + ('' if ci is None else ' \u00b1 %g' % ci)
        left = step >= last_step - 1  # near the right edge the label goes left of its marker, inside the axes
        ax.annotate(text, (step, value), textcoords='offset points', xytext=(-7 if left else 7, 5),
                    ha='right' if left else 'left', color='tab:red', fontsize=8)


## The sinusoid's qualitative figure -----------------------------------------------------------------

def sine_tasks(seed, k, count=SINE_TASKS):
    """Test tasks 0..count-1 as main.py's test draws them (the same streams): the first tasks of the CSV.

    Each is (amplitude, phase, support x [K], support y [K]).
    """
    from data_generator import DataGenerator
    generator = DataGenerator(2 * k, 1, datasource='sinusoid', test_set=True, seed=seed)
    tasks = []
    for index in range(count):
        inputs, outputs, amp, phase = generator.generate(train=False, index=index)
        tasks.append((float(amp[0]), float(phase[0]), inputs[0, :k, 0], outputs[0, :k, 0]))
    return tasks


def load_sine_model(values, exp_dir):
    """(model, iterations trained) of the latest checkpoint in exp_dir, or None when there is none.

    values: main.py's flag values of the run (reproduce.main_flag_values);
    the model is built as main.build builds it for testing, and loaded by
    main.Checkpoints, so ours and the reference's TF1 checkpoints both work.
    """
    if not os.path.isdir(exp_dir):
        return None
    import main
    main.choose_cpu_kernels('sinusoid', train=False)  # as main.py's test: before TensorFlow's first import
    import utils  # noqa: F401  (before TensorFlow; it also quiets TensorFlow's start-up lines)
    import tensorflow as tf
    from maml import MAML, ModelConfig
    dim_input = 3 if values.baseline == 'oracle' else 1
    model = MAML(dim_input, 1, test_num_updates=main.TEST_NUM_UPDATES, config=ModelConfig.from_flags(values),
                 dtype=tf.float32, seed=values.seed)
    checkpoints = main.Checkpoints(model, exp_dir)
    path = checkpoints.path_for(-1)
    if path is None:
        return None
    return model, checkpoints.restore(path, optimizer_state=False) + 1


def sine_inputs(x, amp, phase, oracle):
    """The network's input for points x of one task: [1, len(x), 1], or with amplitude and phase for the oracle."""
    x = np.asarray(x, np.float32).reshape(1, -1, 1)
    if not oracle:
        return x
    task = np.broadcast_to(np.array([amp, phase], np.float32), x.shape[:2] + (2,))
    return np.concatenate([x, task], -1)


def sine_fits(model, task, grid=SINE_GRID, steps=SINE_STEPS):
    """{step: predictions on grid} after that many inner steps on the task's support set.

    The steps are MAML.inner_update's, with the model's update_lr (the
    experiment's test step size), the same steps MAML.evaluate takes for the
    test CSV; a test checks that the two agree.
    """
    import tensorflow as tf
    amp, phase, x, y = task
    oracle = model.dim_input == 3
    inputa = tf.constant(sine_inputs(x, amp, phase, oracle))
    labela = tf.constant(np.asarray(y, np.float32).reshape(1, -1, 1))
    points = tf.constant(sine_inputs(grid, amp, phase, oracle))
    weights = model.tile_weights(model.weights, 1)
    fits = {}
    for step in range(max(steps) + 1):
        if step in steps:
            fits[step] = model.forward(points, weights, differentiated_twice=False).numpy()[0, :, 0]
        if step < max(steps):
            weights, _, _ = model.inner_update(weights, inputa, labela, stop_grad=True, recorded=False)
    return fits


def sine_figure(columns, tasks, path, grid=SINE_GRID, steps=SINE_STEPS):
    """One row per task, one column per model: columns = [(title, [fits of task 0, 1, ...])].

    Each panel: the true sine, the K support points, and the fits after each
    of `steps` inner steps (dotted before adaptation, dashed after 1, solid
    after 10). The panels of a row share their y scale, so the models compare.
    """
    fig = _figure(figsize=(4.6 * len(columns) + 0.6, 2.5 * len(tasks) + 1.2), layout='constrained')
    axes = np.array(fig.subplots(len(tasks), len(columns), sharex=True, squeeze=False))
    styles = {0: dict(color='tab:gray', ls=':', lw=1.6), 1: dict(color='tab:orange', ls='--', lw=1.6)}
    for row, (amp, phase, x, y) in enumerate(tasks):
        truth = amp * np.sin(grid - phase)
        ylim = _sine_ylim(truth, y, [fits[row] for _, fits in columns])
        for col, (title, fits) in enumerate(columns):
            ax = axes[row, col]
            ax.plot(grid, truth, color='black', lw=2.2, alpha=0.8, label='true function')
            for step in steps:
                style = styles.get(step, dict(color='tab:green', ls='-', lw=1.8))
                ax.plot(grid, fits[row][step], label=_step_label(step), **style)
            ax.plot(x, y, '^', color='tab:purple', ms=8, mec='white', zorder=5, label='%d support points' % len(x))
            ax.set_ylim(*ylim)
            ax.grid(alpha=0.3)
            if row == 0:
                ax.set_title(title, fontsize=10)
            if col == 0:
                ax.set_ylabel('test task %d\nA=%.2f, phase=%.2f' % (row, amp, phase), fontsize=9)
            if row == len(tasks) - 1:
                ax.set_xlabel('x')
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc='outside lower center', ncol=len(labels) if len(columns) > 1 else 3,
               fontsize=8)
    fig.suptitle('Sinusoid regression, K=%d: test tasks 0-%d of the test CSV' % (len(tasks[0][2]), len(tasks) - 1),
                 fontsize=11)
    return _save(fig, path)


def _step_label(step):
    return 'before adaptation' if step == 0 else 'after %d step%s' % (step, '' if step == 1 else 's')


def _sine_ylim(truth, y, fits):
    """Room for the truth, the points and every fit of the row; a fit far off (more than twice
    the truth's range beyond it) is cut, so that it does not flatten the true sine to a line."""
    low, high = min(truth.min(), y.min()), max(truth.max(), y.max())
    span = max(high - low, 1.0)
    values = np.concatenate([f for column in fits for f in column.values()])
    lowest, highest = max(min(low, values.min()), low - 2 * span), min(max(high, values.max()), high + 2 * span)
    margin = 0.08 * (highest - lowest)
    return lowest - margin, highest + margin
