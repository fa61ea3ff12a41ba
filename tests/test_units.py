"""What the golden fixtures do not pin down: names, file formats, statistics,
checkpoints, the oracle input and the layout of a task."""
import csv
import os
import pickle
import types
import zipfile

import numpy as np
import pytest

import data_generator
import main
from conftest import SHARED
from data_generator import DataGenerator, omniglot_split, sample_task
from synthetic import make_omniglot
from utils import confidence_summary

load_class_images_unpatched = data_generator.load_class_images


def flags(**kw):
    """The reference's defaults, overridden by kw, with -1 resolved as main() does."""
    base = dict(datasource='sinusoid', num_classes=5, baseline=None, meta_batch_size=25,
                update_batch_size=5, update_lr=1e-3, num_updates=1, norm='batch_norm',
                num_filters=64, max_pool=False, stop_grad=False)
    base.update(kw)
    base.setdefault('train_update_batch_size', base['update_batch_size'])
    base.setdefault('train_update_lr', base['update_lr'])
    return types.SimpleNamespace(**base)


@pytest.mark.parametrize('kw, expected', [
    # the README's command lines (SPEC: exp_string)
    (dict(update_batch_size=10, norm='None'), 'cls_5.mbs_25.ubs_10.numstep1.updatelr0.001nonorm'),
    (dict(update_batch_size=10, norm='None', baseline='oracle'),
     'cls_5.mbs_25.ubs_10.numstep1.updatelr0.001oraclenonorm'),
    (dict(datasource='omniglot', meta_batch_size=32, update_batch_size=1, update_lr=0.4),
     'cls_5.mbs_32.ubs_1.numstep1.updatelr0.4batchnorm'),
    (dict(datasource='omniglot', num_classes=20, meta_batch_size=16, update_batch_size=5,
          update_lr=0.1, num_updates=5), 'cls_20.mbs_16.ubs_5.numstep5.updatelr0.1batchnorm'),
    (dict(datasource='omniglot', meta_batch_size=32, update_batch_size=1, update_lr=0.4,
          stop_grad=True), 'cls_5.mbs_32.ubs_1.numstep1.updatelr0.4stopgradbatchnorm'),
    (dict(datasource='miniimagenet', meta_batch_size=4, update_batch_size=1, update_lr=0.01,
          num_updates=5, num_filters=32, max_pool=True),
     'cls_5.mbs_4.ubs_1.numstep5.updatelr0.01hidden32maxpoolbatchnorm'),
    (dict(norm='layer_norm'), 'cls_5.mbs_25.ubs_5.numstep1.updatelr0.001layernorm'),
    # testing with another K finds the training run through train_update_batch_size
    (dict(update_batch_size=5, train_update_batch_size=10, train_update_lr=0.01),
     'cls_5.mbs_25.ubs_10.numstep1.updatelr0.01batchnorm'),
])
def test_exp_string(kw, expected):
    assert main.experiment_name(flags(**kw)) == expected


def test_confidence_summary_arithmetic():
    results = np.tile([[0.0, 2.0], [1.0, 4.0]], (300, 1))  # 600 tasks
    means, stds, ci95 = confidence_summary(results)
    np.testing.assert_allclose(means, [0.5, 3.0])
    np.testing.assert_allclose(stds, [0.5, 1.0])  # ddof 0
    np.testing.assert_allclose(ci95, 1.96 * np.array([0.5, 1.0]) / np.sqrt(600))


def test_results_files_have_the_reference_format(tmp_path):
    results = np.random.default_rng(0).random((600, 11))
    means, stds, ci95 = confidence_summary(results)
    base = str(tmp_path / 'test_ubs1_stepsize0.4')
    main.write_results(base, results, means, stds, ci95)
    with open(base + '.csv') as f:
        rows = list(csv.reader(f))
    assert rows[0] == ['update%d' % i for i in range(11)]
    assert len(rows) == 4
    np.testing.assert_allclose(np.array(rows[1:], float), [means, stds, ci95], rtol=1e-12)
    with open(base + '.pkl', 'rb') as f:
        saved = pickle.load(f)
    assert list(saved) == ['mses']
    np.testing.assert_array_equal(saved['mses'], results)


## Checkpoints ------------------------------------------------------------------------------------

