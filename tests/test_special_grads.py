"""Second derivatives through max pooling are exact (special_grads.py documents why
TF2 needs no patch): checked against finite differences in float64."""
import numpy as np
import tensorflow as tf

import special_grads  # noqa: F401  (the module must import, as in the reference)
from maml import MAML, ModelConfig

pool = lambda x: tf.nn.max_pool2d(x, 2, 2, 'VALID')  # noqa: E731


def loss(x, w):
    """A conv, a max pool and a square: the pool's gradient enters the second derivative."""
    h = pool(tf.nn.conv2d(x, w, 1, 'SAME'))
    return tf.reduce_sum(tf.sin(h) * h)


def gradient(x, w):
    with tf.GradientTape() as tape:
        tape.watch(w)
        value = loss(x, w)
    return tape.gradient(value, w)


def test_hessian_vector_product_through_max_pool():
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(2, 6, 6, 2)))
    w = tf.constant(rng.normal(size=(3, 3, 2, 3)))
    v = tf.constant(rng.normal(size=(3, 3, 2, 3)))
    with tf.GradientTape() as outer:
        outer.watch(w)
        g = gradient(x, w)
        gv = tf.reduce_sum(g * v)
    hv = outer.gradient(gv, w).numpy()
    eps = 1e-6
    fd = (gradient(x, w + eps * v) - gradient(x, w - eps * v)).numpy() / (2 * eps)
    assert np.max(np.abs(hv)) > 1e-2  # the second derivative is not trivially zero
    np.testing.assert_allclose(hv, fd, rtol=1e-5, atol=1e-6)


def directional_derivatives(stop_grad):
    """(meta-gradient . d, finite difference along d) for a max-pool, batch-norm conv net."""
    config = ModelConfig(datasource='omniglot', num_classes=3, update_batch_size=1, update_lr=0.1,
                         num_updates=2, num_filters=4, max_pool=True, norm='batch_norm',
                         stop_grad=stop_grad)
    model = MAML(dim_input=28 * 28, dim_output=3, test_num_updates=2, config=config,
                 dtype=tf.float64, seed=1)
    rng = np.random.default_rng(2)
    inputa, inputb = rng.random((2, 3, 28 * 28)), rng.random((2, 6, 28 * 28))
    labela = np.tile(np.eye(3), (2, 1, 1))
    labelb = np.tile(np.eye(3)[[0, 1, 2, 0, 1, 2]], (2, 1, 1))
    batch = (inputa, inputb, labela, labelb)
    start = {k: v.numpy().copy() for k, v in model.named_variables().items()}

    def meta_loss(values):
        model.assign(values)
        return float(model.evaluate(batch, 2)['total_losses2'][1])

    grads = dict(zip(model.variable_names, model.metatrain_step(batch, 2)['grads']))
    direction = {k: rng.normal(size=v.shape) for k, v in start.items()}
    analytic = sum(float(np.sum(grads[k].numpy() * direction[k])) for k in start)
    eps = 1e-6  # small enough that no ReLU or max-pool switch is crossed
    plus = meta_loss({k: start[k] + eps * direction[k] for k in start})
    minus = meta_loss({k: start[k] - eps * direction[k] for k in start})
    return analytic, (plus - minus) / (2 * eps)


def test_maml_meta_gradient_with_max_pool_matches_finite_differences():
    """The whole second-order meta-gradient through batch norm and max pooling."""
    analytic, numeric = directional_derivatives(stop_grad=False)
    assert abs(analytic) > 1.0
    assert abs(analytic - numeric) <= 1e-6 * abs(numeric), (analytic, numeric)
    # the comparison can tell: the first-order gradient is not the derivative of the meta-loss
    first_order, _ = directional_derivatives(stop_grad=True)
    assert abs(first_order - numeric) > 1e-3 * abs(numeric), (first_order, numeric)
