"""Model-Agnostic Meta-Learning (Finn, Abbeel and Levine, ICML 2017) in TensorFlow 2.

The networks are functions of a dict of weights (forward_fc, forward_conv), so
the inner loop can run them on fast weights; nested tf.GradientTape gives the
second-order meta-gradient, or the first-order one with stop_grad.

All tasks of a meta-batch run at once. The weights are tiled into one copy per
task ("task-batched": conv kernels [3, 3, in, tasks*out] used as a grouped
convolution, fc matrices [tasks, in, out]); the gradient of the summed task
losses with respect to the tiled copy is each task's own gradient, so one
inner step adapts every task. Per-task batch norm falls out of the layout.
This replaces the reference's map_fn over tasks: the same function, a few
large ops instead of thousands of small ones.

How the steps are compiled, split over replicas and run over the test's
tasks is execution.py's (class Execution, which MAML inherits).
"""
import contextlib
import dataclasses
import math

import numpy as np

import utils  # noqa: F401  (first: it sets up TensorFlow's CPU kernels before the import below)
import tensorflow as tf  # noqa: E402

import special_grads  # noqa: F401  (kept for the reference's layout; see its docstring)
from execution import Execution
from utils import accuracy, conv_block, mse, normalize_fc, norm_param_names, xent

FC_HIDDEN_SINUSOID = [40, 40]
FC_HIDDEN_IMAGES = [256, 128, 64, 64]
CLIP_MINIIMAGENET = 10.0  # element-wise meta-gradient clipping of the reference


@dataclasses.dataclass
class ModelConfig:
    """The flags the model depends on, with the reference's defaults."""
    datasource: str = 'sinusoid'
    num_classes: int = 5
    baseline: str = None
    meta_lr: float = 0.001
    update_batch_size: int = 5
    update_lr: float = 0.001
    num_updates: int = 1
    norm: str = 'batch_norm'
    num_filters: int = 64
    conv: bool = True
    max_pool: bool = False
    stop_grad: bool = False

    @classmethod
    def from_flags(cls, flags):
        return cls(**{f.name: getattr(flags, f.name) for f in dataclasses.fields(cls)})


class Adam(tf.Module):
    """Adam as TF1's AdamOptimizer (and Keras 3) define it.

    The bias corrections fold into the step size and epsilon is added to
    sqrt(v) uncorrected. Written out so that the update is exactly the
    reference's in float32 and float64 alike, and its state (m, v, step) is
    plain variables that tf.train.Checkpoint saves with the model.
    """

    def __init__(self, variables, learning_rate, beta_1=0.9, beta_2=0.999, epsilon=1e-8, name=None):
        super().__init__(name=name)
        self.learning_rate = learning_rate
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon
        self.iterations = tf.Variable(0, dtype=tf.int64, trainable=False, name='iterations')
        self.m = [tf.Variable(tf.zeros_like(v), trainable=False, name='m') for v in variables]
        self.v = [tf.Variable(tf.zeros_like(v), trainable=False, name='v') for v in variables]

    def apply_gradients(self, grads, variables):
        dtype = variables[0].dtype
        t = tf.cast(self.iterations + 1, dtype)
        lr_t = self.learning_rate * tf.sqrt(1.0 - self.beta_2 ** t) / (1.0 - self.beta_1 ** t)
        for g, var, m, v in zip(grads, variables, self.m, self.v):
            m.assign(self.beta_1 * m + (1.0 - self.beta_1) * g)
            v.assign(self.beta_2 * v + (1.0 - self.beta_2) * tf.square(g))
            var.assign_sub(lr_t * m / (tf.sqrt(v) + self.epsilon))
        self.iterations.assign_add(1)