def sinusoid_model():
    import tensorflow as tf
    from maml import MAML, ModelConfig
    config = ModelConfig(datasource='sinusoid', norm='None', update_batch_size=5)
    return MAML(1, 1, test_num_updates=1, config=config, dtype=tf.float32, seed=0)


def sinusoid_batch(index):
    gen = DataGenerator(10, 4, 'sinusoid')
    return gen.make_batch(train=True, index=index, update_batch_size=5)


def weights_of(model):
    return {k: v.numpy().copy() for k, v in model.named_variables().items()}


def test_resume_restores_weights_and_adam_state(tmp_path):
    model = sinusoid_model()
    for i in range(3):
        model.metatrain_step(sinusoid_batch(i))
    ckpt = main.Checkpoints(model, str(tmp_path))
    ckpt.save(2)
    model.metatrain_step(sinusoid_batch(3))
    expected = weights_of(model)

    resumed = sinusoid_model()  # fresh weights and a fresh Adam
    ckpt2 = main.Checkpoints(resumed, str(tmp_path))
    assert ckpt2.restore(ckpt2.path_for(-1)) == 2
    opt, opt2 = model.metatrain_optimizer, resumed.metatrain_optimizer
    assert int(opt2.iterations.numpy()) == 3
    resumed.metatrain_step(sinusoid_batch(3))
    for name, value in weights_of(resumed).items():
        np.testing.assert_array_equal(value, expected[name], err_msg=name)
    for m, m2 in zip(opt.m, opt2.m):  # the moments carried over, not restarted
        np.testing.assert_array_equal(m.numpy(), m2.numpy())


def test_test_iter_picks_that_checkpoint(tmp_path):
    model = sinusoid_model()
    ckpt = main.Checkpoints(model, str(tmp_path))
    saved = {}
    for itr in (1000, 2000, 3000):
        model.metatrain_step(sinusoid_batch(itr))
        ckpt.save(itr)
        saved[itr] = weights_of(model)
    other = sinusoid_model()
    ckpt2 = main.Checkpoints(other, str(tmp_path))
    assert ckpt2.path_for(1500) is None
    assert ckpt2.restore(ckpt2.path_for(2000)) == 2000
    for name, value in weights_of(other).items():
        np.testing.assert_array_equal(value, saved[2000][name])
    assert ckpt2.restore(ckpt2.path_for(-1)) == 3000
    for name, value in weights_of(other).items():
        np.testing.assert_array_equal(value, saved[3000][name])


def test_a_crash_during_save_leaves_the_previous_checkpoint_latest(tmp_path):
    model = sinusoid_model()
    ckpt = main.Checkpoints(model, str(tmp_path))
    ckpt.save(1000)
    good = weights_of(model)
    model.metatrain_step(sinusoid_batch(1))

    def crash(prefix, options=None):  # half-written files, then the process "dies"
        for suffix in ('.index', '.data-00000-of-00001'):
            with open(prefix + suffix, 'wb') as f:
                f.write(b'\x00garbage')
        raise KeyboardInterrupt('power cut')
    ckpt.checkpoint._write = crash
    with pytest.raises(KeyboardInterrupt):
        ckpt.save(2000)
    assert os.path.exists(str(tmp_path / 'model-2000.index'))

    other = sinusoid_model()
    ckpt2 = main.Checkpoints(other, str(tmp_path))
    path = ckpt2.path_for(-1)
    assert path.endswith('model-1000')
    assert ckpt2.restore(path) == 1000
    for name, value in weights_of(other).items():
        np.testing.assert_array_equal(value, good[name])


## Data: oracle input, task layout, rotations, split --------------------------------------------------

def test_oracle_input_is_x_amplitude_phase():
    gen = DataGenerator(20, 7, 'sinusoid', baseline='oracle')
    assert gen.dim_input == 3
    inputa, inputb, labela, labelb = gen.make_batch(train=True, index=0, update_batch_size=10)
    assert inputa.shape == (7, 10, 3) and inputb.shape == (7, 10, 3) and labela.shape == (7, 10, 1)
    x, amp, phase = inputa[..., 0], inputa[..., 1], inputa[..., 2]
    assert np.all(amp == amp[:, :1]) and np.all(phase == phase[:, :1])  # one task, one (A, phase)
    assert np.all((amp >= 0.1) & (amp <= 5.0)) and np.all((phase >= 0) & (phase <= np.pi))
    np.testing.assert_allclose(labela[..., 0], amp * np.sin(x - phase), atol=1e-5)


