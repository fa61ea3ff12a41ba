"""Read the reference's TensorFlow 1 checkpoints into the TF2 model.

The reference saves with tf.train.Saver to logdir/exp_string/model<ITER>
(.index and .data-*; note: no dash, ours are model-<ITER>). Its variables live
under the variable scope 'model', named as TensorFlow 1 named them:

  conv nets   model/conv1..conv4      kernels (tf.get_variable, named)
              model/Variable,         b1..b4: unnamed tf.Variable, so TF1 numbered
              model/Variable_1..3     them in creation order (b1, b2, b3, b4)
              model/w5, model/b5      the head (named)
  fc nets     model/Variable,         every weight is an unnamed tf.Variable, created
              model/Variable_1, ...   in the order w1, b1, w2, b2, ..., so w1 is
                                      Variable, b1 Variable_1, w2 Variable_2, ...
                                      (checkpoints with named model/w1, model/b1, ...
                                      are read as well)
  norm layers model/<scope>/beta      batch_norm and layer_norm offsets; scopes
              model/<scope>/gamma     0..3 for conv blocks, 0, 2, 3, ... for fc
                                      layers; gamma with layer_norm only

The reference's Saver stores only the trainable variables, so its checkpoints
hold no optimizer state. A checkpoint saved with all variables also holds the
two Adam optimizers of the reference graph; the pretraining one is created
first: <var>/Adam and <var>/Adam_1 (m and v) with beta1_power and
beta2_power, then the meta-training one: <var>/Adam_2, <var>/Adam_3,
beta1_power_1, beta2_power_1 (TF1's name uniquification, checked by building
the reference's optimizer pair under tf.compat.v1). batch_norm's
moving_mean/moving_variance (never used: the reference always normalises with
batch statistics) and global_step are ignored if present.
"""
import math
import os
import re

import numpy as np

import utils  # noqa: F401  (before TensorFlow: it enables the oneDNN kernels)
import tensorflow as tf  # noqa: E402

SCOPE = 'model/'
REFERENCE_FILE = re.compile(r'^model(\d+)\.index$')
REFERENCE_PREFIX = re.compile(r'^model(\d+)$')
# optimizer state and unused statistics that may sit in a checkpoint saved with all variables
ADAM_SLOT = re.compile(r'^(.*)/Adam(_\d+)?$')
IGNORED = re.compile(r'(^|/)(moving_mean|moving_variance|global_step)$|^(model/)?beta[12]_power(_\d+)?$')
# (m slot, v slot, beta1 power, beta2 power) of the reference's two Adam optimizers
ADAM_NAMES = {'pretrain': ('Adam', 'Adam_1', 'beta1_power', 'beta2_power'),
              'metatrain': ('Adam_2', 'Adam_3', 'beta1_power_1', 'beta2_power_1')}


class CheckpointMismatch(ValueError):
    """The checkpoint's variables do not fit the model the flags describe."""


## Finding reference checkpoints -----------------------------------------------------------------

def is_reference_checkpoint(path):
    """True for a path prefix in the reference's naming, model<ITER> (ours: model-<ITER>)."""
    return bool(REFERENCE_PREFIX.match(os.path.basename(path)))


def reference_iteration(path):
    """The iteration a reference checkpoint was saved after, from its name model<ITER>."""
    match = REFERENCE_PREFIX.match(os.path.basename(path))
    if not match:
        raise ValueError('not a reference checkpoint name (model<ITER>): %s' % path)
    return int(match.group(1))


def find_reference_checkpoints(directory):
    """{iteration: path prefix} of the reference checkpoints (model<ITER>.index) in directory."""
    if not os.path.isdir(directory):
        return {}
    found = {}
    for name in os.listdir(directory):
        match = REFERENCE_FILE.match(name)
        if match:
            found[int(match.group(1))] = os.path.join(directory, name[:-len('.index')])
    return found


## Names ------------------------------------------------------------------------------------------

def _is_conv(model):
    return model.forward == model.forward_conv


def weight_order(model):
    """Our weight names in the order the reference created its variables."""
    if _is_conv(model):
        return ['conv1', 'b1', 'conv2', 'b2', 'conv3', 'b3', 'conv4', 'b4', 'w5', 'b5']
    layers = len(model.dim_hidden) + 1
    return [name for i in range(layers) for name in ('w%d' % (i + 1), 'b%d' % (i + 1))]


def reference_names(model, fc_named=False):
    """{our variable name: the reference's checkpoint name} for the model's configuration.

    fc_named: read fc weights as model/w1, model/b1, ... instead of the
    creation-order names model/Variable, model/Variable_1, ...
    """
    names = {}
    unnamed = 0
    for ours in weight_order(model):
        if _is_conv(model) and not re.match(r'^b[1-4]$', ours) or (not _is_conv(model) and fc_named):
            names[ours] = SCOPE + ours
        else:
            names[ours] = SCOPE + ('Variable' if unnamed == 0 else 'Variable_%d' % unnamed)
            unnamed += 1
    for ours in model.norm_weights:  # norm/<scope>/<param>
        names[ours] = SCOPE + ours[len('norm/'):]
    return names


