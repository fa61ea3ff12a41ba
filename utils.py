"""Losses, normalisation and network blocks shared by the MAML models.

Everything here is a plain function of tensors, so the same code serves the
float32 training path and the float64 reference check.
"""
import concurrent.futures
import functools
import os
import sys
import warnings

import numpy as np

# TensorFlow's own CPU convolution kernels have no gradient for grouped
# convolutions; its oneDNN kernels do. oneDNN is on by default only on some
# CPUs (Intel), so ask for it before TensorFlow is first imported; where it is
# still off, grouped_conv2d falls back to one convolution per task.
# Too late if TensorFlow is already imported: every entry point imports utils first.
TENSORFLOW_IMPORTED_FIRST = 'tensorflow' in sys.modules
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '1')

# What TensorFlow's C++ side prints while it loads and probes for a GPU on a
# machine without one: notices, and a cuInit failure logged at error level.
# TF_CPP_MIN_LOG_LEVEL cannot hide the notices (they come before its logging
# is set up) and would hide real errors with the cuInit line, so the start-up
# output is filtered line by line instead. The wording differs between
# TensorFlow versions: the list holds that of every version tested (docs/tests.md).
STARTUP_CHATTER = (
    'All log messages before absl::InitializeLog() is called',
    'oneDNN custom operations are on',
    'Could not find cuda drivers on your machine',
    'This TensorFlow binary is optimized to use available CPU instructions',
    'To enable the following instructions:',
    # 2.16: its CUDA plugins register twice, harmlessly, and it looks for TensorRT, which MAML never uses
    'Unable to register cuFFT factory: Attempting to register factory for plugin cuFFT when one has already',
    'Unable to register cuDNN factory: Attempting to register factory for plugin cuDNN when one has already',
    'Unable to register cuBLAS factory: Attempting to register factory for plugin cuBLAS when one has already',
    'TF-TRT Warning: Could not find TensorRT',
)
NO_DRIVER = 'Could not find cuda drivers on your machine'
CUINIT_FAILED = 'failed call to cuInit'


def startup_lines_to_show(lines):
    """The start-up lines worth showing: all but the known chatter.

    A failed cuInit is chatter only after TensorFlow said there is no CUDA
    driver; with a driver present it is a real failure and is shown.
    """
    shown, no_driver = [], False
    for line in lines:
        no_driver = no_driver or NO_DRIVER in line
        if any(text in line for text in STARTUP_CHATTER) or (no_driver and CUINIT_FAILED in line):
            continue
        shown.append(line)
    return shown


def import_tensorflow_quietly():
    """Import TensorFlow and find its devices with stderr (fd 2) filtered by startup_lines_to_show.

    A TF_CPP_MIN_LOG_LEVEL of the user's own turns the filter off: then
    TensorFlow prints what that level lets through, as it always does.
    Finding the devices (where cuInit runs) leaves threading configurable.
    """
    if 'TF_CPP_MIN_LOG_LEVEL' in os.environ or 'tensorflow' in sys.modules:
        import tensorflow
        return tensorflow
    import tempfile
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode='w+b') as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow
            tensorflow.config.list_physical_devices()
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode('utf-8', 'replace')
            shown = startup_lines_to_show(text.splitlines(keepends=True))
            if shown:
                sys.stderr.write(''.join(shown))
                sys.stderr.flush()
    return tensorflow


tf = import_tensorflow_quietly()

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


def batch_norm(x, beta, axes):
    """Batch norm with the statistics of this call over `axes` (training mode, always).

    Offset only, no scale, as tf.contrib.layers.batch_norm's defaults; the
    moving averages the reference kept were never used, so there are none.
    """
    mean, variance = exact_moments(x, axes)
    return (x - mean) * tf.math.rsqrt(variance + BATCH_NORM_EPSILON) + beta


def fused_batch_norm(x, beta):
    """batch_norm over all axes but the last, in TensorFlow's fused kernel (float32 only).

    The same values and first derivatives as batch_norm in a third of the
    time on miniImagenet's activations. SPEC ("Second derivatives") reports
    its second derivative inexact; with TensorFlow 2.21 in this use (training
    mode, offset only, NHWC, oneDNN on or off) it is exact to float32 rounding
    (tests/test_units.py, test_fused_batch_norm_gives_the_exact_second_derivative,
    which also catches tf.nn.moments' inexact one). It still serves only
    passes that nothing differentiates twice: the support passes of
    second-order MAML keep the formula, since the kernel measured no faster
    there (docs/log/performance-log-2026-12-02-morning.md, "Fused batch norm and the second derivative").
    """
    empty = tf.zeros([0], x.dtype)
    return tf.raw_ops.FusedBatchNormV3(x=x, scale=tf.ones_like(beta), offset=beta, mean=empty, variance=empty,
                                       epsilon=BATCH_NORM_EPSILON, exponential_avg_factor=1.0,
                                       data_format='NHWC', is_training=True)[0]


