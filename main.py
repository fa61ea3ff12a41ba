"""Train and test MAML (Finn, Abbeel and Levine, ICML 2017) in TensorFlow 2.

Usage (the reference's command lines; docs/experiments.md lists all of them):
    10-shot sinusoid:
        python main.py --datasource=sinusoid --logdir=logs/sine/ --metatrain_iterations=70000 --norm=None --update_batch_size=10
    5-way 1-shot Omniglot:
        python main.py --datasource=omniglot --metatrain_iterations=60000 --meta_batch_size=32 --update_batch_size=1 --update_lr=0.4 --num_updates=1 --logdir=logs/omniglot5way/
    5-way 1-shot miniImagenet:
        python main.py --datasource=miniimagenet --metatrain_iterations=60000 --meta_batch_size=4 --update_batch_size=1 --update_lr=0.01 --num_updates=5 --num_classes=5 --logdir=logs/miniimagenet1shot/ --num_filters=32 --max_pool=True
    Evaluate: add --train=False (and --test_set=True for the test split).
"""
import concurrent.futures
import contextlib
import csv
import glob
import json
import math
import os
import pickle
import re
import signal
import sys
import time

import numpy as np
from absl import app, flags, logging

FLAGS = flags.FLAGS

## Dataset/method options
flags.DEFINE_string('datasource', 'sinusoid', 'sinusoid or omniglot or miniimagenet')
flags.DEFINE_integer('num_classes', 5, 'number of classes used in classification (e.g. 5-way classification).')
flags.DEFINE_string('baseline', None, 'oracle, or None (oracle: the task parameters are an input; sinusoid only)')

## Training options
flags.DEFINE_integer('pretrain_iterations', 0, 'number of pre-training iterations.')
flags.DEFINE_integer('metatrain_iterations', 15000, 'number of metatraining iterations.')
flags.DEFINE_integer('meta_batch_size', 25, 'number of tasks sampled per meta-update')
flags.DEFINE_float('meta_lr', 0.001, 'the base learning rate of the meta-optimizer (Adam)')
flags.DEFINE_integer('update_batch_size', 5, 'number of examples used for inner gradient update (K for K-shot learning).')
flags.DEFINE_float('update_lr', 1e-3, 'step size alpha for inner gradient update.')
flags.DEFINE_integer('num_updates', 1, 'number of inner gradient updates during training.')

## Model options
flags.DEFINE_string('norm', 'batch_norm', 'batch_norm, layer_norm, or None')
flags.DEFINE_integer('num_filters', 64, 'number of filters for conv nets -- 32 for miniimagenet, 64 for omniglot.')
flags.DEFINE_bool('conv', True, 'whether or not to use a convolutional network, only applicable in some cases')
flags.DEFINE_bool('max_pool', False, 'whether or not to use max pooling rather than strided convolutions')
flags.DEFINE_bool('stop_grad', False, 'if True, do not use second derivatives in meta-optimization (first-order MAML)')

## Logging, saving, and testing options
flags.DEFINE_bool('log', True, 'if false, do not log summaries, for debugging code.')
flags.DEFINE_string('logdir', '/tmp/data', 'directory for summaries, checkpoints and test results '
                    '(the default is the reference\'s; give your own, e.g. logs/NAME)')
flags.DEFINE_bool('resume', True, 'resume training if there is a model available')
flags.DEFINE_bool('train', True, 'True to train, False to test.')
flags.DEFINE_integer('test_iter', -1, 'iteration to load model (-1 for latest model)')
flags.DEFINE_bool('test_set', False, 'True to test on the test set, False for the validation set.')
flags.DEFINE_integer('train_update_batch_size', -1, 'number of examples used for gradient update during training (use if you want to test with a different number).')
flags.DEFINE_float('train_update_lr', -1, 'step size alpha of the inner gradient update during training (use if you want to test with a different value).')

## Options of this reproduction (not in the reference)
flags.DEFINE_string('data_dir', 'data', 'folder holding omniglot_resized/ and miniImagenet/ (the reference: ./data); '
                    'your own images: the --out of python -m data.prepare folder, with --datasource=miniimagenet')
flags.DEFINE_integer('seed', 0, 'seed of the weight initialisation and of the task streams')
flags.DEFINE_integer('test_tasks_per_batch', 0, '--train=False evaluates this many test tasks at once '
                     'on each core (0: the measured choice for the data set, main.TEST_TASKS_PER_BATCH; 1: one '
                     'at a time, as the reference). The tasks are the same either way, and so are their '
                     'numbers up to float32 rounding.')
flags.DEFINE_string('distribute', None, 'tf.distribute over several replicas, the meta-batch\'s tasks shared '
                    'among them: mirrored (this host\'s GPUs, or --replicas logical devices of its CPU) or '
                    'multi_worker (one process per worker, the cluster in TF_CONFIG). Unset: one process, '
                    'no strategy.')
flags.DEFINE_integer('replicas', 0, 'with --distribute=mirrored: how many replicas (0: every GPU; on a host '
                     'without GPUs, 2 logical CPU devices)')

SUMMARY_INTERVAL = 100
SAVE_INTERVAL = 1000
NUM_TEST_POINTS = 600
TEST_NUM_UPDATES = 10
# Test tasks evaluated at once on each core by default (--test_tasks_per_batch=0), the fastest
# measured (docs/log/performance-log-2026-12-02-morning.md, "Task-batched test"; CPU seconds for 600 tasks on one core):
# sinusoid all 600 (18x faster than one at a time: one small graph run instead of 600);
# Omniglot 10 (1.18x against one task on TensorFlow's own kernels; 25 and 50 about as fast,
# 100 and 600 slower, 600 holds 2.6 GB); miniImagenet 1, one at a time, because its grouped
# convolutions are slower per FLOP than one task's plain ones (2, 5, 10, 25 tasks: 1.1-1.3x slower).
TEST_TASKS_PER_BATCH = {'sinusoid': 600, 'omniglot': 10, 'miniimagenet': 1}


def fill_train_flags(f):
    """The training-time K and alpha, which name the run's folder: the test's own unless given."""
    if f.train_update_batch_size == -1:
        f.train_update_batch_size = f.update_batch_size
    if f.train_update_lr == -1:
        f.train_update_lr = f.update_lr


