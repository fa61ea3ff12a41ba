"""Reading the reference's TF1 checkpoints, and the authors' released miniImagenet model.

model59000 (../shared/reference/miniimagenet1shot) is the checkpoint the
reference authors released: miniImagenet 5-way 1-shot, 32 filters, max pool,
batch_norm, 14 variables.
"""
import csv
import dataclasses
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO, SHARED
import synthetic
from runner import user_env
import tf1_checkpoint
from maml import MAML, ModelConfig
from tf1_checkpoint import CheckpointMismatch, load_reference_checkpoint

RELEASED = SHARED / 'reference' / 'miniimagenet1shot' / 'model59000'
# the reference's layout: logdir/exp_string/model<ITER>, exp_string with the training meta_batch_size
RELEASED_EXP = 'cls_5.mbs_4.ubs_1.numstep5.updatelr0.01hidden32maxpoolbatchnorm'
RELEASED_FLAGS = ['--datasource=miniimagenet', '--update_batch_size=1', '--update_lr=0.01', '--num_updates=5',
                  '--num_filters=32', '--max_pool=True', '--meta_batch_size=4']
EXPECTED_NAMES = {
    'conv1': 'model/conv1', 'conv2': 'model/conv2', 'conv3': 'model/conv3', 'conv4': 'model/conv4',
    'b1': 'model/Variable', 'b2': 'model/Variable_1', 'b3': 'model/Variable_2', 'b4': 'model/Variable_3',
    'w5': 'model/w5', 'b5': 'model/b5',
    'norm/0/beta': 'model/0/beta', 'norm/1/beta': 'model/1/beta',
    'norm/2/beta': 'model/2/beta', 'norm/3/beta': 'model/3/beta',
}
EXPECTED_SHAPES = {
    'conv1': (3, 3, 3, 32), 'conv2': (3, 3, 32, 32), 'conv3': (3, 3, 32, 32), 'conv4': (3, 3, 32, 32),
    'b1': (32,), 'b2': (32,), 'b3': (32,), 'b4': (32,), 'w5': (800, 5), 'b5': (5,),
    'norm/0/beta': (32,), 'norm/1/beta': (32,), 'norm/2/beta': (32,), 'norm/3/beta': (32,),
}

needs_released = pytest.mark.skipif(not os.path.exists(str(RELEASED) + '.index'),
                                    reason='the released checkpoint %s is absent' % RELEASED)


def mini_model(**overrides):
    """The model of the released checkpoint's flags, with overrides."""
    config = dataclasses.replace(ModelConfig(
        datasource='miniimagenet', num_classes=5, update_batch_size=1, update_lr=0.01, num_updates=5,
        num_filters=32, max_pool=True, norm='batch_norm'), **overrides)
    dim_input = 84 * 84 * 3 if config.datasource == 'miniimagenet' else 28 * 28
    return MAML(dim_input, config.num_classes, test_num_updates=10, config=config, seed=0)


def link_released(exp_dir, iteration=59000):
    """exp_dir/model<iteration>.* as symlinks to the released files (the reference's layout)."""
    os.makedirs(exp_dir, exist_ok=True)
    for suffix in ('.index', '.data-00000-of-00001'):
        os.symlink(str(RELEASED) + suffix, os.path.join(exp_dir, 'model%d%s' % (iteration, suffix)))
    return os.path.join(exp_dir, 'model%d' % iteration)


## The released checkpoint ---------------------------------------------------------------------------