def layer_norm(x, beta, gamma, axes):
    """Normalise over `axes` (all of one example); scale and offset per channel."""
    mean, variance = exact_moments(x, axes)
    return (x - mean) * tf.math.rsqrt(variance + LAYER_NORM_EPSILON) * gamma + beta


def normalize_fc(x, norm, norm_weights, activation=tf.nn.relu):
    """Norm + activation of fc activations [tasks, examples, units].

    Batch norm takes its statistics per task (over examples), as the
    reference normalised each task's batch on its own.
    """
    if norm == 'batch_norm':
        x = batch_norm(x, norm_weights['beta'], [1])
    elif norm == 'layer_norm':
        x = layer_norm(x, norm_weights['beta'], norm_weights['gamma'], [2])
    elif norm != 'None':
        raise ValueError('norm must be one of %s, got %r' % (', '.join(NORMS), norm))
    return activation(x) if activation is not None else x


def normalize_grouped(x, num_tasks, norm, norm_weights, activation=tf.nn.relu, differentiated_twice=True):
    """Norm + activation of conv activations of a meta-batch laid out [B, H, W, tasks*channels].

    In this layout batch-norm statistics over (B, H, W) are per task and
    channel, exactly the reference's per-task batch norm. Layer norm views
    the channels as [tasks, channels] and normalises each example of each task.
    Batch norm runs in the fused kernel (float32) where the pass is not
    differentiated twice.
    """
    if norm == 'batch_norm':
        beta = tf.tile(norm_weights['beta'], [num_tasks])
        if differentiated_twice or x.dtype != tf.float32:
            x = batch_norm(x, beta, [0, 1, 2])
        else:
            x = fused_batch_norm(x, beta)
    elif norm == 'layer_norm':
        shape = tf.shape(x)
        x5 = tf.reshape(x, tf.concat([shape[:3], [num_tasks, -1]], 0))
        x = tf.reshape(layer_norm(x5, norm_weights['beta'], norm_weights['gamma'], [1, 2, 4]), shape)
    elif norm != 'None':
        raise ValueError('norm must be one of %s, got %r' % (', '.join(NORMS), norm))
    return activation(x) if activation is not None else x


def norm_param_names(norm):
    """Names of the per-channel parameters one normalisation layer owns."""
    return {'batch_norm': ('beta',), 'layer_norm': ('beta', 'gamma'), 'None': ()}[norm]


def grouped_conv2d(x, kernel, groups, strides):
    """Convolution of `groups` independent channel groups: task t's kernel sees only task t's channels.

    One grouped convolution where TensorFlow can differentiate it twice
    (float32 with oneDNN); elsewhere (float64, or CPUs without oneDNN) one
    convolution per group: the same function.
    """
    if groups == 1 or (x.dtype == tf.float32 and grouped_conv_gradients_work()):
        return tf.nn.conv2d(x, kernel, strides, 'SAME')
    return split_conv2d(x, kernel, groups, strides)


def split_conv2d(x, kernel, groups, strides):
    xs = tf.split(x, groups, axis=-1)
    ks = tf.split(kernel, groups, axis=-1)
    return tf.concat([tf.nn.conv2d(xi, ki, strides, 'SAME') for xi, ki in zip(xs, ks)], -1)


@functools.lru_cache(maxsize=None)
def grouped_conv_gradients_work():
    """Whether this TensorFlow computes first and second derivatives of a grouped
    float32 convolution, and gets them right (checked once, on a tiny case)."""
    # a fresh thread runs eagerly, outside any tf.function being traced and any tape
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        works = pool.submit(_probe_grouped_conv).result()
    if not works:
        warnings.warn('grouped convolutions are unavailable (%s): one convolution per task instead, '
                      'the same numbers but slower (2.3x on miniImagenet 5-way 1-shot)' % _no_grouped_conv_reason(),
                      stacklevel=2)
    return works