class MAML(Execution, tf.Module):
    """The meta-learner: weights, norm parameters, inner loop and meta-update.

    dim_input/dim_output as the reference; test_num_updates is how many inner
    steps are recorded for reporting (only step num_updates is trained on).
    The steps users call (metatrain_step, evaluate, evaluate_tasks, ...)
    are Execution's: these methods compiled, over replicas where asked.
    """

    def __init__(self, dim_input=1, dim_output=1, test_num_updates=5, config=None,
                 dtype=tf.float32, seed=None):
        super().__init__(name='model')
        self.config = config = config or ModelConfig()
        self.dim_input, self.dim_output = dim_input, dim_output
        self.test_num_updates = test_num_updates
        self.num_steps = max(test_num_updates, config.num_updates)
        self.update_lr = config.update_lr
        self.dtype = dtype
        self.classification = config.datasource in ('omniglot', 'miniimagenet')
        self._rng = np.random.default_rng(seed)
        if config.datasource == 'sinusoid':
            self.dim_hidden = FC_HIDDEN_SINUSOID
            self.forward, construct = self.forward_fc, self.construct_fc_weights
        elif self.classification:
            self.channels = 3 if config.datasource == 'miniimagenet' else 1
            self.img_size = int(round(math.sqrt(dim_input / self.channels)))
            if config.conv:
                self.dim_hidden = config.num_filters
                self.forward, construct = self.forward_conv, self.construct_conv_weights
            else:
                self.dim_hidden = FC_HIDDEN_IMAGES
                self.forward, construct = self.forward_fc, self.construct_fc_weights
        else:
            raise ValueError('Unrecognized data source: %r' % config.datasource)
        self.weights = {name: tf.Variable(value, name=name) for name, value in construct().items()}
        self.norm_weights = {name: tf.Variable(value, name=name.replace('/', '_'))
                             for name, value in self.construct_norm_weights().items()}
        self.variables_list = list(self.weights.values()) + list(self.norm_weights.values())
        self.variable_names = list(self.weights) + list(self.norm_weights)
        self.pretrain_optimizer = Adam(self.variables_list, config.meta_lr, name='pretrain_adam')
        self.metatrain_optimizer = Adam(self.variables_list, config.meta_lr, name='metatrain_adam')

    ## Initialisation -----------------------------------------------------------

    def _truncated_normal(self, shape, stddev):
        """Normal draws re-drawn until within two standard deviations (tf.truncated_normal)."""
        values = self._rng.standard_normal(shape)
        outside = np.abs(values) > 2.0
        while outside.any():
            values[outside] = self._rng.standard_normal(int(outside.sum()))
            outside = np.abs(values) > 2.0
        return (values * stddev).astype(self.dtype.as_numpy_dtype)

    def _glorot_uniform(self, shape):
        """Xavier/Glorot uniform; conv kernels count the receptive field in both fans."""
        receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
        fan_in, fan_out = shape[-2] * receptive, shape[-1] * receptive
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        return self._rng.uniform(-limit, limit, shape).astype(self.dtype.as_numpy_dtype)

    def _zeros(self, shape):
        return np.zeros(shape, dtype=self.dtype.as_numpy_dtype)

    def construct_fc_weights(self):
        """w1..wL+1 truncated normal (stddev 0.01), biases zero."""
        sizes = [self.dim_input] + list(self.dim_hidden) + [self.dim_output]
        weights = {}
        for i in range(len(sizes) - 1):
            weights['w%d' % (i + 1)] = self._truncated_normal([sizes[i], sizes[i + 1]], 0.01)
            weights['b%d' % (i + 1)] = self._zeros([sizes[i + 1]])
        return weights

    def construct_conv_weights(self):
        """Four 3x3 conv kernels (Glorot uniform), zero biases, and the head w5/b5."""
        channels, filters = self.channels, self.dim_hidden
        weights = {}
        for i in range(4):
            weights['conv%d' % (i + 1)] = self._glorot_uniform([3, 3, channels if i == 0 else filters, filters])
            weights['b%d' % (i + 1)] = self._zeros([filters])
        if self.config.datasource == 'miniimagenet':
            # flattened 5x5 feature map (84 -> 42 -> 21 -> 10 -> 5 with max pooling)
            weights['w5'] = self._glorot_uniform([filters * 5 * 5, self.dim_output])
        else:
            # plain normal with stddev 1 (tf.random_normal), not truncated, not Glorot
            weights['w5'] = self._rng.standard_normal([filters, self.dim_output]).astype(
                self.dtype.as_numpy_dtype)
        weights['b5'] = self._zeros([self.dim_output])
        return weights

    def norm_scopes(self):
        """The reference's variable scopes of the norm layers, with their widths."""
        if self.forward == self.forward_conv:
            return [(str(i), self.dim_hidden) for i in range(4)]
        # fc: the first hidden layer's scope is '0', the later ones 'i+1'
        return [('0' if i == 0 else str(i + 1), width) for i, width in enumerate(self.dim_hidden)]

    def construct_norm_weights(self):
        """Norm offsets (zeros) and scales (ones), named 'norm/<scope>/<param>'.

        They are meta-learned by the outer optimizer but not adapted by the inner loop.
        """
        params = {}
        for scope, width in self.norm_scopes():
            for param in norm_param_names(self.config.norm):
                init = np.ones if param == 'gamma' else np.zeros
                params['norm/%s/%s' % (scope, param)] = init([width], dtype=self.dtype.as_numpy_dtype)
        return params

    def _norm(self, scope):
        prefix = 'norm/%s/' % scope
        return {k[len(prefix):]: v for k, v in self.norm_weights.items() if k.startswith(prefix)}

    def tile_weights(self, weights, num_tasks):
        """One copy of the shared weights per task, in the task-batched layout."""
        tiled = {}
        for name, w in weights.items():
            if self.forward == self.forward_conv and name.startswith('conv'):
                tiled[name] = tf.tile(w, [1, 1, 1, num_tasks])
            elif self.forward == self.forward_conv and name in ('b1', 'b2', 'b3', 'b4'):
                tiled[name] = tf.tile(w, [num_tasks])
            else:
                tiled[name] = tf.tile(w[None], [num_tasks] + [1] * len(w.shape))
        return tiled

    ## Networks (inputs [tasks, examples, dim], task-batched weights) ----------------------------

    def forward_fc(self, inp, weights, differentiated_twice=True):
        """Fully connected net: (matmul + bias -> norm -> ReLU) per hidden layer, linear output.

        differentiated_twice: as forward_conv's (unused: the fc layers are small).
        """
        hidden = inp
        scopes = [scope for scope, _ in self.norm_scopes()]
        for i, scope in enumerate(scopes):
            hidden = tf.matmul(hidden, weights['w%d' % (i + 1)]) + weights['b%d' % (i + 1)][:, None, :]
            hidden = normalize_fc(hidden, self.config.norm, self._norm(scope))
        last = len(scopes) + 1
        return tf.matmul(hidden, weights['w%d' % last]) + weights['b%d' % last][:, None, :]

    def forward_conv(self, inp, weights, differentiated_twice=True):
        """Four conv blocks, then the head: spatial mean (Omniglot) or flatten (miniImagenet).

        The tasks travel side by side in the channel axis: [B, H, W, tasks*channels].
        differentiated_twice=False promises that no second derivative of this
        pass is taken, which lets batch norm use the fused kernel.
        """
        num_tasks, size, channels = inp.shape[0], self.img_size, self.channels
        hidden = tf.reshape(inp, [num_tasks, -1, size, size, channels])
        hidden = tf.reshape(tf.transpose(hidden, [1, 2, 3, 0, 4]), [-1, size, size, num_tasks * channels])
        for i in range(4):
            hidden = conv_block(hidden, weights['conv%d' % (i + 1)], weights['b%d' % (i + 1)], num_tasks,
                                self.config.norm, self._norm(str(i)), self.config.max_pool, differentiated_twice)
        if self.config.datasource == 'miniimagenet':
            _, h, w, _ = hidden.shape
            hidden = tf.reshape(hidden, [-1, h, w, num_tasks, self.dim_hidden])
            hidden = tf.reshape(tf.transpose(hidden, [3, 0, 1, 2, 4]), [num_tasks, -1, h * w * self.dim_hidden])
        else:
            hidden = tf.reduce_mean(hidden, [1, 2])
            hidden = tf.transpose(tf.reshape(hidden, [-1, num_tasks, self.dim_hidden]), [1, 0, 2])
        return tf.matmul(hidden, weights['w5']) + weights['b5'][:, None, :]

    def loss_func(self, pred, label):
        """One loss per task: [tasks]."""
        if self.classification:
            return xent(pred, label, self.config.update_batch_size)
        return mse(pred, label)

    ## Inner loop -------------------------------------------------------------------

    def inner_update(self, fast_weights, inputa, labela, stop_grad, recorded=True):
        """One gradient step on every task's support set.

        Returns (new fast weights, outputs, per-task losses). The step is taken
        under its own tape; an enclosing tape records it, so the meta-gradient
        flows through the inner gradient (second order) unless stop_grad
        treats that gradient as a constant (first order). recorded=False
        says that no enclosing tape records the step.
        """
        with tf.GradientTape(watch_accessed_variables=False) as inner_tape:
            inner_tape.watch(list(fast_weights.values()))
            output = self.forward(inputa, fast_weights, differentiated_twice=recorded and not stop_grad)
            losses = self.loss_func(output, labela)
            # each task's loss depends on its own copy only: these are per-task gradients
            total = tf.reduce_sum(losses)
        grads = inner_tape.gradient(total, fast_weights)
        if stop_grad:
            grads = {k: tf.stop_gradient(g) for k, g in grads.items()}
        new_weights = {k: fast_weights[k] - self.update_lr * grads[k] for k in fast_weights}
        return new_weights, output, losses

    def adapt(self, inputa, inputb, labela, labelb, num_steps, outer_tape=None, record_all=True):
        """Adapt to every task; the query losses (and accuracies) after each step.

        Steps beyond the training num_updates are only reported, so when an
        outer tape is given they run with it paused: they cost no tape memory
        and contribute nothing to the meta-gradient. With record_all False the
        query set is run only after the last step (the meta-loss), not after
        the others: an ordinary training iteration needs nothing else, and
        for miniImagenet's 75 queries those forward passes were most of the
        work. The skipped steps' entries are None.
        """
        fast_weights = self.tile_weights(self.weights, inputa.shape[0])
        outputa = lossa = None
        lossesb, outputsb = [], []
        for step in range(num_steps):
            pause = outer_tape is not None and step >= self.config.num_updates
            with outer_tape.stop_recording() if pause else contextlib.nullcontext():
                fast_weights, output, loss = self.inner_update(
                    fast_weights, inputa, labela, self.config.stop_grad or pause, recorded=outer_tape is not None)
                if step == 0:
                    outputa, lossa = output, loss
                if record_all or step == num_steps - 1:
                    outputb = self.forward(inputb, fast_weights, differentiated_twice=False)
                    outputsb.append(outputb)
                    lossesb.append(self.loss_func(outputb, labelb))
                else:
                    outputsb.append(None)
                    lossesb.append(None)
        if num_steps == 0:
            outputa = self.forward(inputa, fast_weights, differentiated_twice=False)
            lossa = self.loss_func(outputa, labela)
        result = {'lossa': lossa, 'lossesb': lossesb}
        if self.classification:
            result['accuracya'] = accuracy(outputa, labela)
            result['accuraciesb'] = [None if o is None else accuracy(o, labelb) for o in outputsb]
        return result

    def metabatch(self, inputa, inputb, labela, labelb, num_steps, outer_tape=None, record_all=True,
                  meta_batch_size=None):
        """Totals over the meta-batch: sums over tasks / meta-batch size, as the reference.

        meta_batch_size: the divisor, when these tasks are one replica's share of a larger
        meta-batch (the replicas' totals then add up to the meta-batch's).
        """
        tasks = self.adapt(inputa, inputb, labela, labelb, num_steps, outer_tape, record_all)
        meta_batch_size = tf.cast(meta_batch_size or inputa.shape[0], self.dtype)

        def total(value):
            return None if value is None else tf.reduce_sum(value) / meta_batch_size

        out = {'total_loss1': total(tasks['lossa']),
               'total_losses2': [total(v) for v in tasks['lossesb']]}
        if self.classification:
            out['total_accuracy1'] = total(tasks['accuracya'])
            out['total_accuracies2'] = [total(v) for v in tasks['accuraciesb']]
        return out

    ## Outer loop --------------------------------------------------------------------------

    def meta_gradients(self, inputa, inputb, labela, labelb, num_steps, record_all=True, meta_batch_size=None):
        """Results of the meta-batch and the gradient of the step-num_updates query loss."""
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(self.variables_list)
            out = self.metabatch(inputa, inputb, labela, labelb, num_steps, tape, record_all, meta_batch_size)
            meta_loss = out['total_losses2'][self.config.num_updates - 1]
        grads = tape.gradient(meta_loss, self.variables_list,
                              unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return out, grads

    def meta_update(self, grads):
        """The meta-batch's update of the weights: Adam on the (clipped) meta-gradient."""
        self.metatrain_optimizer.apply_gradients(self.clip(grads), self.variables_list)

    def clip(self, grads):
        if self.config.datasource == 'miniimagenet':
            return [tf.clip_by_value(g, -CLIP_MINIIMAGENET, CLIP_MINIIMAGENET) for g in grads]
        return grads

    def pretrain_update(self, inputa, inputb, labela, labelb, num_steps):
        """Plain multi-task training: Adam on the pre-update support loss."""
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(self.variables_list)
            out = self.metabatch(inputa, inputb, labela, labelb, num_steps, outer_tape=tape)
        grads = tape.gradient(out['total_loss1'], self.variables_list,
                              unconnected_gradients=tf.UnconnectedGradients.ZERO)
        self.pretrain_optimizer.apply_gradients(grads, self.variables_list)
        return out

    ## Weights in and out -------------------------------------------------------------------

    def named_variables(self):
        return dict(zip(self.variable_names, self.variables_list))

    def assign(self, values):
        """Set variables from {name: array}; every name must exist with the right shape."""
        variables = self.named_variables()
        for name, value in values.items():
            var = variables[name]
            if tuple(var.shape) != tuple(np.shape(value)):
                raise ValueError('%s: shape %s does not match the model\'s %s'
                                 % (name, np.shape(value), tuple(var.shape)))
            var.assign(np.asarray(value, dtype=self.dtype.as_numpy_dtype))

