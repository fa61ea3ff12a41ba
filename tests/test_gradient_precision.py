"""tools/gradient_precision.py: it compares float32 and float64 meta-gradients of the same weights on the
same meta-batch, names the worst tensor that is not rounding noise, and for a second-order run
measures the angle to the first-order gradient; end to end on a short run of the paper's flags."""
import re
import subprocess
import sys

import numpy as np
import pytest

import gradient_precision
import paper
import reproduce
from conftest import REPO
from runner import describe, run_main, user_env
from synthetic import make_omniglot


def small_model(dtype, stop_grad=False):
    import tensorflow as tf
    from maml import MAML, ModelConfig
    config = ModelConfig(datasource='omniglot', num_classes=3, update_batch_size=1, update_lr=0.4,
                         num_updates=2, num_filters=4, stop_grad=stop_grad)
    return MAML(28 * 28, 3, test_num_updates=2, config=config, dtype=getattr(tf, dtype), seed=0)


def small_batches(count):
    rng = np.random.default_rng(5)
    batches = []
    for _ in range(count):
        images = rng.random((2, 6, 28 * 28)).astype(np.float32)
        labels = np.eye(3, dtype=np.float32)[np.tile([0, 1, 2], (2, 2))]
        batches.append((images[:, :3], images[:, 3:], labels[:, :3], labels[:, 3:]))
    return batches


def test_relative_error_names_the_worst_tensor_that_is_not_rounding_noise():
    exact = {'w': np.array([3.0, 4.0]), 'b': np.array([1e-9])}  # b: a gradient that is zero up to rounding
    approx = {'w': np.array([3.0, 4.5]), 'b': np.array([1e-3])}
    total, worst = gradient_precision.relative_error(approx, exact)
    assert worst == ('w', pytest.approx(0.1))
    assert total == pytest.approx(np.hypot(0.5, 1e-3) / 5.0)
    assert gradient_precision.cosine(exact, exact) == pytest.approx(1.0)


def test_a_float64_model_against_its_float64_copy_differs_by_nothing():
    """Both sides the same weights and meta-batch: anything else (another batch, weights not copied)
    would show here."""
    rows, _ = gradient_precision.measure(small_model('float64'), small_batches(2))
    for row in rows:
        assert row['error'] == 0.0 and row['worst'][1] == 0.0
        assert row['cosine'] == pytest.approx(1.0, abs=1e-12)


def test_float32_against_float64_and_second_against_first_order():
    import tensorflow as tf
    model = small_model('float32')
    batches = small_batches(2)
    rows, exact = gradient_precision.measure(model, batches)
    for row, batch, grads in zip(rows, batches, exact):
        assert 0 < row['error'] < 1e-3 and row['cosine'] > 0.999999
        # the first-order column: the cosine with --stop_grad's gradient of the same weights in float64
        same_weights = small_model('float64', stop_grad=True)
        same_weights.assign({name: v.numpy() for name, v in model.named_variables().items()})
        first_order, loss = gradient_precision.meta_gradient(same_weights, batch)
        expected = gradient_precision.cosine(first_order, grads)
        assert row['first_order_cosine'] == pytest.approx(expected, abs=1e-12)
        assert row['first_order_cosine'] < 0.9999  # the second-order terms are there
        assert row['loss'] == pytest.approx(loss, rel=1e-12)
        assert row['norm'] == pytest.approx(np.linalg.norm(gradient_precision.flat(grads)))
    assert model.dtype == tf.float32
    assert 'first_order_cosine' not in gradient_precision.measure(small_model('float32', True), batches[:1])[0][0]


ROW = re.compile(r'^\s+(\d+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)$', re.M)


def test_on_a_short_run_of_the_paper_flags(tmp_path):
    experiment = paper.get('omniglot-5way-1shot')
    data = make_omniglot(str(tmp_path / 'data'), alphabets=31, characters=40, drawings=10)
    logdir = str(tmp_path / 'logs')
    proc = run_main(*reproduce.experiment_flags(experiment, logdir, iterations=3, data_dir=data), cwd=tmp_path)
    assert proc.returncode == 0, describe(proc)
    proc = subprocess.run([sys.executable, str(REPO / 'tools' / 'gradient_precision.py'), experiment.name,
                           '--logdir', logdir, '--data_dir', data, '--batches', '2'],
                          env=user_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, describe(proc)
    out = proc.stdout
    assert 'omniglot-5way-1shot (second order), our checkpoint of iteration 2' in out, out
    assert '2 meta-batch(es) of 32 training tasks from iteration 3 of the training stream' in out, out
    rows = ROW.findall(out)
    assert [int(r[0]) for r in rows] == [0, 1], out
    for _, _, norm, cos, error, _, _, fo_cos in rows:
        assert float(norm) > 0 and float(cos) > 0.9999 and float(error) < 1e-2, out
        assert -1 <= float(fo_cos) < 0.99999, out
    assert re.search(r'float64 gradients of meta-batches 0 and 1: cosine -?[01]\.\d{4}$', out, re.M), out


def test_an_evaluation_only_cell_is_refused_with_the_model_to_give():
    proc = subprocess.run([sys.executable, str(REPO / 'tools' / 'gradient_precision.py'), 'omniglot-20way-5shot'],
                          env=user_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, describe(proc)
    assert "omniglot-20way-5shot trains no model of its own: it evaluates omniglot-20way-1shot's" in proc.stderr
    assert 'Traceback' not in proc.stderr