def _no_grouped_conv_reason():
    if os.environ['TF_ENABLE_ONEDNN_OPTS'] == '0':
        return 'TF_ENABLE_ONEDNN_OPTS=0'
    if TENSORFLOW_IMPORTED_FIRST:
        return 'TensorFlow was imported before utils, too late to enable oneDNN'
    return 'this TensorFlow build has no oneDNN gradient for them'


def _probe_grouped_conv():
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(2, 5, 5, 4)), tf.float32)
    kernel = tf.constant(rng.normal(size=(3, 3, 2, 6)), tf.float32)

    def derivatives(conv):
        with tf.GradientTape() as outer:
            outer.watch(kernel)
            with tf.GradientTape() as inner:
                inner.watch([x, kernel])
                y = tf.reduce_sum(tf.sin(conv(x, kernel, 2, 1)))
            dx, dk = inner.gradient(y, [x, kernel])
            z = tf.reduce_sum(dx * dx) + tf.reduce_sum(dk * dk)
        return [dx, dk, outer.gradient(z, kernel)]
    try:
        grouped = derivatives(lambda x, k, groups, strides: tf.nn.conv2d(x, k, strides, 'SAME'))
    except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError, tf.errors.NotFoundError):
        return False
    reference = derivatives(split_conv2d)
    return all(np.allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-4) for a, b in zip(grouped, reference))


def conv_block(inp, cweight, bweight, num_tasks, norm, norm_weights, max_pool, differentiated_twice=True):
    """3x3 SAME conv + bias -> norm -> ReLU, downsampling by 2, for all tasks at once.

    Downsampling is a stride-2 conv, or with max_pool a stride-1 conv followed
    by 2x2 max pooling (VALID), as in the reference.
    """
    stride = 1 if max_pool else 2
    conv_output = grouped_conv2d(inp, cweight, num_tasks, stride) + bweight
    normed = normalize_grouped(conv_output, num_tasks, norm, norm_weights, differentiated_twice=differentiated_twice)
    if max_pool:
        normed = tf.nn.max_pool2d(normed, 2, 2, 'VALID')
    return normed


## Losses, one value per task of a meta-batch ------------------------------------------

def mse(pred, label):
    """Mean squared error over all points of each task: [tasks, points, dim] -> [tasks]."""
    return tf.reduce_mean(tf.square(pred - label), axis=[1, 2])


def xent(pred, label, update_batch_size):
    """Softmax cross-entropy summed over each task's examples, divided by K -> [tasks].

    The reference returned the per-example vector divided by K and let
    tf.gradients / reduce_sum add it up; the paper's update_lr values rely on
    this scaling.
    """
    per_example = tf.nn.softmax_cross_entropy_with_logits(labels=label, logits=pred)
    return tf.reduce_sum(per_example, axis=1) / tf.cast(update_batch_size, pred.dtype)


def accuracy(pred, label):
    """Fraction of each task's examples whose arg-max prediction is the labelled class."""
    correct = tf.equal(tf.argmax(pred, -1), tf.argmax(label, -1))
    return tf.reduce_mean(tf.cast(correct, pred.dtype), axis=1)


## Evaluation statistics ----------------------------------------------------------

def confidence_summary(results):
    """Per-column mean, std (ddof 0) and 95% CI half-width 1.96 std / sqrt(n)."""
    results = np.asarray(results, dtype=np.float64)
    means = results.mean(axis=0)
    stds = results.std(axis=0)
    ci95 = 1.96 * stds / np.sqrt(results.shape[0])
    return means, stds, ci95


## tf.distribute ----------------------------------------------------------------------------

def distribution_strategy(kind, replicas=0):
    """The tf.distribute strategy of --distribute (None: one replica, no strategy).

    mirrored: this host's GPUs (the first `replicas`, or all); on a host without
    GPUs, its CPU split into `replicas` logical devices (at least 2), which
    must happen before TensorFlow runs its first op. multi_worker: the cluster
    of TF_CONFIG, one process per worker.
    """
    if not kind:
        return None
    if kind == 'multi_worker':
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_physical_devices('GPU')
    if gpus:
        names = ['/gpu:%d' % i for i in range(len(gpus))][:replicas or None]
        return tf.distribute.MirroredStrategy(names)
    cpu = tf.config.list_physical_devices('CPU')[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * max(replicas, 2))
    names = [d.name for d in tf.config.list_logical_devices('CPU')]
    return tf.distribute.MirroredStrategy(names, cross_device_ops=tf.distribute.ReductionToOneDevice())