def experiment_name(f):
    """exp_string of the reference: the folder under logdir of one configuration."""
    name = 'cls_%s.mbs_%s.ubs_%s.numstep%s.updatelr%s' % (
        f.num_classes, f.meta_batch_size, f.train_update_batch_size, f.num_updates, f.train_update_lr)
    if f.num_filters != 64:
        name += 'hidden' + str(f.num_filters)
    if f.max_pool:
        name += 'maxpool'
    if f.stop_grad:
        name += 'stopgrad'
    if f.baseline:
        name += f.baseline
    name += {'batch_norm': 'batchnorm', 'layer_norm': 'layernorm', 'None': 'nonorm'}[f.norm]
    return name


def recorded_steps(datasource, train):
    """Inner steps the model reports: sinusoid 5/10, omniglot 10, miniimagenet 1/10."""
    if train:
        return {'sinusoid': 5, 'omniglot': 10, 'miniimagenet': 1}[datasource]
    return TEST_NUM_UPDATES


def samples_per_class(datasource, update_batch_size, train):
    """2K per class (K support + K query); miniimagenet training uses K + 15."""
    if datasource == 'miniimagenet' and train:
        from data_generator import MINIIMAGENET_QUERIES
        return update_batch_size + MINIIMAGENET_QUERIES
    return 2 * update_batch_size


def print_intervals(datasource):
    """(print, validation) intervals: 1000/5000 for sinusoid, 100/500 for images."""
    return (1000, 5000) if datasource == 'sinusoid' else (100, 500)


## Flag validation ---------------------------------------------------------------------------

DATASOURCES = ('sinusoid', 'omniglot', 'miniimagenet')
NORMS = ('batch_norm', 'layer_norm', 'None')
BASELINES = (None, 'oracle')
DISTRIBUTE_KINDS = ('mirrored', 'multi_worker')


class FlagError(Exception):
    """Flag values that cannot work; each message names the flag and what is allowed.

    Several problems are printed one per line, each as its own 'Error: ' line.
    """

    def __init__(self, *problems):
        super().__init__('\nError: '.join(problems))


def flag_errors(f):
    """Every problem with the flags that can be seen without the data, as messages."""
    errors = []
    if f.datasource not in DATASOURCES:
        errors.append('--datasource=%s is not recognized; use one of %s' % (f.datasource, ', '.join(DATASOURCES)))
    if f.norm not in NORMS:
        errors.append('--norm=%s is not recognized; use one of %s' % (f.norm, ', '.join(NORMS)))
    if f.baseline not in BASELINES:
        errors.append('--baseline=%s is not recognized; use oracle or leave it unset' % f.baseline)
    elif f.baseline == 'oracle' and f.datasource != 'sinusoid':
        errors.append('--baseline=oracle needs --datasource=sinusoid (the oracle is given the '
                      'amplitude and phase of the sine), not %s' % f.datasource)
    for name in ('meta_batch_size', 'update_batch_size', 'num_updates', 'num_classes', 'num_filters'):
        if getattr(f, name) <= 0:
            errors.append('--%s=%s must be a positive integer' % (name, getattr(f, name)))
    for name in ('meta_lr', 'update_lr'):
        value = getattr(f, name)
        if not (math.isfinite(value) and value > 0):
            errors.append('--%s=%s must be a positive number' % (name, value))
    for name in ('pretrain_iterations', 'metatrain_iterations'):
        if getattr(f, name) < 0:
            errors.append('--%s=%s must be 0 or more' % (name, getattr(f, name)))
    # (a negative count is its own error above: one problem, one line)
    if (f.train and f.pretrain_iterations >= 0 and f.metatrain_iterations >= 0
            and f.pretrain_iterations + f.metatrain_iterations <= 0):
        errors.append('--metatrain_iterations=%s and --pretrain_iterations=%s: nothing to train; '
                      'give at least one iteration (or --train=False to test)'
                      % (f.metatrain_iterations, f.pretrain_iterations))
    if f.test_tasks_per_batch < 0:
        errors.append('--test_tasks_per_batch=%s must be 0 (the measured choice) or positive'
                      % f.test_tasks_per_batch)
    if f.test_iter == 0 or f.test_iter < -1:
        errors.append('--test_iter=%s must be -1 (the latest checkpoint) or a saved iteration > 0' % f.test_iter)
    if f.train_update_batch_size != -1 and f.train_update_batch_size <= 0:
        errors.append('--train_update_batch_size=%s must be -1 (same as --update_batch_size) or positive'
                      % f.train_update_batch_size)
    if f.train_update_lr != -1 and not f.train_update_lr > 0:
        errors.append('--train_update_lr=%s must be -1 (same as --update_lr) or positive' % f.train_update_lr)
    errors += distribute_flag_errors(f)
    return errors


def distribute_flag_errors(f):
    if f.distribute is None:
        return ['--replicas=%d needs --distribute=mirrored' % f.replicas] if f.replicas else []
    errors = []
    if f.distribute not in DISTRIBUTE_KINDS:
        errors.append('--distribute=%s is not recognized; use one of %s, or leave it unset'
                      % (f.distribute, ', '.join(DISTRIBUTE_KINDS)))
    if f.replicas < 0 or (f.replicas and f.distribute != 'mirrored'):
        errors.append('--replicas=%d: give a positive count, and only with --distribute=mirrored '
                      '(multi_worker has one replica per worker of TF_CONFIG)' % f.replicas)
    if f.distribute == 'multi_worker':
        errors += tf_config_errors(os.environ.get('TF_CONFIG'))
    if f.train and (f.pretrain_iterations or f.baseline == 'oracle'):
        errors.append('--distribute shares meta-training; --pretrain_iterations and --baseline=oracle '
                      '(plain regression of the sinusoid, minutes on one core) run without it')
    return errors


