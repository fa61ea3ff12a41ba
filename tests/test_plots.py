"""plots.py and the figures reproduce.py writes: the curve PNG, the install hint, the sinusoid's fits."""
import io
import os
import subprocess
import sys
import types

import numpy as np
import pytest

import paper
import plots
import reproduce
from conftest import REPO
from test_reproduce import COLUMNS, omniglot_csv, table_rows, write_test_csv

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
PUBLISHED_RED = (0xd6, 0x27, 0x28)  # matplotlib's tab:red, the published figures' markers


def read_png(path):
    """The picture as an RGB array, after checking that the file is a PNG that PIL reads."""
    from PIL import Image
    with open(path, 'rb') as f:
        assert f.read(8) == PNG_SIGNATURE
    assert os.path.getsize(path) > 1000
    with Image.open(path) as im:
        assert im.format == 'PNG'
        return np.asarray(im.convert('RGB'))


def has_color(image, rgb):
    return bool(np.all(image == np.array(rgb, np.uint8), axis=-1).any())


## The curve -------------------------------------------------------------------------------------

def test_check_plot_writes_the_curve_beside_the_csv(tmp_path):
    pytest.importorskip('matplotlib')
    path = omniglot_csv(tmp_path, 0.975, 0.004)
    png = path[:-len('.csv')] + '.png'
    out = io.StringIO()
    assert reproduce.cmd_check(path, None, 'text', out=out) == 1
    assert not os.path.exists(png)          # --check alone stays fast: no matplotlib, no picture
    out = io.StringIO()
    assert reproduce.cmd_check(path, None, 'text', out=out, plot=True) == 1   # the verdict's status
    assert 'figure: %s' % png in out.getvalue()
    assert dict(zip(COLUMNS, table_rows(out.getvalue())[0]))['verdict'] == 'below'
    image = read_png(png)
    assert image.shape[1] > image.shape[0] > 300
    assert has_color(image, PUBLISHED_RED)  # the published 98.7 +- 0.4 is marked


def test_a_curve_without_published_figures_marks_none(tmp_path):
    pytest.importorskip('matplotlib')
    experiment = paper.get('sinusoid-10shot')   # "plotted only": no published figure
    path = write_test_csv(str(tmp_path / 'x' / 'test_ubs10_stepsize0.01.csv'),
                          np.linspace(3.0, 0.5, 11), [0.1] * 11)
    image = read_png(plots.curve(experiment, reproduce.read_test_csv(path), plots.curve_path(path), 1001))
    assert not has_color(image, PUBLISHED_RED)


def test_a_diverged_mse_is_drawn_on_a_log_axis_and_its_non_finite_steps_said(tmp_path):
    """Seen on real runs: a few of 600 test tasks diverge after many inner steps (MSE 1e4 or NaN)."""
    pytest.importorskip('matplotlib')
    experiment = paper.get('sinusoid-5shot-train5')
    means = [3.0, 0.7, 0.6, 0.6, 1e4, 1e5, 1e6, float('nan'), float('inf'), float('nan'), float('nan')]
    path = write_test_csv(str(tmp_path / 'x' / 'test_ubs5_stepsize0.01.csv'), means, [0.1] * 7 + [float('nan')] * 4)
    fig = plots.curve_figure(experiment, reproduce.read_test_csv(path), 70000)
    for ax in fig.axes:
        assert ax.get_yscale() == 'log'
        said = [t.get_text() for t in ax.texts if 'not finite' in t.get_text()]
        assert said == ['mean or CI not finite\n(inf or NaN) at steps 7, 8, 9, 10']
        assert len(ax.patches) == 4   # the four greyed-out steps
    # the same curve without the divergence: a linear axis, nothing said, nothing greyed out
    path = write_test_csv(str(tmp_path / 'y' / 'test_ubs5_stepsize0.01.csv'), [3.0, 0.7] + [0.5] * 9, [0.1] * 11)
    for ax in plots.curve_figure(experiment, reproduce.read_test_csv(path), 70000).axes:
        assert ax.get_yscale() == 'linear'
        assert not [t for t in ax.texts if 'not finite' in t.get_text()] and not ax.patches
    # and the PNG is drawn, with the published figures
    png = plots.curve(experiment, reproduce.read_test_csv(path), plots.curve_path(path), 70000)
    assert has_color(read_png(png), PUBLISHED_RED)


def test_figures_of_a_released_model_stay_out_of_models(tmp_path, monkeypatch):
    """models/ is tracked: --check --plot of a released CSV writes to logs/figures/, or to --plot_dir."""
    pytest.importorskip('matplotlib')
    models = tmp_path / 'repo' / 'models'
    monkeypatch.setattr(reproduce, 'MODELS', str(models))
    monkeypatch.chdir(tmp_path)
    path = omniglot_csv(models, 0.995, 0.002)
    exp_dir = os.path.dirname(path)
    before = sorted(os.listdir(exp_dir))
    out = io.StringIO()
    assert reproduce.cmd_check(path, None, 'text', out=out, plot=True) == 0
    png = os.path.join('logs', 'figures', 'omniglot-5way-1shot', os.path.basename(exp_dir), 'test_ubs1_stepsize0.4.png')
    assert 'figure: %s' % png in out.getvalue().splitlines()
    read_png(str(tmp_path / png))
    assert sorted(os.listdir(exp_dir)) == before           # nothing written into models/
    out = io.StringIO()
    assert reproduce.cmd_check(path, None, 'text', out=out, plot=True, plot_dir=str(tmp_path / 'mine')) == 0
    png = tmp_path / 'mine' / 'omniglot-5way-1shot' / os.path.basename(exp_dir) / 'test_ubs1_stepsize0.4.png'
    assert 'figure: %s' % png in out.getvalue().splitlines()
    read_png(str(png))
    assert sorted(os.listdir(exp_dir)) == before