def marked_classes(num_classes, per_class):
    """Images whose class and drawing are readable, with an asymmetric mark that shows rotation."""
    images = np.zeros((num_classes, per_class, 4, 4), np.uint8)
    for c in range(num_classes):
        for i in range(per_class):
            images[c, i, 0, 0] = 1 + c         # top left corner: class
            images[c, i, 0, 1] = 100 + i       # its right neighbour: drawing
    return images


def decode(image):
    """(class, drawing, quarter turns) of a marked image."""
    for turns in range(4):
        upright = np.rot90(image, -turns)
        if upright[0, 0] and upright[0, 1] >= 100:
            return int(upright[0, 0]) - 1, int(upright[0, 1]) - 100, turns
    raise AssertionError('mark not found')


def test_task_layout_and_rotations():
    images = marked_classes(30, 20)
    turns_seen = set()
    for index in range(20):
        rng = np.random.default_rng(index)
        task, labels = sample_task(rng, images, num_classes=5, num_samples_per_class=4, rotate=True)
        assert task.shape == (20, 4, 4)
        decoded = [decode(im) for im in task]
        # sample k holds one image of every class: labels come in blocks of N, each a permutation
        for k in range(4):
            assert sorted(labels[5 * k:5 * k + 5]) == list(range(5))
        for label in range(5):
            mine = [decoded[j] for j in range(20) if labels[j] == label]
            assert len({c for c, _, _ in mine}) == 1            # one class per label
            assert len({t for _, _, t in mine}) == 1            # one rotation per class
            assert len({d for _, d, _ in mine}) == 4            # distinct drawings
            turns_seen.add(mine[0][2])
        assert len({decoded[j][0] for j in range(20)}) == 5     # five distinct classes
    assert turns_seen == {0, 1, 2, 3}


def test_no_rotation_without_rotate():
    images = marked_classes(10, 5)
    task, _ = sample_task(np.random.default_rng(0), images, 5, 2, rotate=False)
    assert all(decode(im)[2] == 0 for im in task)


def test_same_seed_same_tasks_and_support_query_split():
    a = DataGenerator(10, 4, 'sinusoid', seed=3).make_batch(True, 17, 5)
    b = DataGenerator(10, 4, 'sinusoid', seed=3).make_batch(True, 17, 5)
    c = DataGenerator(10, 4, 'sinusoid', seed=3).make_batch(True, 18, 5)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])
    assert a[0].shape == (4, 5, 1) and a[1].shape == (4, 5, 1)


def omniglot_character_folders():
    """alphabet/character folders of both Omniglot archives, read from the zip listings."""
    folders = set()
    for name in ('images_background.zip', 'images_evaluation.zip'):
        with zipfile.ZipFile(SHARED / 'data' / 'omniglot' / name) as zf:
            for entry in zf.namelist():
                parts = entry.split('/')
                if len(parts) == 4 and parts[3].endswith('.png'):
                    folders.add('data/omniglot_resized/%s/%s' % (parts[1], parts[2]))
    return list(folders)


@pytest.mark.skipif(not (SHARED / 'data' / 'omniglot' / 'images_background.zip').exists(),
                    reason='the Omniglot archives in ../shared/data are absent')
def test_omniglot_split_is_pinned():
    folders = omniglot_character_folders()
    assert len(folders) == 1623
    split = omniglot_split(folders[::-1])  # the listing order must not matter
    assert {k: len(v) for k, v in split.items()} == {'train': 1100, 'val': 100, 'test': 423}
    pins = {k: (v[0].split('/', 2)[2], v[-1].split('/', 2)[2]) for k, v in split.items()}
    assert pins == {'train': ('Gurmukhi/character23', 'Kannada/character25'),
                    'val': ('Tifinagh/character11', 'Atemayar_Qelisayer/character10'),
                    'test': ('Keble/character04', 'Avesta/character22')}