def tf_config_errors(text):
    """What is wrong with TF_CONFIG for --distribute=multi_worker, before TensorFlow is loaded."""
    example = ('for example TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
               '"task": {"type": "worker", "index": 0}}\' (index 1 on the second worker)')
    if not text:
        return ['--distribute=multi_worker needs the cluster in the TF_CONFIG environment variable, ' + example]
    try:
        config = json.loads(text)
        workers = config['cluster']['worker']
        task_type, index = config['task']['type'], int(config['task']['index'])
    except (ValueError, KeyError, TypeError) as exc:
        return ['TF_CONFIG is not a cluster and task description (%s: %s); %s'
                % (type(exc).__name__, exc, example)]
    members = config['cluster'].get(task_type, [])
    if not (0 <= index < len(members)):
        return ['TF_CONFIG: task %s %d is not in the cluster (%d %s tasks)'
                % (task_type, index, len(members), task_type)]
    if not workers:
        return ['TF_CONFIG: the cluster has no workers; ' + example]
    return []


def data_errors(f, data_generator, train):
    """Problems that need a look at the prepared data: too few classes or images per class."""
    if f.datasource == 'sinusoid':
        return []
    errors = []
    splits = ('train', 'val') if train else (data_generator.eval_split,)
    need = data_generator.num_samples_per_class
    need_text = ('K+%d' % (need - f.update_batch_size) if need != 2 * f.update_batch_size else '2K')
    for split in splits:
        classes = data_generator.num_classes_in(split)
        if f.num_classes > classes:
            errors.append('--num_classes=%d but the %s split of %s has only %d classes'
                          % (f.num_classes, split, data_generator.root, classes))
        per_class, folder = data_generator.smallest_class(split)
        if need > per_class:
            errors.append('--update_batch_size=%d: a task needs %s = %d images per class, but in the %s split '
                          '%s holds only %d' % (f.update_batch_size, need_text, need, split, folder, per_class))
    return errors


## Training ------------------------------------------------------------------------------------

class Trainer:
    """The training loop: printing cadence, summaries, validation and checkpoints."""

    def __init__(self, model, data_generator, ckpt, writer, chief=True):
        self.model, self.data_generator = model, data_generator
        self.ckpt, self.writer, self.chief = ckpt, writer, chief
        self.print_interval, self.val_interval = print_intervals(FLAGS.datasource)
        self.key = 'accuracy' if model.classification else 'loss'

    def pre_post(self, out):
        """The pre-update and step-num_updates figures the reference prints (accuracy for images)."""
        if self.model.classification:
            return out['total_accuracy1'], out['total_accuracies2'][FLAGS.num_updates - 1]
        return out['total_loss1'], out['total_losses2'][FLAGS.num_updates - 1]

    def write_summaries(self, out, itr, prefix):
        if self.writer is None:
            return
        scalars = {prefix + 'Pre-update loss': out['total_loss1']}
        for j, value in enumerate(out['total_losses2']):
            scalars[prefix + 'Post-update loss, step %d' % (j + 1)] = value
        if self.model.classification:
            scalars[prefix + 'Pre-update accuracy'] = out['total_accuracy1']
            for j, value in enumerate(out['total_accuracies2']):
                scalars[prefix + 'Post-update accuracy, step %d' % (j + 1)] = value
        write_scalars(self.writer, scalars, itr)

    def step(self, itr):
        """One pretraining or meta-training iteration; all recorded steps only when reported."""
        batch = self.data_generator.make_batch(train=True, index=itr, update_batch_size=FLAGS.update_batch_size)
        report = itr % SUMMARY_INTERVAL == 0 or itr % self.print_interval == 0
        if itr < FLAGS.pretrain_iterations:
            return self.model.pretrain_step(batch, self.model.num_steps if report else 0), report
        return self.model.metatrain_step(batch, self.model.num_steps if report else None), report

    def validate(self, itr):
        batch = self.data_generator.make_batch(train=False, index=itr, update_batch_size=FLAGS.update_batch_size)
        out = self.model.evaluate(batch)
        self.write_summaries(out, itr, 'metaval_')
        pre, post = self.pre_post(out)
        print('Validation results: %s, %s' % (float(pre), float(post)), flush=True)

    def run(self, start_itr, total_itr):
        print('Done initializing, starting training.', flush=True)
        progress = Progress(start_itr, total_itr)
        prelosses, postlosses = [], []
        itr = start_itr - 1
        try:
            with DeferredInterrupt() as stop:
                for itr in range(start_itr, total_itr):
                    out, report = self.step(itr)
                    if report:
                        pre, post = (float(v) for v in self.pre_post(out))
                        check_finite(out, itr)
                        prelosses.append(pre)
                        postlosses.append(post)
                        self.write_summaries(out, itr, 'metatrain_')
                    if itr != 0 and itr % self.print_interval == 0:
                        label = ('Pretrain Iteration %d' % itr if itr < FLAGS.pretrain_iterations
                                 else 'Iteration %d' % (itr - FLAGS.pretrain_iterations))
                        print('%s: %s, %s' % (label, np.mean(prelosses), np.mean(postlosses)), flush=True)
                        if self.chief:
                            print(progress.line(itr), file=sys.stderr, flush=True)
                        prelosses, postlosses = [], []
                    if itr != 0 and itr % SAVE_INTERVAL == 0:
                        self.ckpt.save(itr)
                    if (itr != 0 and itr % self.val_interval == 0 and FLAGS.datasource != 'sinusoid'):
                        self.validate(itr)
                    stop.check()
        except KeyboardInterrupt:
            if itr >= start_itr:
                path = self.ckpt.save(itr)
                print('Interrupted after iteration %d; saved %s. Resume with the same command.'
                      % (itr, path), flush=True)
            raise SystemExit(130)
        except self.collective_errors() as exc:
            # Nothing is saved: when a worker dies mid-step the error can surface after part of
            # an update was applied (measured: a checkpoint saved here resumed to other numbers).
            # The last periodic checkpoint is a state the run really passed through.
            raise WorkerLost(lost_worker_message(exc, self.ckpt.directory, self.ckpt.ours()))
        # nothing trained: the checkpoint it resumed from (the newest intact one)
        path = self.ckpt.save(itr) if itr >= start_itr else self.ckpt.path_for(-1, fall_back=True)
        if path and self.chief:
            print('Last checkpoint: %s (the same command resumes it; add --train=False to test it)' % path,
                  flush=True)

    def collective_errors(self):
        """What a failed all-reduce raises when a worker is gone (nothing without a strategy)."""
        if self.model.strategy is None:
            return ()
        import tensorflow as tf
        return (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.CancelledError,
                tf.errors.AbortedError)


