"""The paper's experiments: one table that reproduce.py, the README and the tests read.

Each entry holds the reference command line (main.py flags, without --logdir),
the inner step(s) at which the paper reports its figure, and the published
figure with its 95% confidence interval. Accuracies are in percent; sinusoid
figures are mean squared errors (lower is better). Sources: Finn, Abbeel and
Levine, ICML 2017 (arXiv 1703.03400): Table 1 (Omniglot and miniImagenet,
second and first order) and the k-shot sinusoid regression figures; the
first-order Omniglot figures are from Nichol, Achiam and Schulman, "On
First-Order Meta-Learning Algorithms" (arXiv 1803.02999), Table 1. The
figures are those of ../shared/SPEC.md, "Published figures"; tests check
that the two agree.

Sinusoid: the paper trains and tests with alpha = 0.01 (its section 5.1);
the reference README's sinusoid command leaves update_lr at its default
0.001. The table uses the paper's 0.01, since its figures are the target; the
reference command with 0.001 is the '-alpha0.001' entry. The pretrained
baseline is fine-tuned at test time with step 0.01, as in the paper's figure.
"""
import dataclasses
from typing import Optional, Tuple

ACCURACY, MSE = 'accuracy', 'mse'


@dataclasses.dataclass(frozen=True)
class Experiment:
    name: str
    description: str
    flags: Tuple[str, ...]                       # main.py flags of the reference command (no --logdir)
    steps: Tuple[int, ...]                       # inner steps the paper reports
    published: Tuple[Optional[Tuple[float, Optional[float]]], ...]  # (mean, ci95 or None) per step, None: no figure
    metric: str = ACCURACY                       # ACCURACY (percent, higher is better) or MSE (lower is better)
    source: str = 'MAML paper, Table 1'
    note: str = ''
    first_order: Optional[str] = None            # name of the same experiment with --stop_grad=True

    @property
    def higher_is_better(self):
        return self.metric == ACCURACY

    @property
    def scale(self):
        """Factor from the test CSV's units to the published units (fractions -> percent)."""
        return 100.0 if self.metric == ACCURACY else 1.0

    @property
    def stop_grad(self):
        return '--stop_grad=True' in self.flags

    def flag_value(self, name, default=None):
        for flag in self.flags:
            key, _, value = flag.lstrip('-').partition('=')
            if key == name:
                return value
        return default

    @property
    def iterations(self):
        """Training iterations of the reference command (meta-training, or pretraining for the baselines)."""
        meta = int(self.flag_value('metatrain_iterations', 15000))
        return meta if meta else int(self.flag_value('pretrain_iterations', 0))


def _flags(text):
    return tuple(text.split())


SINE = '--datasource=sinusoid --norm=None'
SINE_PRE = SINE + ' --pretrain_iterations=70000 --metatrain_iterations=0'
O5 = '--datasource=omniglot --metatrain_iterations=60000 --meta_batch_size=32 --update_lr=0.4 --num_updates=1'
O20 = ('--datasource=omniglot --metatrain_iterations=60000 --meta_batch_size=16 --update_lr=0.1 '
       '--num_updates=5 --num_classes=20')
MINI = ('--datasource=miniimagenet --metatrain_iterations=60000 --meta_batch_size=4 --update_lr=0.01 '
        '--num_updates=5 --num_classes=5 --num_filters=32 --max_pool=True')
FO = ' --stop_grad=True'
SINE_MAML_K5 = ((0.67, None), (0.38, None), (0.35, None))  # MSE after 1, 5, 10 steps
REPTILE = 'Reptile paper (Nichol et al. 2018), Table 1'


def _classification(name, description, base, k, step, published, fo_published, fo_source=REPTILE, extra=''):
    flags = '%s --update_batch_size=%d%s' % (base, k, extra)
    entries = [Experiment(name, description, _flags(flags), (step,), (published,),
                          first_order=name + '-fo' if fo_published else None)]
    if fo_published:
        entries.append(Experiment(name + '-fo', description + ', first-order MAML', _flags(flags + FO),
                                  (step,), (fo_published,), source=fo_source))
    return entries