def _best_names(model, shapes):
    """The naming scheme that the checkpoint follows best (fc nets have two)."""
    if _is_conv(model):
        return reference_names(model)
    candidates = [reference_names(model), reference_names(model, fc_named=True)]
    return max(candidates, key=lambda names: sum(n in shapes for n in names.values()))


def _model_variables(model):
    return [name for name in weight_order(model)] + list(model.norm_weights)


## What the checkpoint says about the flags ----------------------------------------------------------

def _config_summary(config):
    return ', '.join('%s=%s' % (k, getattr(config, k)) for k in
                     ('datasource', 'num_classes', 'conv', 'num_filters', 'max_pool', 'norm'))


def flag_hints(model, shapes):
    """Lines naming the flags that probably differ between the checkpoint and the model."""
    config = model.config
    hints = []

    def differ(flag, value, ours, why):
        if value is not None and str(value) != str(ours):
            hints.append('--%s=%s (%s; the flags give %s)' % (flag, value, why, ours))

    kernels = shapes.get(SCOPE + 'conv1')
    if kernels is not None:
        filters, channels = kernels[3], kernels[2]
        differ('conv', True, config.conv, 'the checkpoint holds conv kernels model/conv1..4')
        differ('num_filters', filters, config.num_filters,
               'model/conv1 has %d filters' % filters)
        head = shapes.get(SCOPE + 'w5')
        source = None
        if channels == 3:
            source = 'miniimagenet'
        elif channels == 1:
            source = 'omniglot'
        if head is not None and len(head) == 2:
            if head[0] == filters * 25:
                source = 'miniimagenet'
            elif head[0] == filters:
                source = 'omniglot'
            differ('num_classes', head[1], config.num_classes, 'model/w5 has %d outputs' % head[1])
        differ('datasource', source, config.datasource,
               'model/conv1 takes %d input channel(s)%s' % (
                   channels, '' if head is None else ' and model/w5 is %s' % list(head)))
    else:
        # fc: the weight matrices in creation order (unnamed) or by name
        matrices = [shapes[n] for n in sorted(shapes, key=_variable_index)
                    if re.match(r'^model/Variable(_\d+)?$', n) and len(shapes[n]) == 2]
        if not matrices:
            matrices = [shapes[SCOPE + 'w%d' % i] for i in range(1, 20) if SCOPE + 'w%d' % i in shapes]
        if matrices:
            differ('conv', False, config.conv if config.datasource != 'sinusoid' else False,
                   'the checkpoint holds an fc net')
            dim_in, hidden = matrices[0][0], [m[1] for m in matrices[:-1]]
            source = {1: 'sinusoid', 3: 'sinusoid', 784: 'omniglot', 21168: 'miniimagenet'}.get(dim_in)
            differ('datasource', source, config.datasource,
                   'the first layer takes %d inputs, hidden layers %s' % (dim_in, hidden))
            if dim_in == 3 or (dim_in == 1 and config.baseline == 'oracle'):
                differ('baseline', 'oracle' if dim_in == 3 else None, config.baseline,
                       'the first layer takes %d inputs' % dim_in)
            if source in ('omniglot', 'miniimagenet'):
                differ('num_classes', matrices[-1][1], config.num_classes,
                       'the last layer has %d outputs' % matrices[-1][1])
    norm_params = {n.rsplit('/', 1)[1] for n in shapes if re.match(r'^model/\d+/(beta|gamma)$', n)}
    norm = 'layer_norm' if 'gamma' in norm_params else 'batch_norm' if 'beta' in norm_params else 'None'
    differ('norm', norm, config.norm, 'the checkpoint holds %s' % (
        'beta and gamma per layer' if norm == 'layer_norm' else
        'beta only per layer' if norm == 'batch_norm' else 'no normalisation parameters'))
    return hints


def _variable_index(name):
    match = re.match(r'^model/Variable(?:_(\d+))?$', name)
    return int(match.group(1) or 0) if match else -1


## Checking and loading -----------------------------------------------------------------------------

def match(model, path):
    """{our name: checkpoint name} after checking every name and shape; raises CheckpointMismatch."""
    reader = tf.train.load_checkpoint(path)
    shapes = {name: tuple(shape) for name, shape in reader.get_variable_to_shape_map().items()}
    names = _best_names(model, shapes)
    ours = model.named_variables()
    missing, mismatched = [], []
    for mine in _model_variables(model):
        theirs = names[mine]
        want = tuple(ours[mine].shape)
        if theirs not in shapes:
            missing.append('%s (our %s, shape %s)' % (theirs, mine, list(want)))
        elif shapes[theirs] != want:
            mismatched.append('%s (our %s): checkpoint %s, model %s'
                              % (theirs, mine, list(shapes[theirs]), list(want)))
    used = set(names.values())
    unexpected = ['%s %s' % (n, list(shapes[n])) for n in sorted(shapes)
                  if n not in used and not IGNORED.search(n) and not ADAM_SLOT.match(n)]
    if missing or mismatched or unexpected:
        lines = mismatch_lines('Reference checkpoint %s does not match the model the flags describe (%s).'
                               % (path, _config_summary(model.config)), missing, unexpected, mismatched)
        hints = flag_hints(model, shapes)
        if hints:
            lines.append('  flags that probably differ:')
            lines.extend('    ' + h for h in hints)
        else:
            lines.append('  (no flag explains the difference: is this a checkpoint of the reference MAML?)')
        raise CheckpointMismatch('\n'.join(lines))
    return names, reader, shapes