class DeferredInterrupt:
    """Ctrl-C and kill -TERM acted on between units of work: training iterations, test batches.

    Raised at once, KeyboardInterrupt can land while TensorFlow calls back into Python (in a save's
    variable assignment, seen in CI), and TensorFlow then aborts the process: status -6, nothing
    saved. So the first signal is only recorded, and check() raises it when the loop calls it; a
    second signal interrupts at once, the way out of a step that never ends.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __enter__(self):
        self.requested = False
        self.previous = {sig: signal.signal(sig, self.record) for sig in self.SIGNALS}
        return self

    def record(self, signum, frame):
        self.requested = True
        for sig in self.SIGNALS:
            signal.signal(sig, signal.default_int_handler)

    def check(self):
        if self.requested:
            raise KeyboardInterrupt

    def __exit__(self, *exc_info):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        return False


class WorkerLost(Exception):
    """A worker of a multi-worker run stopped answering; the message says how to resume."""


class Progress:
    """Speed and time left, printed beside the reference's 'Iteration N' lines.

    On stderr, so that stdout stays line for line what the reference prints
    (people diff training logs against it).
    """

    def __init__(self, start_itr, total_itr, clock=time.time):
        self.total_itr, self.clock = total_itr, clock
        self.last_itr, self.last_time = start_itr - 1, clock()

    def line(self, itr):
        """After iteration itr: seconds per iteration since the last line, and the time to the end."""
        now = self.clock()
        done = itr - self.last_itr
        seconds = (now - self.last_time) / max(done, 1)
        left = self.total_itr - 1 - itr
        self.last_itr, self.last_time = itr, now
        eta = time.strftime('%Y-%m-%d %H:%M', time.localtime(now + left * seconds))
        return ('  %.3g s/iteration over the last %d; %d left, about %s (ETA %s)'
                % (seconds, done, left, format_duration(left * seconds), eta))


def format_duration(seconds):
    """'2 h 05 min', '7 min 03 s', '12 s'."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return '%d h %02d min' % (hours, minutes)
    if minutes:
        return '%d min %02d s' % (minutes, secs)
    return '%d s' % secs


def write_scalars(writer, scalars, step):
    """TensorBoard scalars without the tensorboard package: core tf.summary.write
    with the 'scalars' plugin metadata that tf.summary.scalar would attach."""
    import tensorflow as tf
    from tensorflow.core.framework import summary_pb2
    metadata = summary_pb2.SummaryMetadata()
    metadata.plugin_data.plugin_name = 'scalars'
    with writer.as_default(step=step):
        for tag, value in scalars.items():
            tf.summary.write(tag, tf.cast(value, tf.float32), metadata=metadata.SerializeToString())


class NonFiniteLoss(Exception):
    pass


def check_finite(out, itr):
    """Stop before a diverged model is saved over the last good checkpoint."""
    values = [out['total_loss1']] + list(out['total_losses2'])
    if not all(math.isfinite(float(v)) for v in values):
        raise NonFiniteLoss('non-finite loss at iteration %d; the last good checkpoint is kept' % itr)


## Checkpoints --------------------------------------------------------------------------------

class DamagedCheckpoint(Exception):
    """A checkpoint whose files cannot be read back in full; the message names the file and what to do."""


OUR_PREFIX = re.compile(r'^model-(\d+)$')
OUR_INDEX = re.compile(r'^model-(\d+)\.index$')