@needs_released
def test_released_checkpoint_loads_all_14_variables():
    model = mini_model()
    before = {k: v.numpy().copy() for k, v in model.named_variables().items()}
    result = load_reference_checkpoint(model, str(RELEASED))
    assert result.names == EXPECTED_NAMES
    assert result.iteration == 59000
    reader = tf.train.load_checkpoint(str(RELEASED))
    assert len(reader.get_variable_to_shape_map()) == 14
    variables = model.named_variables()
    assert set(variables) == set(EXPECTED_SHAPES)
    for name, shape in EXPECTED_SHAPES.items():
        value = variables[name].numpy()
        assert value.shape == shape, name
        np.testing.assert_array_equal(value, reader.get_tensor(EXPECTED_NAMES[name]), err_msg=name)
        assert not np.array_equal(value, before[name]), name  # really replaced
    # a few single values, read independently
    assert variables['conv1'][1, 2, 0, 7].numpy() == reader.get_tensor('model/conv1')[1, 2, 0, 7]
    assert variables['w5'][799, 4].numpy() == reader.get_tensor('model/w5')[799, 4]
    assert variables['b3'][31].numpy() == reader.get_tensor('model/Variable_2')[31]
    assert variables['norm/3/beta'][0].numpy() == reader.get_tensor('model/3/beta')[0]
    assert variables['b5'].numpy().tolist() == reader.get_tensor('model/b5').tolist()


@needs_released
def test_released_checkpoint_has_no_adam_state_and_says_so():
    model = mini_model()
    result = load_reference_checkpoint(model, str(RELEASED), optimizer_state=True)
    assert result.optimizers == {}
    assert any('no meta-training Adam state' in w and 'trainable' in w for w in result.warnings)
    assert int(model.metatrain_optimizer.iterations.numpy()) == 0
    assert all(not np.any(m.numpy()) for m in model.metatrain_optimizer.m)


@needs_released
def test_mismatch_64_filters_gets_a_clear_error():
    with pytest.raises(CheckpointMismatch) as info:
        load_reference_checkpoint(mini_model(num_filters=64), str(RELEASED))
    message = str(info.value)
    assert 'does not match the model the flags describe' in message
    assert 'num_filters=64' in message
    assert 'shape mismatch (13)' in message
    assert 'model/conv1 (our conv1): checkpoint [3, 3, 3, 32], model [3, 3, 3, 64]' in message
    assert 'model/Variable_3 (our b4): checkpoint [32], model [64]' in message
    assert 'model/w5 (our w5): checkpoint [800, 5], model [1600, 5]' in message
    assert '--num_filters=32' in message
    assert 'missing' not in message and 'unexpected' not in message


@needs_released
def test_mismatch_norm_datasource_and_net_are_named():
    with pytest.raises(CheckpointMismatch) as info:
        load_reference_checkpoint(mini_model(norm='layer_norm'), str(RELEASED))
    message = str(info.value)
    assert 'missing from the checkpoint (4)' in message and 'model/0/gamma (our norm/0/gamma' in message
    assert '--norm=batch_norm' in message

    with pytest.raises(CheckpointMismatch) as info:
        load_reference_checkpoint(mini_model(datasource='omniglot'), str(RELEASED))
    assert '--datasource=miniimagenet' in str(info.value)

    with pytest.raises(CheckpointMismatch) as info:
        load_reference_checkpoint(mini_model(num_classes=20), str(RELEASED))
    assert '--num_classes=5' in str(info.value)

    with pytest.raises(CheckpointMismatch) as info:
        load_reference_checkpoint(mini_model(conv=False), str(RELEASED))
    message = str(info.value)
    assert 'unexpected in the checkpoint' in message and 'model/conv1 [3, 3, 3, 32]' in message
    assert '--conv=True' in message


@needs_released
def test_a_failed_load_changes_nothing():
    model = mini_model(norm='layer_norm')
    before = {k: v.numpy().copy() for k, v in model.named_variables().items()}
    with pytest.raises(CheckpointMismatch):
        load_reference_checkpoint(model, str(RELEASED))
    for name, value in model.named_variables().items():
        np.testing.assert_array_equal(value.numpy(), before[name])


## A full TF1 checkpoint, optimizer state included ------------------------------------------------------