EXPERIMENTS = [
    Experiment('sinusoid-5shot', 'Sinusoid regression, K=5, MAML (alpha 0.01, as in the paper)',
               _flags(SINE + ' --metatrain_iterations=70000 --update_batch_size=5 --update_lr=0.01'),
               (1, 5, 10), SINE_MAML_K5, metric=MSE,
               source='MAML paper, sinusoid figure', note='the paper gives no CI for the sinusoid MSE'),
    Experiment('sinusoid-5shot-alpha0.001', 'Sinusoid regression, K=5, MAML, the reference README\'s alpha 0.001',
               _flags(SINE + ' --metatrain_iterations=70000 --update_batch_size=5'),
               (1, 5, 10), SINE_MAML_K5, metric=MSE,
               source='MAML paper, sinusoid figure (trained with alpha 0.01)',
               note='update_lr left at its default 0.001, as the reference README\'s command does'),
    Experiment('sinusoid-10shot', 'Sinusoid regression, K=10, MAML (alpha 0.01, as in the paper)',
               _flags(SINE + ' --metatrain_iterations=70000 --update_batch_size=10 --update_lr=0.01'),
               (1, 5, 10), (None, None, None), metric=MSE,
               source='MAML paper, sinusoid figure', note='plotted only; the paper gives no number'),
    Experiment('sinusoid-10shot-alpha0.001', 'Sinusoid regression, K=10, MAML, the reference README\'s command',
               _flags(SINE + ' --metatrain_iterations=70000 --update_batch_size=10'),
               (1, 5, 10), (None, None, None), metric=MSE,
               source='MAML paper, sinusoid figure', note='the reference README\'s sinusoid command, verbatim'),
    Experiment('sinusoid-5shot-pretrained', 'Sinusoid regression, K=5, pretrained baseline (fine-tuned with step 0.01)',
               _flags(SINE_PRE + ' --update_batch_size=5 --update_lr=0.01'),
               (1, 5, 10), ((2.41, None), (2.23, None), (2.19, None)), metric=MSE,
               source='MAML paper, sinusoid figure',
               note='pretraining ignores update_lr; 0.01 is the paper\'s fine-tuning step at test time'),
    Experiment('sinusoid-5shot-oracle', 'Sinusoid regression, K=5, oracle (amplitude and phase as inputs)',
               _flags(SINE_PRE + ' --update_batch_size=5 --baseline=oracle'),
               (1, 5, 10), (None, None, None), metric=MSE,
               source='MAML paper, sinusoid figure', note='plotted only (near 0); the paper gives no number'),
    *_classification('omniglot-5way-1shot', 'Omniglot 5-way 1-shot', O5, 1, 3, (98.7, 0.4), (98.3, 0.5)),
    *_classification('omniglot-5way-5shot', 'Omniglot 5-way 5-shot', O5, 5, 3, (99.9, 0.1), (99.2, 0.2)),
    *_classification('omniglot-20way-1shot', 'Omniglot 20-way 1-shot', O20, 1, 5, (95.8, 0.3), (89.4, 0.5)),
    *_classification('omniglot-20way-5shot', 'Omniglot 20-way 5-shot', O20, 5, 5, (98.9, 0.2), (97.9, 0.1)),
    *_classification('omniglot-5way-1shot-fc', 'Omniglot 5-way 1-shot, fc net', O5, 1, 3, (89.7, 1.1), None,
               extra=' --conv=False'),
    *_classification('omniglot-5way-5shot-fc', 'Omniglot 5-way 5-shot, fc net', O5, 5, 3, (97.5, 0.6), None,
               extra=' --conv=False'),
    *_classification('miniimagenet-5way-1shot', 'miniImagenet 5-way 1-shot', MINI, 1, 10, (48.70, 1.84),
               (48.07, 1.75), fo_source='MAML paper, Table 1'),
    *_classification('miniimagenet-5way-5shot', 'miniImagenet 5-way 5-shot (paper: meta_batch_size 2)', MINI, 5, 10,
               (63.11, 0.92), (63.15, 0.91), fo_source='MAML paper, Table 1'),
]

BY_NAME = {e.name: e for e in EXPERIMENTS}


def get(name):
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError('unknown experiment %r; known: %s' % (name, ', '.join(BY_NAME))) from None


def second_order_of(experiment):
    """The second-order experiment whose first-order variant `experiment` is (or None)."""
    for e in EXPERIMENTS:
        if e.first_order == experiment.name:
            return e
    return None