class Checkpoints:
    """tf.train.CheckpointManager of the model and both Adam states, keeping 10.

    Files are logdir/exp_string/model-<iteration>.*; the manager's bookkeeping
    file, the list of checkpoints named 'checkpoint', is replaced only after a
    checkpoint is fully written, so a crash during a save leaves the previous
    checkpoint as the latest.

    The reference's TF1 checkpoints in the same folder (model<iteration>.*,
    no dash; see tf1_checkpoint.py) are found and loaded too: the latest is
    chosen by iteration number over both kinds, ours on a tie.

    Damaged files (docs/robustness.md, "Damaged checkpoints"): the checkpoint
    chosen is read back in full before it is used; a damaged one is named in
    a DamagedCheckpoint, or, resuming training, gives way to the newest intact
    older one. A list that cannot be read is not taken for "no checkpoint":
    our model-<iteration>.index files are found on disk.
    """

    def __init__(self, model, directory, write=True):
        import tensorflow as tf
        self.model = model
        self.directory = directory
        self.write = write  # False on the workers of a multi-worker run other than the chief
        self.choice = None  # set by path_for: which checkpoint it picked, and why
        self.warnings = []  # set by path_for: damage it went around, one line each
        self.last_itr = tf.Variable(-1, dtype=tf.int64, trainable=False)
        self.checkpoint = tf.train.Checkpoint(model=model, last_itr=self.last_itr)
        self.state_path = os.path.join(directory, 'checkpoint')
        self.state_damage = state_file_damage(self.state_path)
        # TensorFlow's manager cannot start from a damaged list (a traceback, or two warnings
        # and no checkpoint at all): then it is made at the first save, which writes a new list
        self.manager = None if self.state_damage else self.new_manager()

    def new_manager(self):
        import tensorflow as tf
        import tf1_checkpoint
        manager = tf.train.CheckpointManager(self.checkpoint, self.directory, max_to_keep=10,
                                             checkpoint_name='model')
        # A 'checkpoint' file written by the reference's Saver lists its model<ITER> files:
        # the manager must neither count them as ours nor delete them when it keeps 10.
        for path in list(getattr(manager, '_maybe_delete', {})):
            if tf1_checkpoint.is_reference_checkpoint(path):
                del manager._maybe_delete[path]
        return manager

    def save(self, itr):
        """Save after iteration itr; the path, or None where this process does not write."""
        if not self.write:
            return None
        if self.manager is None:
            # The damaged list goes. The new one names only the checkpoints saved from now
            # on, so keeping 10 never deletes the older ones.
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.state_path)
            self.state_damage = None
            self.manager = self.new_manager()
        self.last_itr.assign(itr)
        return self.manager.save(checkpoint_number=itr)

    def on_disk(self):
        """{iteration: path} of our checkpoints by their model-<iteration>.index files, listed or not."""
        if not os.path.isdir(self.directory):
            return {}
        found = {}
        for name in os.listdir(self.directory):
            match = OUR_INDEX.match(name)
            if match:
                found[int(match.group(1))] = os.path.join(self.directory, name[:-len('.index')])
        return found

    def ours(self, test_iter=-1):
        """Our checkpoint of iteration test_iter (> 0), or our latest: (iteration, path) or None.

        The latest is the one the list names; where it names none of ours (the
        list is damaged or gone, or it is the reference's), the newest on disk.
        """
        if test_iter > 0:
            path = os.path.join(self.directory, 'model-%d' % test_iter)
            return (test_iter, path) if os.path.exists(path + '.index') else None
        path = self.manager.latest_checkpoint if self.manager else None
        match = OUR_PREFIX.match(os.path.basename(path or ''))
        if match:
            return int(match.group(1)), path
        found = self.on_disk()
        return (max(found), found[max(found)]) if found else None

    def reference(self, test_iter=-1):
        """The reference's checkpoint of iteration test_iter (> 0), or its latest: (iteration, path) or None."""
        import tf1_checkpoint
        found = tf1_checkpoint.find_reference_checkpoints(self.directory)
        if test_iter > 0:
            return (test_iter, found[test_iter]) if test_iter in found else None
        return (max(found), found[max(found)]) if found else None

    def latest(self, test_iter):
        """(iteration, path) of the latest checkpoint, or of iteration test_iter (> 0), or None;
        its files unchecked.

        Ours or the reference's, whichever has the higher iteration (ours on a
        tie: it also holds the optimizer state); self.choice says which.
        """
        ours, reference = self.ours(test_iter), self.reference(test_iter)
        if reference and (not ours or reference[0] > ours[0]):
            self.choice = 'the reference\'s TF1 checkpoint of iteration %d' % reference[0]
            if ours:
                self.choice += '; ours of iteration %d is older' % ours[0]
            return reference
        if ours:
            self.choice = 'our checkpoint of iteration %d' % ours[0]
            if reference:
                self.choice += ('; the reference\'s TF1 checkpoint of the same iteration is not used'
                                if reference[0] == ours[0] else
                                '; the reference\'s TF1 checkpoint of iteration %d is older' % reference[0])
            return ours
        self.choice = None
        return None

    def path_for(self, test_iter, fall_back=False):
        """The checkpoint to load: the latest by iteration, or the one of iteration test_iter (> 0).

        None if there is none. Its files are read back in full first. A damaged
        one raises DamagedCheckpoint naming the file; with fall_back (resuming
        training) the newest intact older checkpoint is loaded instead, and
        self.warnings says so. A test never falls back: it must score the
        checkpoint the user asked for.
        """
        self.warnings = []
        if self.state_damage:
            self.warnings.append('the list of checkpoints %s cannot be read (%s); the checkpoints are found '
                                 'by their files instead, and training\'s next save writes a new list'
                                 % (self.state_path, self.state_damage))
        found = self.latest(test_iter)
        if found is None:
            return None
        iteration, path = found
        damage = checkpoint_damage(path)
        if damage is None:
            return path
        older = self.newest_intact(below=iteration)
        if fall_back and older:
            self.warnings.append('checkpoint %s is damaged: %s; resuming from %s, the newest intact one '
                                 '(its files stay until training saves that iteration again)'
                                 % (path, damage, os.path.basename(older[1])))
            self.choice = '%s, the newest intact one' % checkpoint_kind(*older)
            return older[1]
        raise DamagedCheckpoint(damaged_message(path, damage, older, fall_back, self.directory))

    def newest_intact(self, below):
        """(iteration, path) of the newest checkpoint, ours or the reference's, saved before
        iteration `below` whose files read back in full; None if there is none."""
        import tf1_checkpoint
        candidates = [(itr, True, path) for itr, path in self.on_disk().items() if itr < below]
        candidates += [(itr, False, path) for itr, path
                       in tf1_checkpoint.find_reference_checkpoints(self.directory).items() if itr < below]
        for itr, _, path in sorted(candidates, reverse=True):  # ours first on a tie
            if checkpoint_damage(path) is None:
                return itr, path
        return None

    def restore(self, path, optimizer_state=True):
        """Restore everything saved at path; returns the iteration it was saved after.

        A reference TF1 checkpoint gives the weights (and the Adam state, if it
        holds one and optimizer_state); a mismatch with the flags raises
        tf1_checkpoint.CheckpointMismatch. Files that cannot be read raise
        DamagedCheckpoint (path_for reads them back before, so only a file
        damaged since, or a path chosen by the caller, gets here).
        """
        import tensorflow as tf
        import tf1_checkpoint
        try:
            if tf1_checkpoint.is_reference_checkpoint(path):
                result = tf1_checkpoint.load_reference_checkpoint(self.model, path, optimizer_state)
                for warning in result.warnings:
                    print('Warning: ' + warning, file=sys.stderr, flush=True)
                self.last_itr.assign(result.iteration)
                return result.iteration
            check_our_checkpoint(self.model, path)
            status = self.checkpoint.restore(path)
        except (tf.errors.OpError, IndexError):
            damage = checkpoint_damage(path)
            if damage is None:  # not the files: a fault of ours, with its traceback
                raise
            older = self.newest_intact(below=checkpoint_iteration(path))
            raise DamagedCheckpoint(damaged_message(path, damage, older, optimizer_state, self.directory)) from None
        check_restored(status, path, int(self.last_itr.numpy()))
        return int(self.last_itr.numpy())