def write_tf1_checkpoint(prefix, pretrain_steps=1, metatrain_steps=3):
    """A TF1 checkpoint of the sinusoid fc net (40-40, batch_norm) named as the reference names it.

    The weights are unnamed tf.Variables under the scope 'model', created in
    the order w1, b1, w2, b2, w3, b3; batch-norm betas (and the unused moving
    statistics) under model/0 and model/2; then the pretraining Adam and the
    meta-training Adam, as the reference's graph creates them. Saved with all
    variables, so the Adam slots and beta powers are in it.
    """
    v1 = tf.compat.v1
    rng = np.random.default_rng(3)
    sizes = [1, 40, 40, 1]
    graph = tf.Graph()
    with graph.as_default():
        x = v1.placeholder(tf.float32, [None, 1])
        with v1.variable_scope('model'):
            weights = []
            for i in range(3):
                weights.append(v1.Variable(rng.normal(size=sizes[i:i + 2]).astype(np.float32)))
                weights.append(v1.Variable(rng.normal(size=sizes[i + 1]).astype(np.float32)))
            hidden = x
            for i, scope in enumerate(['0', '2']):
                with v1.variable_scope(scope):
                    beta = v1.get_variable('beta', initializer=rng.normal(size=40).astype(np.float32))
                    v1.get_variable('moving_mean', [40], trainable=False, initializer=v1.zeros_initializer())
                    v1.get_variable('moving_variance', [40], trainable=False, initializer=v1.ones_initializer())
                hidden = tf.nn.relu(tf.matmul(hidden, weights[2 * i]) + weights[2 * i + 1] + beta)
            out = tf.matmul(hidden, weights[4]) + weights[5]
        pretrain_op = v1.train.AdamOptimizer(0.01).minimize(tf.reduce_sum(out ** 2))
        optimizer = v1.train.AdamOptimizer(0.01)
        metatrain_op = optimizer.apply_gradients(optimizer.compute_gradients(tf.reduce_sum(tf.abs(out - 1.0))))
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            feed = {x: rng.normal(size=[10, 1]).astype(np.float32)}
            for _ in range(pretrain_steps):
                sess.run(pretrain_op, feed)
            for _ in range(metatrain_steps):
                sess.run(metatrain_op, feed)
            v1.train.Saver().save(sess, prefix)
    return prefix


def test_full_tf1_checkpoint_with_adam_state(tmp_path):
    prefix = write_tf1_checkpoint(str(tmp_path / 'model7'), pretrain_steps=2, metatrain_steps=5)
    reader = tf.train.load_checkpoint(prefix)
    names = set(reader.get_variable_to_shape_map())
    assert {'model/Variable_5/Adam_3', 'beta1_power_1', 'model/0/moving_mean'} <= names

    model = MAML(1, 1, test_num_updates=10, config=ModelConfig(datasource='sinusoid', norm='batch_norm'), seed=0)
    result = load_reference_checkpoint(model, prefix, optimizer_state=True)
    order = ['w1', 'b1', 'w2', 'b2', 'w3', 'b3']
    assert [result.names[n] for n in order] == ['model/Variable'] + ['model/Variable_%d' % i for i in range(1, 6)]
    assert result.names['norm/2/beta'] == 'model/2/beta'
    assert result.iteration == 7
    assert result.optimizers == {'pretrain': 2, 'metatrain': 5}
    assert result.warnings == []
    variables = model.named_variables()
    for mine, theirs in result.names.items():
        np.testing.assert_array_equal(variables[mine].numpy(), reader.get_tensor(theirs))
    for which, (m_slot, v_slot) in (('pretrain', ('Adam', 'Adam_1')), ('metatrain', ('Adam_2', 'Adam_3'))):
        optimizer = getattr(model, which + '_optimizer')
        assert int(optimizer.iterations.numpy()) == result.optimizers[which]
        for i, mine in enumerate(model.variable_names):
            np.testing.assert_array_equal(optimizer.m[i].numpy(), reader.get_tensor(result.names[mine] + '/' + m_slot))
            np.testing.assert_array_equal(optimizer.v[i].numpy(), reader.get_tensor(result.names[mine] + '/' + v_slot))
    # our next Adam step uses the same bias correction as TF1's next step would
    t = model.metatrain_optimizer.iterations.numpy() + 1
    assert np.isclose(0.9 ** t, reader.get_tensor('beta1_power_1'), rtol=1e-5)


