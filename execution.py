"""How the MAML model runs: compiled, split over replicas, its test tasks in groups or a loop.

maml.py's MAML holds the algorithm as the paper describes it; class Execution,
which MAML inherits, holds what makes it run fast and in parallel: the public
steps (metatrain_step, pretrain_step, evaluate, evaluate_tasks, traced_graph),
each a tf.function traced once; the data-parallel split of the meta-batch over
tf.distribute replicas; the test's tasks in groups side by side, or its steps
in a tf.while_loop. None of it changes a number, only how fast it comes.

Below maml.py in the import order: it imports utils and TensorFlow, never maml or main.
"""
import utils  # noqa: F401  (first: it sets up TensorFlow's CPU kernels before the import below)
import tensorflow as tf  # noqa: E402

from utils import accuracy  # noqa: E402


class Execution:
    """The execution of a model class that inherits it (maml.MAML) before tf.Module.

    From that class it uses the algorithm (metabatch, meta_gradients,
    meta_update, pretrain_update, adapt, inner_update, forward, loss_func,
    tile_weights) and its attributes (weights, config, classification,
    dtype, num_steps).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Built under strategy.scope(): the variables are mirrored and every step runs its
        # share of the meta-batch on each replica (see "Across replicas" below).
        self.strategy = tf.distribute.get_strategy() if tf.distribute.has_strategy() else None
        self._compiled = _FunctionCache()  # a plain dict attribute would be checkpointed

    ## The steps, each a tf.function traced once -------------------------------------------

    def metatrain_step(self, batch, num_steps=None):
        """One meta-update on batch = (inputa, inputb, labela, labelb).

        num_steps: inner steps whose query results are reported (at least
        num_updates). None, the cheapest: only what the update needs; then
        total_losses2 (and total_accuracies2) hold None except at step
        num_updates. The update is the same either way.
        """
        return self._metatrain_function(num_steps)(*self._inputs(batch))

    def pretrain_step(self, batch, num_steps=0):
        return self._function('pretrain', self.pretrain_update, num_steps)(*self._inputs(batch))

    def evaluate(self, batch, num_steps=None):
        """Results after 0..num_steps inner steps, no meta-update (validation and test)."""
        return self._evaluate_function(num_steps)(*self._inputs(batch))

    def evaluate_tasks(self, batch, num_steps=None, parts=1):
        """As evaluate, but each task's results: {'losses', 'accuracies'}: [tasks, num_steps + 1].

        parts: groups of tasks evaluated side by side (main.py's test: one per core).
        """
        return self._evaluate_tasks_function(num_steps, parts)(*self._inputs(batch))

    def traced_graph(self, step, batch, num_steps=None):
        """The graph metatrain_step, evaluate or evaluate_tasks (step: 'metatrain', 'evaluate' or
        'evaluate_tasks') runs for these arguments, traced but not run: for FLOP counts and
        tests of what it computes."""
        function = {'metatrain': self._metatrain_function, 'evaluate': self._evaluate_function,
                    'evaluate_tasks': self._evaluate_tasks_function}[step](num_steps)
        return function.get_concrete_function(*self._inputs(batch)).graph

    def _function(self, name, fn, num_steps, **options):
        """The tf.function of fn, one per (name, num_steps, options): no retracing in the loop."""
        key = (name, num_steps) + tuple(sorted(options.items()))
        functions = self._compiled.functions
        if key not in functions:
            # no autograph: the steps are plain Python loops over ints, and converting
            # them took half of the tracing time (1.3 s of the 600-task Omniglot test)
            functions[key] = tf.function(lambda a, b, la, lb: fn(a, b, la, lb, num_steps, **options),
                                         autograph=False)
        return functions[key]

    def _inputs(self, batch):
        return [tf.convert_to_tensor(x, dtype=self.dtype) for x in batch]

    def _metatrain_function(self, num_steps):
        if num_steps is None:
            return self._function('metatrain', self._metatrain_step, self.config.num_updates, record_all=False)
        return self._function('metatrain', self._metatrain_step, num_steps)

    def _evaluate_function(self, num_steps):
        return self._function('evaluate', self._evaluate, self.num_steps if num_steps is None else num_steps)

    def _evaluate_tasks_function(self, num_steps, parts=1):
        return self._function('evaluate_tasks', self._evaluate_tasks,
                              self.num_steps if num_steps is None else num_steps, parts=parts)

    def _metatrain_step(self, inputa, inputb, labela, labelb, num_steps, record_all=True):
        num_steps = max(num_steps, self.config.num_updates)
        if self.strategy is None:
            out, grads = self.meta_gradients(inputa, inputb, labela, labelb, num_steps, record_all)
        else:
            out, grads = self._across_replicas(self._replica_meta_gradients, inputa, inputb, labela, labelb,
                                               num_steps, record_all)
        # once, in cross-replica context: every copy of the variables takes the same update
        self.meta_update(grads)
        out['grads'] = grads  # unclipped, as the fixtures record them
        return out

    def _evaluate(self, inputa, inputb, labela, labelb, num_steps):
        if self.strategy is not None:
            return self._across_replicas(self._replica_metabatch, inputa, inputb, labela, labelb, num_steps)
        return self.metabatch(inputa, inputb, labela, labelb, num_steps)

    ## Test tasks: in groups side by side, the steps in a loop ---------------------------------

    def _evaluate_tasks(self, inputa, inputb, labela, labelb, num_steps, parts=1):
        """task_results of the batch; its tasks in `parts` groups that run side by side.

        The groups share no op, so TensorFlow's executor runs them at once, one
        per core: on small test tasks that uses two cores better than both
        cores working on each op (main.py's test,
        docs/log/performance-log-2026-12-02-evening.md). Each group is one call of
        the same traced function.
        """
        if self.strategy is not None:
            return self._across_replicas(self._replica_evaluate_tasks, inputa, inputb, labela, labelb, num_steps)
        group = self._function('task_results', self.task_results, num_steps)
        results = [group(*[t[start:stop] for t in (inputa, inputb, labela, labelb)])
                   for start, stop in (replica_task_range(inputa.shape[0], parts, p) for p in range(parts))]
        return {k: tf.concat([r[k] for r in results], 0) for k in results[0]}

    def task_results(self, inputa, inputb, labela, labelb, num_steps, loop=None):
        """Per task, not averaged: losses (and accuracies) [tasks, num_steps + 1].

        Column 0 is the support set before any step (what metabatch's total_loss1
        averages), column j the query set after step j. The tasks run side by
        side as in training, each with its own batch-norm statistics, so task
        t's row does not depend on which tasks share its batch.

        loop: the steps in a tf.while_loop (adapt_in_loop) rather than unrolled
        (adapt); None: where it measured faster, see test_steps_in_loop.
        """
        if loop is None:
            loop = self.test_steps_in_loop(num_steps)
        if loop:
            return self.adapt_in_loop(inputa, inputb, labela, labelb, num_steps)
        tasks = self.adapt(inputa, inputb, labela, labelb, num_steps)
        out = {'losses': tf.stack([tasks['lossa']] + tasks['lossesb'], axis=1)}
        if self.classification:
            out['accuracies'] = tf.stack([tasks['accuracya']] + tasks['accuraciesb'], axis=1)
        return out

    def test_steps_in_loop(self, num_steps):
        """Whether task_results runs the inner steps in a loop.

        The loop's graph is traced and optimised once for all the steps (554
        ops against 3,419 for Omniglot's 10): the 600-task Omniglot test's
        first batch went from about 2-3 s to 0.6 s. Not with
        max pooling: in a while loop's body TensorFlow 2.21 falls back from
        oneDNN's max-pool gradient to a kernel 40x slower, which made
        miniImagenet's test 1.3x slower.
        """
        return num_steps >= 2 and not (self.forward == self.forward_conv and self.config.max_pool)

    def adapt_in_loop(self, inputa, inputb, labela, labelb, num_steps):
        """task_results with no outer tape, the steps in a tf.while_loop.

        The same ops as adapt's, step by step, so the same numbers. Each
        step records its support results too; those of step 0 are column 0.
        """
        if num_steps < 1:
            raise ValueError('adapt_in_loop takes at least one step, not %d' % num_steps)
        names = list(self.weights)
        keys = ['losses', 'accuracies'] if self.classification else ['losses']

        def results(output, label, losses):
            return {'losses': losses, 'accuracies': accuracy(output, label) if self.classification else None}

        def record(arrays, index, values):
            return {k: arrays[k].write(index, values[k]) for k in keys}

        def step(index, weights, support, query):
            weights, outputa, lossa = self.inner_update(dict(zip(names, weights)), inputa, labela,
                                                        self.config.stop_grad, recorded=False)
            outputb = self.forward(inputb, weights, differentiated_twice=False)
            support = record(support, index, results(outputa, labela, lossa))
            query = record(query, index, results(outputb, labelb, self.loss_func(outputb, labelb)))
            return index + 1, [weights[k] for k in names], support, query

        def arrays():
            return {k: tf.TensorArray(self.dtype, size=num_steps) for k in keys}

        fast_weights = self.tile_weights(self.weights, inputa.shape[0])
        _, _, support, query = tf.while_loop(lambda index, *_: index < num_steps, step,
                                             [tf.constant(0), [fast_weights[k] for k in names], arrays(), arrays()])
        return {k: tf.concat([support[k].read(0)[:, None], tf.transpose(query[k].stack())], 1) for k in keys}

    ## Across replicas (tf.distribute) -------------------------------------------------------
    #
    # Data parallel over tasks. Every replica is given the whole meta-batch (each worker
    # draws it itself from the same seed and index, so no data is sent), takes its share
    # of the tasks, and divides its task sums by the whole meta-batch size; one all-reduce
    # (a sum) then gives every replica the meta-batch's totals and meta-gradient. The Adam
    # update runs once, outside the replicas, on the mirrored variables. Each task's batch
    # norm is its own, so splitting the tasks changes nothing but the order of the sums.

    def _across_replicas(self, replica_fn, *args):
        """replica_fn on every replica; its results, equal on all replicas after the all-reduce."""
        per_replica = self.strategy.run(replica_fn, args=args)
        return self.strategy.experimental_local_results(per_replica)[0]

    def _replica_share(self, tensors):
        """This replica's tasks of the meta-batch: a contiguous range, sizes as even as possible."""
        context = tf.distribute.get_replica_context()
        replica = tf.get_static_value(context.replica_id_in_sync_group)
        start, stop = replica_task_range(tensors[0].shape[0], context.num_replicas_in_sync, int(replica))
        return [t[start:stop] for t in tensors]

    def _replica_meta_gradients(self, inputa, inputb, labela, labelb, num_steps, record_all):
        share = self._replica_share([inputa, inputb, labela, labelb])
        out, grads = self.meta_gradients(*share, num_steps, record_all, meta_batch_size=inputa.shape[0])
        return sum_over_replicas((out, grads))

    def _replica_metabatch(self, inputa, inputb, labela, labelb, num_steps):
        share = self._replica_share([inputa, inputb, labela, labelb])
        return sum_over_replicas(self.metabatch(*share, num_steps, meta_batch_size=inputa.shape[0]))

    def _replica_evaluate_tasks(self, inputa, inputb, labela, labelb, num_steps):
        out = self.task_results(*self._replica_share([inputa, inputb, labela, labelb]), num_steps)
        context = tf.distribute.get_replica_context()
        return {k: context.all_gather(v, axis=0) for k, v in out.items()}  # in replica order: task order


def replica_task_range(num_tasks, num_replicas, replica):
    """Tasks [start, stop) of a meta-batch that replica takes: the first num_tasks % num_replicas
    replicas take one task more than the others."""
    base, extra = divmod(num_tasks, num_replicas)
    if base == 0:
        raise ValueError('%d tasks cannot be shared by %d replicas: each needs at least one'
                         % (num_tasks, num_replicas))
    start = replica * base + min(replica, extra)
    return start, start + base + (1 if replica < extra else 0)


def sum_over_replicas(structure):
    """The nested structure summed over the replicas in one all-reduce; None entries stay None."""
    flat = tf.nest.flatten(structure)
    present = [i for i, v in enumerate(flat) if v is not None]
    summed = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM,
                                                            [flat[i] for i in present])
    for i, value in zip(present, summed):
        flat[i] = value
    return tf.nest.pack_sequence_as(structure, flat)


class _FunctionCache:
    """Holds the compiled steps out of the checkpointed object graph."""

    def __init__(self):
        self.functions = {}