def mismatch_lines(title, missing, unexpected, mismatched):
    """The lines of a mismatch message: the title, then each non-empty list under its heading."""
    lines = [title]
    for heading, items in (('missing from the checkpoint', missing),
                           ('unexpected in the checkpoint', unexpected),
                           ('shape mismatch', mismatched)):
        if items:
            lines.append('  %s (%d):' % (heading, len(items)))
            lines.extend('    ' + item for item in items)
    return lines


class LoadResult:
    """What load_reference_checkpoint did: iteration, names loaded, optimizer notes."""

    def __init__(self, path, iteration, names):
        self.path, self.iteration, self.names = path, iteration, names
        self.optimizers = {}  # 'pretrain'/'metatrain' -> Adam step count restored
        self.warnings = []


def load_reference_checkpoint(model, path, optimizer_state=False):
    """Load a reference TF1 checkpoint (path prefix model<ITER>) into model.

    Every variable of the model must be in the checkpoint with its shape, and
    the checkpoint may hold nothing else but optimizer state and unused
    batch-norm statistics; otherwise CheckpointMismatch lists the missing,
    unexpected and mis-shaped names and the flags that probably differ.
    With optimizer_state (resuming training), the Adam moments and step
    counts are restored where the checkpoint holds them, with a warning where
    it does not.
    """
    names, reader, shapes = match(model, path)
    model.assign({mine: reader.get_tensor(theirs) for mine, theirs in names.items()})
    iteration = reference_iteration(path) if is_reference_checkpoint(path) else None
    result = LoadResult(path, iteration, names)
    if optimizer_state:
        _load_adam(model, reader, shapes, names, result)
    return result


def _load_adam(model, reader, shapes, names, result):
    order = model.variable_names
    for which, (m_slot, v_slot, power1, power2) in ADAM_NAMES.items():
        optimizer = getattr(model, which + '_optimizer')
        wanted = {mine: (names[mine] + '/' + m_slot, names[mine] + '/' + v_slot) for mine in order}
        present = [n for pair in wanted.values() for n in pair if n in shapes]
        powers = [_find_power(shapes, p) for p in (power1, power2)]
        if not present and powers == [None, None]:
            continue
        absent = [n for pair in wanted.values() for n in pair if n not in shapes]
        absent += [p for p, found in zip((power1, power2), powers) if found is None]
        if absent:
            result.warnings.append(
                'the checkpoint holds only part of the reference\'s %s Adam state (missing: %s); '
                'our %s Adam starts from zero moments and step 1'
                % (which, ', '.join(absent[:6]) + (', ...' if len(absent) > 6 else ''), which))
            continue
        for i, mine in enumerate(order):
            optimizer.m[i].assign(reader.get_tensor(wanted[mine][0]).astype(optimizer.m[i].dtype.as_numpy_dtype))
            optimizer.v[i].assign(reader.get_tensor(wanted[mine][1]).astype(optimizer.v[i].dtype.as_numpy_dtype))
        steps = adam_steps(float(reader.get_tensor(powers[0])), float(reader.get_tensor(powers[1])),
                           optimizer.beta_1, optimizer.beta_2)
        optimizer.iterations.assign(steps)
        result.optimizers[which] = steps
    if 'metatrain' not in result.optimizers:
        result.warnings.append(
            'no meta-training Adam state in %s (the reference\'s Saver stores only the trainable '
            'variables); the weights are loaded and Adam starts from zero moments and step 1, '
            'as the reference\'s own resume does' % result.path)


def _find_power(shapes, name):
    for candidate in (name, SCOPE + name):
        if candidate in shapes:
            return candidate
    return None


def adam_steps(beta1_power, beta2_power, beta_1=0.9, beta_2=0.999):
    """Adam steps taken, from TF1's beta powers (beta^(steps+1) after `steps` updates).

    beta1_power underflows float32 after a few hundred steps; beta2_power
    lasts to about 88,000. Past both, the bias corrections are 1 in float32
    whatever the count, and the count where beta2_power underflows is returned.
    """
    if beta1_power > 1e-30:
        return max(0, int(round(math.log(beta1_power) / math.log(beta_1))) - 1)
    if beta2_power > 0:
        return max(0, int(round(math.log(beta2_power) / math.log(beta_2))) - 1)
    return int(math.ceil(math.log(np.finfo(np.float32).tiny) / math.log(beta_2)))