def test_adam_steps_from_beta_powers():
    assert tf1_checkpoint.adam_steps(0.9, 0.999) == 0
    assert tf1_checkpoint.adam_steps(np.float32(0.9) ** 4, np.float32(0.999) ** 4) == 3
    # beta1_power has underflowed in float32 long before iteration 59000; beta2_power has not
    assert abs(tf1_checkpoint.adam_steps(0.0, float(np.float32(0.999 ** 59001))) - 59000) <= 1


## Finding checkpoints in a log folder (main.Checkpoints) ---------------------------------------------------

@needs_released
def test_checkpoints_pick_by_iteration_ours_or_reference(tmp_path):
    import main
    exp_dir = str(tmp_path / RELEASED_EXP)
    model = mini_model()
    ckpt = main.Checkpoints(model, exp_dir)
    assert ckpt.path_for(-1) is None
    reference = link_released(exp_dir)
    assert ckpt.path_for(-1) == reference and 'reference' in ckpt.choice
    assert ckpt.restore(reference, optimizer_state=False) == 59000
    np.testing.assert_array_equal(model.weights['w5'].numpy(),
                                  tf.train.load_checkpoint(str(RELEASED)).get_tensor('model/w5'))
    ours_100 = ckpt.save(100)
    assert ckpt.path_for(-1) == reference and 'ours of iteration 100 is older' in ckpt.choice
    assert ckpt.path_for(100) == ours_100 and ckpt.choice.startswith('our checkpoint')
    assert ckpt.path_for(59000) == reference
    assert ckpt.path_for(500) is None
    ours_60000 = ckpt.save(60000)
    assert ckpt.path_for(-1) == ours_60000 and 'iteration 59000 is older' in ckpt.choice
    assert ckpt.restore(ours_60000) == 60000


@needs_released
def test_keeping_10_of_ours_never_deletes_reference_checkpoints(tmp_path):
    import main
    exp_dir = str(tmp_path / RELEASED_EXP)
    reference = link_released(exp_dir)
    # the bookkeeping file a TF1 Saver leaves, with timestamps that make the manager track files
    tf.compat.v1.train.update_checkpoint_state(
        exp_dir, reference, all_model_checkpoint_paths=[reference],
        all_model_checkpoint_timestamps=[time.time() - 10], last_preserved_timestamp=time.time() - 100)
    ckpt = main.Checkpoints(mini_model(), exp_dir)
    assert ckpt.path_for(-1) == reference
    for itr in range(1, 13):
        ckpt.save(itr)
    assert os.path.exists(reference + '.index')
    assert ckpt.path_for(-1) == reference  # 59000 is still the highest iteration


def _run_main(args, timeout):
    env = user_env()
    return subprocess.run([sys.executable, str(REPO / 'main.py')] + args, cwd=str(REPO), env=env,
                          capture_output=True, text=True, timeout=timeout)


def _read_csv(path):
    with open(path) as f:
        rows = list(csv.reader(f))
    assert rows[0] == ['update%d' % i for i in range(11)]
    return [np.array([float(v) for v in row]) for row in rows[1:]]


@needs_released
@pytest.mark.slow
def test_main_test_mode_finds_reference_checkpoint(tmp_path):
    """--train=False on a logdir holding model59000 in the reference's layout (synthetic images)."""
    synthetic.make_miniimagenet(str(tmp_path / 'data'))
    logdir = tmp_path / 'logs'
    link_released(str(logdir / RELEASED_EXP))
    proc = _run_main(['--train=False', '--test_set=True', '--logdir=%s' % logdir,
                      '--data_dir=%s' % (tmp_path / 'data')] + RELEASED_FLAGS, timeout=1800)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert ('Restoring model weights from %s (the reference\'s TF1 checkpoint of iteration 59000)'
            % (logdir / RELEASED_EXP / 'model59000')) in proc.stdout
    means, stds, ci95 = _read_csv(logdir / RELEASED_EXP / 'test_ubs1_stepsize0.01.csv')
    assert np.all((means >= 0) & (means <= 1))