@pytest.mark.parametrize('strides', [1, 2])
def test_grouped_convolution_equals_one_convolution_per_task(strides):
    """The float32 training path convolves the whole meta-batch in one grouped convolution;
    it must give the values, gradients and second derivatives of one tf.nn.conv2d per task."""
    import tensorflow as tf
    import utils
    if not utils.grouped_conv_gradients_work():
        pytest.skip('this TensorFlow build falls back to split_conv2d everywhere: nothing to compare')
    rng = np.random.default_rng(1)
    tasks, channels, filters = 4, 3, 5  # meta-batch of 4 tasks stacked along channels, as maml.py does
    x = tf.constant(rng.normal(size=(2, 9, 9, tasks * channels)), tf.float32)
    kernel = tf.constant(rng.normal(size=(3, 3, channels, tasks * filters)), tf.float32)

    def derivatives(conv):
        with tf.GradientTape() as outer:
            outer.watch([x, kernel])
            with tf.GradientTape() as inner:
                inner.watch([x, kernel])
                y = conv(x, kernel, tasks, strides)
                value = tf.reduce_sum(tf.tanh(y) * tf.range(y.shape[-1], dtype=y.dtype))
            dx, dk = inner.gradient(value, [x, kernel])
            meta = tf.reduce_sum(tf.sin(dx)) + tf.reduce_sum(dk * dk)
        return [y, dx, dk] + outer.gradient(meta, [x, kernel])

    grouped = derivatives(utils.grouped_conv2d)
    split = derivatives(utils.split_conv2d)
    for name, a, b in zip(['output', 'd/dx', 'd/dkernel', 'second d/dx', 'second d/dkernel'], grouped, split):
        # float32 sums in another order: judge the error against the array's scale
        scale = np.abs(b.numpy()).max()
        assert np.abs(a.numpy() - b.numpy()).max() <= 1e-5 * scale, name


@pytest.mark.parametrize('stop_grad', [False, True])
def test_ordinary_iteration_updates_as_a_report_iteration(stop_grad):
    """Ordinary iterations run the query set after step num_updates only; the
    meta-update must be the one a report iteration (all steps recorded) makes."""
    import tensorflow as tf
    from maml import MAML, ModelConfig
    config = ModelConfig(datasource='omniglot', num_classes=3, update_batch_size=1, update_lr=0.4,
                         num_updates=3, num_filters=4, stop_grad=stop_grad)
    rng = np.random.default_rng(2)
    images = rng.random((2, 6, 28 * 28))
    labels = np.eye(3)[np.tile([0, 1, 2], (2, 2))]
    batch = (images[:, :3], images[:, 3:], labels[:, :3], labels[:, 3:])
    models = [MAML(28 * 28, 3, test_num_updates=4, config=config, dtype=tf.float64, seed=0) for _ in range(2)]
    ordinary = models[0].metatrain_step(batch)
    report = models[1].metatrain_step(batch, 4)
    assert [v is None for v in ordinary['total_losses2']] == [True, True, False]
    assert len(report['total_losses2']) == 4 and all(v is not None for v in report['total_losses2'])
    np.testing.assert_allclose(float(ordinary['total_losses2'][2]), float(report['total_losses2'][2]), rtol=1e-12)
    np.testing.assert_allclose(float(ordinary['total_loss1']), float(report['total_loss1']), rtol=1e-12)
    for name, a, b in zip(models[0].variable_names, ordinary['grads'], report['grads']):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-10, atol=1e-14, err_msg=name)
    for name, a, b in zip(models[0].variable_names, models[0].variables_list, models[1].variables_list):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-10, atol=1e-14, err_msg=name)

    def forward_convs(num_steps):
        graph = models[0].traced_graph('metatrain', batch, num_steps)
        return sum(op.type == 'Conv2D' for op in graph.get_operations())
    # the same 3 steps recorded: the ordinary graph lacks the query passes after steps 1 and 2,
    # each 4 layers of one convolution per task (float64 convolves task by task)
    assert forward_convs(3) - forward_convs(None) == 2 * 4 * 2


