"""Losses, normalisation and network blocks shared by the MAML models.

Everything here is a plain function of tensors, so the same code serves the
float32 training path and the float64 reference check.
"""
import numpy as np
import tensorflow as tf

BATCH_NORM_EPSILON = 1e-3   # tf.contrib.layers.batch_norm default
LAYER_NORM_EPSILON = 1e-12  # tf.contrib.layers.layer_norm (TF 1.x)
NORMS = ('batch_norm', 'layer_norm', 'None')


## Normalisation ------------------------------------------------------------

def exact_moments(x, axes):
    """Mean and (biased) variance with exact derivatives of every order.

    tf.nn.moments in TF2 stops the gradient of the mean inside the variance;
    first derivatives survive that, second derivatives do not, and second-order
    MAML differentiates through the normalisation. TF 1.0, on which the
    reference ran, computed exact moments; so do we.
    """
    mean = tf.reduce_mean(x, axes, keepdims=True)
    variance = tf.reduce_mean(tf.square(x - mean), axes, keepdims=True)
    return mean, variance


def batch_norm(x, beta):
    """Batch norm with the statistics of this call (training mode, always).

    Offset only, no scale, as tf.contrib.layers.batch_norm's defaults; the
    moving averages the reference kept were never used, so there are none.
    """
    axes = list(range(len(x.shape) - 1))
    mean, variance = exact_moments(x, axes)
    return (x - mean) * tf.math.rsqrt(variance + BATCH_NORM_EPSILON) + beta


def layer_norm(x, beta, gamma):
    """Normalise over every axis but the batch axis; scale and offset per channel."""
    axes = list(range(1, len(x.shape)))
    mean, variance = exact_moments(x, axes)
    return (x - mean) * tf.math.rsqrt(variance + LAYER_NORM_EPSILON) * gamma + beta


def normalize(x, norm, norm_weights, activation=tf.nn.relu):
    """Apply the configured normalisation (norm_weights: {'beta', 'gamma'}), then activation."""
    if norm == 'batch_norm':
        x = batch_norm(x, norm_weights['beta'])
    elif norm == 'layer_norm':
        x = layer_norm(x, norm_weights['beta'], norm_weights['gamma'])
    elif norm != 'None':
        raise ValueError('norm must be one of %s, got %r' % (', '.join(NORMS), norm))
    return activation(x) if activation is not None else x


def norm_param_names(norm):
    """Names of the per-channel parameters one normalisation layer owns."""
    return {'batch_norm': ('beta',), 'layer_norm': ('beta', 'gamma'), 'None': ()}[norm]


def conv_block(inp, cweight, bweight, norm, norm_weights, max_pool):
    """3x3 SAME conv + bias -> norm -> ReLU, downsampling by 2.

    Downsampling is a stride-2 conv, or with max_pool a stride-1 conv followed
    by 2x2 max pooling (VALID), as in the reference.
    """
    stride = 1 if max_pool else 2
    conv_output = tf.nn.conv2d(inp, cweight, stride, 'SAME') + bweight
    normed = normalize(conv_output, norm, norm_weights)
    if max_pool:
        normed = tf.nn.max_pool2d(normed, 2, 2, 'VALID')
    return normed


## Losses (one task at a time) ------------------------------------------------

def mse(pred, label):
    """Mean squared error over all points of one task."""
    return tf.reduce_mean(tf.square(tf.reshape(pred, [-1]) - tf.reshape(label, [-1])))


def xent(pred, label, update_batch_size):
    """Softmax cross-entropy summed over the task's examples, divided by K.

    The reference returned the per-example vector divided by K and let
    tf.gradients / reduce_sum add it up; the paper's update_lr values rely on
    this scaling.
    """
    per_example = tf.nn.softmax_cross_entropy_with_logits(labels=label, logits=pred)
    return tf.reduce_sum(per_example) / tf.cast(update_batch_size, pred.dtype)


def accuracy(pred, label):
    """Fraction of examples whose arg-max prediction is the labelled class."""
    correct = tf.equal(tf.argmax(pred, -1), tf.argmax(label, -1))
    return tf.reduce_mean(tf.cast(correct, pred.dtype))


## Evaluation statistics ----------------------------------------------------------

def confidence_summary(results):
    """Per-column mean, std (ddof 0) and 95% CI half-width 1.96 std / sqrt(n)."""
    results = np.asarray(results, dtype=np.float64)
    means = results.mean(axis=0)
    stds = results.std(axis=0)
    ci95 = 1.96 * stds / np.sqrt(results.shape[0])
    return means, stds, ci95