def check_restored(status, path, last_itr):
    """Raise CheckpointMismatch unless the restore gave every object of ours its value, and the
    iteration read back is the one in the checkpoint's name (model-<iteration>)."""
    from tf1_checkpoint import CheckpointMismatch
    try:
        status.assert_existing_objects_matched()
    except AssertionError as exc:
        raise CheckpointMismatch('Checkpoint %s does not hold all that main.py saves (%s); give the checkpoint '
                                 'of a main.py training run' % (path, str(exc).strip().splitlines()[0][:200]))
    match = OUR_PREFIX.match(os.path.basename(path))
    if match and int(match.group(1)) != last_itr:
        raise CheckpointMismatch('Checkpoint %s holds the state after iteration %d, not %s as its name says: '
                                 'its files were renamed; give them back their name model-%d'
                                 % (path, last_itr, match.group(1), last_itr))


## Damaged checkpoint files ---------------------------------------------------------------------------

DATA_FILE = re.compile(r'[^\s;:()]+\.data-\d+-of-\d+')
BUNDLE_PREFIX = re.compile(r'^TensorBundle at \S+ shard \d+ \(\d+ bytes\): ')


def checkpoint_damage(path):
    """What is wrong with the files of the checkpoint at path, naming the file, or None if
    every value saved reads back whole, its checksum checked (milliseconds: these models
    hold a few MB at most)."""
    import tensorflow as tf
    name = os.path.basename(path)
    if not os.path.exists(path + '.index'):
        return '%s.index is missing' % name
    try:
        reader = tf.train.load_checkpoint(path)
    except tf.errors.OpError as exc:  # 'file is too short to be an sstable', 'bad magic number', ...
        return '%s.index cannot be read (%s)' % (name, error_text(exc, path))
    try:
        for key in reader.get_variable_to_shape_map():
            reader.get_tensor(key)
    # what the reader raises for a data file gone ('No such file or directory'), cut short
    # (IndexError: 'Read less bytes than requested') or changed ('Checksum does not match')
    except (tf.errors.OpError, IndexError) as exc:
        missing = DATA_FILE.search(str(exc)) if 'No such file' in str(exc) else None
        if missing:
            return '%s is missing' % os.path.basename(missing.group(0))
        data = sorted(os.path.basename(p) for p in glob.glob(glob.escape(path) + '.data-*'))
        return '%s cannot be read (%s)' % (', '.join(data) or name + '.data-*', error_text(exc, path))
    return None