@pytest.mark.parametrize('stop_grad', [False, True])
def test_fused_batch_norm_serves_only_passes_differentiated_once(monkeypatch, stop_grad):
    """float32 batch norm runs in the fused kernel where nothing is differentiated
    twice: the query pass, and every pass of first-order MAML. The support passes
    of second-order MAML keep the exact formula (see utils.fused_batch_norm and
    test_fused_batch_norm_gives_the_exact_second_derivative). Either way the
    meta-gradient is the one the exact formula gives everywhere."""
    import utils
    from maml import MAML, ModelConfig
    config = ModelConfig(datasource='omniglot', num_classes=3, update_batch_size=2, update_lr=0.4,
                         num_updates=2, num_filters=6, stop_grad=stop_grad)
    rng = np.random.default_rng(3)
    images = rng.random((2, 12, 28 * 28)).astype(np.float32)
    labels = np.eye(3, dtype=np.float32)[np.tile([0, 1, 2], (2, 4))]
    batch = (images[:, :6], images[:, 6:], labels[:, :6], labels[:, 6:])

    def meta_gradients(fused):
        with monkeypatch.context() as patch:
            if not fused:
                patch.setattr(utils, 'fused_batch_norm', lambda x, beta: utils.batch_norm(x, beta, [0, 1, 2]))
            model = MAML(28 * 28, 3, test_num_updates=2, config=config, seed=0)
            out = model.metatrain_step(batch)
            graph = model.traced_graph('metatrain', batch)
        fused_ops = sum(op.type == 'FusedBatchNormV3' for op in graph.get_operations())
        # the conv biases b1..b4 precede batch norm, which subtracts them again: their
        # gradients are rounding noise, left out
        grads = {name: g.numpy() for name, g in zip(model.variable_names, out['grads'])
                 if name not in ('b1', 'b2', 'b3', 'b4')}
        return grads, float(out['total_losses2'][1]), fused_ops

    fused, loss_fused, fused_ops = meta_gradients(True)
    exact, loss_exact, exact_fused_ops = meta_gradients(False)
    # 4 layers of the one query pass; first order: of the 2 support passes as well
    assert (fused_ops, exact_fused_ops) == (4 * (3 if stop_grad else 1), 0)
    np.testing.assert_allclose(loss_fused, loss_exact, rtol=1e-5)
    assert len(fused) == 10  # conv1..conv4, w5, b5 and the four batch-norm offsets
    for name in fused:
        # float32 sums in another order: judge the error against the array's scale
        assert np.abs(fused[name] - exact[name]).max() <= 1e-4 * np.abs(exact[name]).max(), name


@pytest.mark.parametrize('datasource, train, expected', [
    ('sinusoid', True, '0'), ('sinusoid', False, '0'), ('omniglot', True, None), ('omniglot', False, None),
    ('miniimagenet', True, None), ('miniimagenet', False, None)])
def test_cpu_kernels_chosen_per_data_set_and_mode(monkeypatch, datasource, train, expected):
    """main.py turns oneDNN off where TensorFlow's own kernels measured faster, the sinusoid
    (None: left to utils.py, which turns it on; the Omniglot test needs it for its grouped
    convolutions since it runs 10 tasks at once); a value the user set is kept."""
    monkeypatch.delenv('TF_ENABLE_ONEDNN_OPTS', raising=False)
    main.choose_cpu_kernels(datasource, train)
    assert os.environ.get('TF_ENABLE_ONEDNN_OPTS') == expected
    monkeypatch.setenv('TF_ENABLE_ONEDNN_OPTS', '1')
    main.choose_cpu_kernels(datasource, train)
    assert os.environ['TF_ENABLE_ONEDNN_OPTS'] == '1'


## The image cache -----------------------------------------------------------------------------

def cached_folders(tmp_path):
    root = make_omniglot(str(tmp_path), alphabets=1, characters=3, drawings=4)
    alphabet = os.path.join(root, 'omniglot_resized', 'Alphabet_00')
    return sorted(os.path.join(alphabet, c) for c in os.listdir(alphabet)), str(tmp_path / 'images.cache.npy')


def test_cache_is_used_and_rebuilt_when_stale_or_corrupt(tmp_path, monkeypatch):
    folders, cache = cached_folders(tmp_path)
    images = data_generator.load_classes(folders, '.png', cache, progress=False)
    reads = []

    def counting(*args):
        reads.append(args)
        return load_class_images_unpatched(*args)

    monkeypatch.setattr(data_generator, 'load_class_images', counting)
    np.testing.assert_array_equal(data_generator.load_classes(folders, '.png', cache, progress=False), images)
    assert reads == []  # served from the cache
    with open(cache, 'r+b') as f:  # corrupt the array
        f.truncate(100)
    np.testing.assert_array_equal(data_generator.load_classes(folders, '.png', cache, progress=False), images)
    assert len(reads) == len(folders)
    first = os.path.join(folders[0], sorted(os.listdir(folders[0]))[0])
    os.utime(first, ns=(1, 1))  # a changed file makes the cache stale
    np.testing.assert_array_equal(data_generator.load_classes(folders, '.png', cache, progress=False), images)
    assert len(reads) == 2 * len(folders)