def test_plot_dir_from_the_command_line(tmp_path):
    """--plot_dir D also moves the figure of a CSV outside models/."""
    pytest.importorskip('matplotlib')
    path = omniglot_csv(tmp_path / 'logs', 0.975, 0.004)
    proc = subprocess.run([sys.executable, str(REPO / 'reproduce.py'), '--check', path, '--plot',
                           '--plot_dir', str(tmp_path / 'figs')], capture_output=True, text=True, cwd=str(tmp_path),
                          timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    png = tmp_path / 'figs' / 'omniglot-5way-1shot' / os.path.basename(os.path.dirname(path)) / 'test_ubs1_stepsize0.4.png'
    assert 'figure: %s' % png in proc.stdout
    read_png(str(png))
    assert not os.path.exists(path[:-len('.csv')] + '.png')


CHECK_WITHOUT_MATPLOTLIB = """
import sys
sys.modules['matplotlib'] = None   # as if matplotlib were not installed: its import fails
sys.path.insert(0, sys.argv[1])
import reproduce
sys.exit(reproduce.main(sys.argv[2:]))
"""


@pytest.mark.parametrize('accuracy, status', [(0.995, 0), (0.975, 1)])
def test_check_plot_without_matplotlib_keeps_the_verdict_and_says_how(tmp_path, accuracy, status):
    path = omniglot_csv(tmp_path, accuracy, 0.002)
    proc = subprocess.run([sys.executable, '-c', CHECK_WITHOUT_MATPLOTLIB, str(REPO), '--check', path, '--plot'],
                          capture_output=True, text=True, cwd=str(tmp_path), timeout=300)
    assert proc.returncode == status, proc.stdout + proc.stderr
    assert len(table_rows(proc.stdout)) == 1
    hint = [line for line in proc.stdout.splitlines() if "pip install -e '.[plots]'" in line]
    assert hint == [plots.INSTALL_HINT]
    assert 'table is unaffected' in hint[0]
    assert not os.path.exists(path[:-len('.csv')] + '.png')
    assert proc.stderr == ''


FIGURES_WITHOUT_MATPLOTLIB = """
import io, sys, types
sys.modules['matplotlib'] = None
sys.path.insert(0, sys.argv[1])
import paper, reproduce
experiment = paper.get('sinusoid-5shot-train5')
opts = types.SimpleNamespace(partner_logdir=None, data_dir=None)
flags = reproduce.experiment_flags(experiment, sys.argv[2])
reproduce.write_figures(experiment, flags, sys.argv[3], 1001, opts, [], sys.stdout)
assert 'tensorflow' not in sys.modules   # no model is loaded for a figure that cannot be drawn
"""


def test_a_run_without_matplotlib_prints_the_hint_once(tmp_path):
    """After a test (reproduce.py EXPERIMENT), without matplotlib: one line, no figure, no model loaded."""
    path = write_test_csv(str(tmp_path / 'logs' / 'e' / 'test_ubs5_stepsize0.01.csv'), [3.0] * 11, [0.1] * 11)
    proc = subprocess.run([sys.executable, '-c', FIGURES_WITHOUT_MATPLOTLIB, str(REPO), str(tmp_path / 'logs'),
                           path], capture_output=True, text=True, cwd=str(tmp_path), timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines() == [plots.INSTALL_HINT]
    assert os.listdir(os.path.dirname(path)) == ['test_ubs5_stepsize0.01.csv']


## The sinusoid's qualitative figure ------------------------------------------------------------------------

def train_tiny(experiment, logdir, iterations=3, seed=0):
    """A sinusoid model of the experiment's flags trained for a few iterations and saved where
    main.py saves it; returns (main.py flags, model). In-process: no main.py start-up, a few seconds."""
    import main
    from data_generator import DataGenerator
    flags = reproduce.experiment_flags(experiment, str(logdir), extra=['--seed=%d' % seed])
    values = reproduce.main_flag_values(flags)
    import utils  # noqa: F401  (before TensorFlow, as main.py)
    import tensorflow as tf
    from maml import MAML, ModelConfig
    model = MAML(1, 1, test_num_updates=5, config=ModelConfig.from_flags(values), dtype=tf.float32, seed=seed)
    generator = DataGenerator(2 * values.update_batch_size, values.meta_batch_size, seed=seed)
    pretrain = values.metatrain_iterations == 0
    for itr in range(iterations):
        batch = generator.make_batch(train=True, index=itr, update_batch_size=values.update_batch_size)
        model.pretrain_step(batch) if pretrain else model.metatrain_step(batch)
    exp_dir = os.path.join(str(logdir), reproduce.exp_dir_name(flags))
    main.Checkpoints(model, exp_dir).save(iterations - 1)
    return flags, model


def test_sine_fits_are_the_steps_evaluate_takes(tmp_path):
    """The fits drawn after 1 and 10 steps are the model's own adaptation: their MSE on the query
    points is the test CSV's update1 and update10 (MAML.evaluate), step 0 its pre-update loss."""
    experiment = paper.get('sinusoid-5shot-train5')
    flags, model = train_tiny(experiment, tmp_path / 'logs', iterations=3)
    values = reproduce.main_flag_values(flags)
    loaded, iterations = plots.load_sine_model(values, os.path.join(values.logdir, reproduce.exp_dir_name(flags)))
    assert iterations == 3
    for name, var in model.named_variables().items():
        np.testing.assert_array_equal(loaded.named_variables()[name].numpy(), var.numpy())
    from data_generator import DataGenerator
    generator = DataGenerator(10, 1, test_set=True, seed=0)
    for index, (amp, phase, x, y) in enumerate(plots.sine_tasks(0, 5)):
        inputa, inputb, labela, labelb = generator.make_batch(train=False, index=index, update_batch_size=5)
        np.testing.assert_array_equal(inputa[0, :, 0], x)   # the CSV's first test tasks
        out = loaded.evaluate((inputa, inputb, labela, labelb), 10)
        query = plots.sine_fits(loaded, (amp, phase, x, y), grid=inputb[0, :, 0])
        support = plots.sine_fits(loaded, (amp, phase, x, y), grid=x)
        mse = lambda fit, label: float(np.mean((fit - label[0, :, 0]) ** 2))
        np.testing.assert_allclose(mse(support[0], labela), float(out['total_loss1']), rtol=1e-5)
        np.testing.assert_allclose(mse(query[1], labelb), float(out['total_losses2'][0]), rtol=1e-5)
        np.testing.assert_allclose(mse(query[10], labelb), float(out['total_losses2'][9]), rtol=1e-5)
        assert not np.allclose(query[1], query[10])   # the steps do change the fit


def test_qualitative_figure_side_by_side_when_both_are_trained(tmp_path):
    pytest.importorskip('matplotlib')
    maml, pretrained = paper.get('sinusoid-5shot-train5'), paper.get('sinusoid-5shot-pretrained-train5')
    flags, _ = train_tiny(maml, tmp_path / 'maml', iterations=3)
    csv_path = write_test_csv(reproduce.test_csv_path(flags + reproduce.TEST_FLAGS), [3.0] * 11, [0.1] * 11)
    opts = types.SimpleNamespace(partner_logdir=str(tmp_path / 'pretrained'), data_dir=None)
    png = csv_path[:-len('.csv')] + '_qualitative.png'

    out = io.StringIO()   # the pretrained baseline not trained yet: MAML alone, and a note says why
    assert reproduce.write_sine_figure(maml, flags, csv_path, opts, [], out) == png
    note = 'not beside sinusoid-5shot-pretrained-train5: no trained model it can load in %s' % (tmp_path / 'pretrained')
    assert note in out.getvalue()
    alone = read_png(png)

    train_tiny(pretrained, tmp_path / 'pretrained', iterations=2)
    out = io.StringIO()
    assert reproduce.write_sine_figure(maml, flags, csv_path, opts, [], out) == png
    assert out.getvalue() == 'figure: %s\n' % png
    both = read_png(png)
    assert both.shape[0] == alone.shape[0]                      # the same rows: 3 test tasks
    assert both.shape[1] > 1.7 * alone.shape[1]                 # two columns: MAML and pretrained

    runs = reproduce.sine_runs(pretrained, reproduce.experiment_flags(pretrained, 'x'), opts, [])
    assert [e.name for e, _ in runs] == ['sinusoid-5shot-train5', 'sinusoid-5shot-pretrained-train5']  # MAML on the left


def test_qualitative_figure_failure_leaves_the_verdict_alone(tmp_path, capsys):
    """A sinusoid run whose checkpoint is gone: the curve is drawn, the qualitative figure is reported missing."""
    pytest.importorskip('matplotlib')
    experiment = paper.get('sinusoid-5shot-train5')
    flags = reproduce.experiment_flags(experiment, str(tmp_path / 'logs'))
    csv_path = write_test_csv(reproduce.test_csv_path(flags + reproduce.TEST_FLAGS), [3.0] * 11, [0.1] * 11)
    opts = types.SimpleNamespace(partner_logdir=str(tmp_path / 'none'), data_dir=None)
    out = io.StringIO()
    reproduce.write_figures(experiment, flags, csv_path, 1001, opts, [], out)
    assert out.getvalue() == 'figure: %s\n' % plots.curve_path(csv_path)
    assert 'no qualitative figure (ReproduceError: no trained model in' in capsys.readouterr().err