def error_text(exc, path):
    """TensorFlow's message for a file of the checkpoint at path: its first line, short, names short."""
    text = BUNDLE_PREFIX.sub('', str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
    return text.replace(os.path.dirname(path) + os.sep, '')[:200]


def state_file_damage(state_path):
    """Why the list of checkpoints at state_path cannot be read, or None (also when there is none).

    Its damage would make TensorFlow's CheckpointManager raise (an empty or
    binary file) or find no checkpoint at all (text it cannot parse).
    """
    from google.protobuf import text_format
    from tensorflow.python.training.checkpoint_state_pb2 import CheckpointState
    try:
        with open(state_path, 'rb') as f:
            content = f.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        return '%s: %s' % (type(exc).__name__, exc.strerror)
    if not content.strip():
        return 'it is empty'
    try:
        state = text_format.Parse(content.decode('utf-8'), CheckpointState())
    except UnicodeDecodeError:
        return 'it is not text'
    except text_format.ParseError as exc:
        return 'ParseError: %s' % str(exc)[:200]
    return None if state.model_checkpoint_path else 'it names no latest checkpoint'


def checkpoint_iteration(path):
    """The iteration in a checkpoint's name: ours model-<iteration>, the reference's model<iteration>."""
    import tf1_checkpoint
    match = OUR_PREFIX.match(os.path.basename(path))
    return int(match.group(1)) if match else tf1_checkpoint.reference_iteration(path)


def checkpoint_kind(iteration, path):
    import tf1_checkpoint
    if tf1_checkpoint.is_reference_checkpoint(path):
        return 'the reference\'s TF1 checkpoint of iteration %d' % iteration
    return 'our checkpoint of iteration %d' % iteration


def damaged_message(path, damage, older, resuming, directory):
    """One line: which file of the checkpoint at path is damaged, and what to do.

    older: (iteration, path) of the newest intact older checkpoint, or None; resuming with
    one happens only when the damage was found while loading, after path_for had read the files.
    """
    text = 'checkpoint %s is damaged: %s. Nothing was %s' % (path, damage, 'trained' if resuming else 'tested')
    if older and resuming:
        return text + '; run the same command again to resume from %s, the newest intact one' % older[1]
    if older:
        return text + ('; test the newest intact one with --test_iter=%d (%s), or put the damaged files back '
                       'from a backup' % (older[0], os.path.basename(older[1])))
    return text + ('; no older intact checkpoint is in %s: put the damaged files back from a backup, or '
                   '%s' % (directory, 'train afresh with another --logdir' if resuming else 'train again'))


def check_our_checkpoint(model, path):
    """Raise CheckpointMismatch listing every weight that is missing, unexpected or mis-shaped."""
    import tensorflow as tf
    from tf1_checkpoint import CheckpointMismatch, mismatch_lines
    saved = {}
    for key, shape in tf.train.list_variables(path):
        parts = key.split('/')
        # model/weights/<name>/.ATTRIBUTES/VARIABLE_VALUE (likewise norm_weights)
        if len(parts) == 5 and parts[0] == 'model' and parts[1] in ('weights', 'norm_weights'):
            # object-graph names escape '/' as '.S' and '.' as '..'
            saved[parts[2].replace('.S', '/').replace('..', '.')] = tuple(shape)
    ours = {name: tuple(v.shape) for name, v in model.named_variables().items()}
    missing = ['%s %s' % (n, list(ours[n])) for n in ours if n not in saved]
    unexpected = ['%s %s' % (n, list(saved[n])) for n in saved if n not in ours]
    mismatched = ['%s: checkpoint %s, model %s' % (n, list(saved[n]), list(ours[n]))
                  for n in ours if n in saved and saved[n] != ours[n]]
    if missing or unexpected or mismatched:
        lines = mismatch_lines('Checkpoint %s does not match the model the flags describe:' % path,
                               missing, unexpected, mismatched)
        lines.append('  Give the flags the run was trained with (for example --conv, --num_filters, '
                     '--num_classes, --norm, --datasource).')
        raise CheckpointMismatch('\n'.join(lines))


## Testing --------------------------------------------------------------------------------

def test(model, data_generator, out_dir, write=True):
    """600 tasks, inner steps 0..10, in batches of tasks; prints and writes the CSV and pickle.

    Each batch holds per_batch tasks for each core (test_parts), or with
    --distribute for each replica.
    """
    per_batch = FLAGS.test_tasks_per_batch or TEST_TASKS_PER_BATCH[FLAGS.datasource]
    replicas = model.strategy.num_replicas_in_sync if model.strategy else 1
    parts = 1 if model.strategy else test_parts()
    groups = replicas * parts  # one of the two is 1
    start = time.time()
    results = score_test_tasks(model, data_generator, per_batch * groups, groups, parts)
    print('%d test tasks in %.1f s, %d at a time in %d group(s) side by side'
          % (NUM_TEST_POINTS, time.time() - start, min(per_batch * groups, NUM_TEST_POINTS), groups),
          file=sys.stderr, flush=True)
    from utils import confidence_summary
    means, stds, ci95 = confidence_summary(results)
    print('Mean validation accuracy/loss, stddev, and confidence intervals')
    print((means, stds, ci95))
    base = os.path.join(out_dir, 'test_ubs%s_stepsize%s' % (FLAGS.update_batch_size, FLAGS.update_lr))
    if write:
        write_results(base, results, means, stds, ci95)
        print('Test results written to %s.csv and %s.pkl' % (base, base), flush=True)
    return means, stds, ci95


def test_parts():
    """Groups of test tasks evaluated side by side: one per core this process may use.

    With one group per core and one thread per op (use_cores_for_test), two
    cores ran an Omniglot test batch 1.35-1.5x faster than with both cores
    on every op of one group (docs/log/performance-log-2026-12-02-evening.md, "The test on two cores").
    """
    return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else (os.cpu_count() or 1)


def use_cores_for_test(tf):
    """One thread per op where test_parts gives each core its own group of tasks.

    Only before TensorFlow runs its first op; later (main.build called by a
    program that already ran TensorFlow) the ops keep TensorFlow's default
    threads, with the same numbers.
    """
    if test_parts() > 1:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(1)
        except RuntimeError:  # TensorFlow is already running
            pass


def score_test_tasks(model, data_generator, per_batch, min_tasks=1, parts=1):
    """[600, 11] float64: accuracy (images) or MSE (sinusoid) of each test task after 0..10 steps.

    Task i is make_batch(train=False, index=i) of a meta-batch of 1, as the
    reference drew it; per_batch of them are stacked and evaluated at once,
    in `parts` groups side by side. A last batch smaller than min_tasks (one
    task per replica or group) is filled up with repeats of its last task,
    whose results are dropped. The next batch is drawn while this one runs.
    """
    key = 'accuracies' if model.classification else 'losses'

    def draw(start):
        indices = range(start, min(start + per_batch, NUM_TEST_POINTS))
        padded = list(indices) + [indices[-1]] * max(0, min_tasks - len(indices))
        return indices, data_generator.make_batches(train=False, indices=padded,
                                                    update_batch_size=FLAGS.update_batch_size)

    starts = range(0, NUM_TEST_POINTS, per_batch)
    rows = []
    with concurrent.futures.ThreadPoolExecutor(1) as drawer, DeferredInterrupt() as stop:
        upcoming = drawer.submit(draw, starts[0])
        for n, start in enumerate(starts):
            indices, batch = upcoming.result()
            if n + 1 < len(starts):
                upcoming = drawer.submit(draw, starts[n + 1])
            scores = model.evaluate_tasks(batch, TEST_NUM_UPDATES, parts=parts)
            rows.append(scores[key].numpy().astype(np.float64)[:len(indices)])
            for done in range(100 * (start // 100 + 1), indices.stop + 1, 100):
                print('Tested %d/%d tasks' % (done, NUM_TEST_POINTS), file=sys.stderr, flush=True)
            stop.check()
    return np.concatenate(rows)


def write_results(base, results, means, stds, ci95):
    """The reference's output files: base.csv (header update0.., means, stds, ci95) and base.pkl."""
    with open(base + '.pkl', 'wb') as f:
        pickle.dump({'mses': results}, f)
    with open(base + '.csv', 'w', newline='') as f:
        writer = csv.writer(f, delimiter=',')
        writer.writerow(['update' + str(i) for i in range(len(means))])
        for row in (means, stds, ci95):
            writer.writerow(row)


## Main --------------------------------------------------------------------------------------------

def choose_cpu_kernels(datasource, train):
    """Which CPU kernels TensorFlow uses, by what measured faster.

    oneDNN (utils.py's default) for the conv nets, training and test alike:
    their grouped convolutions need it (the test runs Omniglot tasks 10 at a
    time, 1.2x faster than one at a time on TensorFlow's own kernels;
    miniImagenet's one-task test is 1.5x faster with it). TensorFlow's own
    kernels for the sinusoid's small fully connected net (1.1x faster second
    order, 1.7x first order; its test is under a second either way). An
    explicit TF_ENABLE_ONEDNN_OPTS wins. Only before TensorFlow's first
    import. The measurements: docs/log/performance-log-2026-11.md ("What made it faster")
    and docs/log/performance-log-2026-12-02-morning.md ("Task-batched test").
    """
    del train  # the same choice for training and test since the test is task-batched
    if datasource == 'sinusoid':
        os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')


def build(train):
    """The data generator and the model for the current flags (the data checked first)."""
    from data_generator import DataGenerator
    meta_batch_size = FLAGS.meta_batch_size if train else 1  # testing is one task at a time
    data_generator = DataGenerator(
        samples_per_class(FLAGS.datasource, FLAGS.update_batch_size, train), meta_batch_size,
        datasource=FLAGS.datasource, num_classes=FLAGS.num_classes, test_set=FLAGS.test_set,
        data_dir=FLAGS.data_dir, seed=FLAGS.seed, baseline=FLAGS.baseline)
    errors = data_errors(FLAGS, data_generator, train)
    if errors:
        raise FlagError(*errors)
    # only now: importing TensorFlow takes seconds. utils first: it must set up
    # TensorFlow's CPU kernels before TensorFlow's first import (see utils.py)
    choose_cpu_kernels(FLAGS.datasource, train)
    import utils
    import tensorflow as tf
    from maml import MAML, ModelConfig
    if not train and not FLAGS.distribute:
        use_cores_for_test(tf)
    strategy = utils.distribution_strategy(FLAGS.distribute, FLAGS.replicas)
    if strategy is not None and train and FLAGS.meta_batch_size % strategy.num_replicas_in_sync:
        raise FlagError('--meta_batch_size=%d is not divisible by the %d replicas of --distribute=%s: '
                        'each replica takes an equal share of the tasks'
                        % (FLAGS.meta_batch_size, strategy.num_replicas_in_sync, FLAGS.distribute))
    with strategy.scope() if strategy else contextlib.nullcontext():
        model = MAML(data_generator.dim_input, data_generator.dim_output,
                     test_num_updates=recorded_steps(FLAGS.datasource, train),
                     config=ModelConfig.from_flags(FLAGS), dtype=tf.float32, seed=FLAGS.seed)
    return data_generator, model


def is_chief(strategy):
    """Whether this process writes the checkpoints, summaries, console lines and test results:
    always without multi_worker; with it, TF_CONFIG's chief, or worker 0 when it names none."""
    resolver = getattr(strategy, 'cluster_resolver', None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == 'chief':
        return True
    return (resolver.task_type == 'worker' and resolver.task_id == 0
            and 'chief' not in resolver.cluster_spec().as_dict())


PEER = re.compile(r'/job:(\w+)/replica:\d+/task:(\d+)')


def lost_worker_message(exc, chief_dir, latest):
    """What to tell the user when a collective fails: which worker, and how to go on.

    latest: (iteration, path) of the chief's latest checkpoint, or None.
    """
    peers = sorted(set(PEER.findall(str(exc))))
    who = ', '.join('%s %s' % p for p in peers) or 'another worker'
    resume = ('they resume from the checkpoint of iteration %d in %s' % (latest[0], chief_dir) if latest
              else 'there is no checkpoint yet in %s, so they start again' % chief_dir)
    return ('Stopped: lost contact with %s (%s: %s). Restart every worker with the same command: %s.'
            % (who, type(exc).__name__, str(exc).strip().splitlines()[0][:300], resume))


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # TF's checkpoint INFO lines would drown the progress lines
    from data_generator import DataError
    try:
        return experiment()
    except (FlagError, DataError, DamagedCheckpoint) as exc:
        print('Error: %s' % exc, file=sys.stderr, flush=True)
        return 2


def experiment():
    """Validate the flags, build data and model, then train or test."""
    errors = flag_errors(FLAGS)
    if errors:
        raise FlagError(*errors)
    if FLAGS.baseline == 'oracle':
        # the oracle is trained by plain regression on the task-aware input
        FLAGS.pretrain_iterations += FLAGS.metatrain_iterations
        FLAGS.metatrain_iterations = 0
    fill_train_flags(FLAGS)
    exp_dir = os.path.join(FLAGS.logdir, experiment_name(FLAGS))
    data_generator, model = build(FLAGS.train)
    chief = is_chief(model.strategy)
    if not chief:
        sys.stdout = open(os.devnull, 'w')  # the chief prints; errors still reach stderr
    ckpt = Checkpoints(model, exp_dir, write=chief)
    start_itr = 0
    if FLAGS.resume or not FLAGS.train:
        path = ckpt.path_for(FLAGS.test_iter if not FLAGS.train else -1, fall_back=FLAGS.train)
        for warning in ckpt.warnings:
            print('Warning: ' + warning, file=sys.stderr, flush=True)
        if path:
            print('Restoring model weights from %s (%s)' % (path, ckpt.choice), flush=True)
            import tf1_checkpoint
            try:
                start_itr = ckpt.restore(path, optimizer_state=FLAGS.train) + 1
            except tf1_checkpoint.CheckpointMismatch as exc:
                print('Error: %s' % exc, file=sys.stderr, flush=True)
                return 2
        elif not FLAGS.train:
            raise FlagError('--train=False: no checkpoint to test%s; looked in %s for model-<iteration>.index '
                            '(ours) and model<iteration>.index (the reference\'s). Train first, or give the '
                            '--logdir and the training flags (they name the folder) of an existing run'
                            % (' for --test_iter=%d' % FLAGS.test_iter if FLAGS.test_iter > 0 else '', exp_dir))
    if FLAGS.train:
        import tensorflow as tf
        if chief:
            os.makedirs(exp_dir, exist_ok=True)
        writer = tf.summary.create_file_writer(exp_dir) if FLAGS.log and chief else None
        total = FLAGS.pretrain_iterations + FLAGS.metatrain_iterations
        try:
            Trainer(model, data_generator, ckpt, writer, chief).run(start_itr, total)
        except (NonFiniteLoss, WorkerLost) as exc:
            print('Stopped: %s' % exc if isinstance(exc, NonFiniteLoss) else exc, file=sys.stderr, flush=True)
            return 1
    else:
        test(model, data_generator, exp_dir, write=chief)
    return 0


def parse_flags(argv):
    """absl's parsing, a bad or unknown flag reported as every other error: one 'Error:' line, status 2."""
    try:
        return FLAGS(argv)
    except flags.Error as exc:
        print('Error: %s (python main.py --help lists the flags)' % exc, file=sys.stderr, flush=True)
        sys.exit(2)


def run():
    # Save on kill -TERM as on Ctrl-C. SIGINT too, explicitly: a shell starts background jobs
    # with SIGINT ignored, and Python would then never raise KeyboardInterrupt.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        app.run(main, flags_parser=parse_flags)
    except KeyboardInterrupt:  # training saves and exits itself; this is start-up or a test cut short
        print('Interrupted before training started or while testing: nothing was written.',
              file=sys.stderr, flush=True)
        sys.exit(130)


if __name__ == '__main__':
    run()