def test_two_processes_rebuilding_one_cache_at_once(tmp_path, monkeypatch):
    """Two runs started together both rebuild the cache; the second finishes
    while the first is writing. Both must end with the right array."""
    folders, cache = cached_folders(tmp_path)
    images = np.stack([load_class_images_unpatched(f, '.png') for f in folders])
    real_save, real_getpid = np.save, os.getpid
    state = {'pid': 1000, 'nested': False}
    monkeypatch.setattr(os, 'getpid', lambda: state['pid'])

    def save_with_a_second_writer(path, array):
        real_save(path, array)
        if not state['nested']:
            state['nested'], state['pid'] = True, 1001
            data_generator.write_cache(cache, array, 'key')
            state['pid'] = 1000

    monkeypatch.setattr(np, 'save', save_with_a_second_writer)
    data_generator.write_cache(cache, images, 'key')
    monkeypatch.setattr(os, 'getpid', real_getpid)
    np.testing.assert_array_equal(np.load(cache), images)
    assert sorted(os.listdir(tmp_path)) == ['images.cache.npy', 'images.cache.npy.json', 'omniglot_resized']


## The fused batch-norm kernel's second derivative ------------------------------------------------

def moments_batch_norm(x, beta):
    """Batch norm on tf.nn.moments, whose variance holds a stop_gradient on the mean (SPEC)."""
    import tensorflow as tf
    import utils
    mean, variance = tf.nn.moments(x, [0, 1, 2], keepdims=True)
    return (x - mean) * tf.math.rsqrt(variance + utils.BATCH_NORM_EPSILON) + beta


def one_inner_step(norm, dtype, compiled):
    """A one-layer MAML: conv -> norm -> ReLU, one inner step on the kernel, the query loss;
    (query loss, meta-gradient wrt the kernel, wrt the norm offset). Second order throughout."""
    import tensorflow as tf
    rng = np.random.default_rng(1)
    inputa, inputb = (tf.constant(rng.normal(size=(5, 6, 6, 2)), dtype) for _ in range(2))
    target = tf.constant(rng.normal(size=(5, 6, 6, 4)), dtype)
    kernel = tf.constant(rng.normal(size=(3, 3, 2, 4)) * 0.5, dtype)
    beta = tf.constant(rng.normal(size=(4,)), dtype)

    def loss(x, k, b):
        return tf.reduce_mean(tf.square(tf.nn.relu(norm(tf.nn.conv2d(x, k, 1, 'SAME'), b)) - target))

    def meta(kernel, beta):
        with tf.GradientTape() as outer:
            outer.watch([kernel, beta])
            with tf.GradientTape() as inner:
                inner.watch(kernel)
                lossa = loss(inputa, kernel, beta)
            lossb = loss(inputb, kernel - 0.4 * inner.gradient(lossa, kernel), beta)
        return [lossb] + outer.gradient(lossb, [kernel, beta])
    return [t.numpy().astype(np.float64) for t in (tf.function(meta) if compiled else meta)(kernel, beta)]


@pytest.mark.parametrize('compiled', [False, True])
def test_fused_batch_norm_gives_the_exact_second_derivative(compiled):
    """The verdict on TensorFlow 2.21's FusedBatchNormV3 in training mode (utils.fused_batch_norm):
    its second derivative is exact. Against the exact formula in float64 (what the golden
    fixtures hold), the meta-gradient through it is as close as the exact formula's own in
    float32; the same check catches tf.nn.moments' inexact second derivative by 1000 times more."""
    import tensorflow as tf
    import utils

    def exact(x, beta):
        return utils.batch_norm(x, beta, [0, 1, 2])

    truth = one_inner_step(exact, tf.float64, compiled)

    def errors(norm):
        return [np.abs(a - b).max() / np.abs(b).max() for a, b in zip(one_inner_step(norm, tf.float32, compiled), truth)]

    fused, rounding, moments = errors(utils.fused_batch_norm), errors(exact), errors(moments_batch_norm)
    assert max(fused) <= 1e-5 and max(rounding) <= 1e-5, (fused, rounding)
    assert moments[1] >= 1e-4 > 10 * fused[1], (moments, fused)  # the kernel's gradient: the second-order term