@needs_released
@pytest.mark.slow
def test_main_resumes_training_from_reference_checkpoint(tmp_path):
    """--resume (the default) continues after iteration 59000 and says that Adam starts afresh."""
    synthetic.make_miniimagenet(str(tmp_path / 'data'))
    logdir = tmp_path / 'logs'
    exp_dir = logdir / RELEASED_EXP
    link_released(str(exp_dir))
    proc = _run_main(['--metatrain_iterations=59002', '--logdir=%s' % logdir,
                      '--data_dir=%s' % (tmp_path / 'data')] + RELEASED_FLAGS, timeout=1800)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "(the reference's TF1 checkpoint of iteration 59000)" in proc.stdout
    assert 'no meta-training Adam state' in proc.stderr
    assert (exp_dir / 'model-59001.index').exists()  # one iteration, 59001, then the final save
    assert (exp_dir / 'model59000.index').exists()


@needs_released
def test_main_mismatched_flags_fail_with_the_clear_error(tmp_path):
    synthetic.make_miniimagenet(str(tmp_path / 'data'), classes=(1, 1, 5), images=2)
    logdir = tmp_path / 'logs'
    exp = RELEASED_EXP.replace('hidden32', '')  # --num_filters=64 is the default: no 'hidden' part
    link_released(str(logdir / exp))
    flags = [f for f in RELEASED_FLAGS if not f.startswith('--num_filters')]
    proc = _run_main(['--train=False', '--test_set=True', '--logdir=%s' % logdir,
                      '--data_dir=%s' % (tmp_path / 'data')] + flags, timeout=600)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert 'does not match the model the flags describe' in proc.stderr
    assert '--num_filters=32' in proc.stderr
    assert 'Traceback' not in proc.stderr


## The released model on the real test split -------------------------------------------------------------

# Step-10 accuracy band, in %. The paper reports 48.70 +- 1.84 for this setting; independent
# reruns of the reference report 45-47; our 600-task estimate carries its own ci95 of about
# 1.8 points (measured: docs/results.md, "Regression check: the authors' released miniImagenet model"). The lowest credible true value
# (45, the low end of the reruns) minus our ci95 gives the lower bound, the paper's upper CI
# bound (50.54) plus our ci95 the upper one.
BAND = (43.0, 52.5)
PREPARED = REPO / 'data' / 'miniImagenet' / 'test'


@needs_released
@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / 'data').is_dir(), reason='../shared/data (the real archives) is absent')
@pytest.mark.skipif(not PREPARED.is_dir() or len(os.listdir(PREPARED)) != 20,
                    reason='miniImagenet is not prepared in data/miniImagenet: run '
                           'python -m data.prepare miniimagenet ../shared/data/miniImagenet')
def test_released_model_on_the_real_test_split(tmp_path):
    logdir = tmp_path / 'logs'
    link_released(str(logdir / RELEASED_EXP))
    proc = _run_main(['--train=False', '--test_set=True', '--logdir=%s' % logdir,
                      '--data_dir=%s' % (REPO / 'data')] + RELEASED_FLAGS, timeout=7200)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    means, stds, ci95 = _read_csv(logdir / RELEASED_EXP / 'test_ubs1_stepsize0.01.csv')
    step0, step10 = 100 * means[0], 100 * means[10]
    assert BAND[0] <= step10 <= BAND[1], 'step-10 accuracy %.2f%% outside %s' % (step10, BAND)
    assert step10 > step0 + 15, 'accuracy did not rise: step 0 %.2f%%, step 10 %.2f%%' % (step0, step10)
    assert 100 * ci95[10] < 2.5
