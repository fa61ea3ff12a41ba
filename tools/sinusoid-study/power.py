"""Power of the ours-vs-reference comparison (30 runs against 3), by simulation.

Both groups normal with our run-to-run sd (from the 30 per-run medians in final_compare.out),
reference mean shifted by delta; Welch p (sinusoid_study.welch) and the exact permutation p
(every choice of 3 of 33, vectorised; checked against sinusoid_study.permutation_p). Welch's p from
scipy for speed (checked against sinusoid_study.welch). Then: with m reference runs, how often Welch
finds the observed differences (ours - reference, final_compare.out) at 5%.
Run (needs scipy) from the repository's top:
  taskset -c 1 nice -n 5 python tools/sinusoid-study/power.py > docs/sinusoid-study/power.out
"""
import argparse
import itertools, re, sys
from pathlib import Path
import numpy as np
REPO = Path(__file__).resolve().parents[2]  # this repository (tools/sinusoid-study/ is two folders down)
sys.path.insert(0, str(REPO / 'tools'))  # the study (which puts the repository root on sys.path itself)
FINAL_COMPARE = REPO / 'docs' / 'sinusoid-study' / 'final_compare.out'  # the recorded output read here
import user_errors  # noqa: E402  (tools/)
user_errors.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                           script=__file__).parse_args()
# after the arguments, so that --help needs no scipy
stats = user_errors.run(lambda: user_errors.optional_import('scipy.stats', 'power.py'))
import sinusoid_study as study  # noqa: E402
rows = [l for l in open(FINAL_COMPARE) if l.startswith('ours seed')]
med = np.array([[float(v) for v in re.search(r'(\S+) / (\S+) / (\S+)', l).groups()] for l in rows])
assert med.shape == (30, 3)
combos = np.array(list(itertools.combinations(range(33), 3)))
def perm_p(a, b):
    pooled = np.concatenate([a, b]); total = pooled.sum()
    sb = pooled[combos].sum(axis=1) / 3; sa = (total - sb * 3) / 30
    obs = abs(a.mean() - b.mean()) - 1e-12
    return np.mean(np.abs(sa - sb) >= obs)
rng = np.random.default_rng(0)
a0, b0 = rng.normal(size=30), rng.normal(size=3)
assert abs(perm_p(a0, b0) - study.permutation_p(a0, b0)) < 1e-12
def welch_p(a, b):
    return stats.ttest_ind(a, b, equal_var=False).pvalue
assert abs(welch_p(a0, b0) - study.welch(a0, b0)[2]) < 1e-6
print('our per-run medians, sd over 30 runs at steps 1/5/10: %s' % ' / '.join('%.4f' % s for s in med.std(axis=0, ddof=1)))
SIMS = 2000
for j, step in enumerate(study.REPORT_STEPS):
    sd = med[:, j].std(ddof=1)
    for delta_sd in (0.0, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0):
        hits_w = hits_both = 0
        for _ in range(SIMS):
            a = rng.normal(0, sd, 30); b = rng.normal(-delta_sd * sd, sd, 3)
            pw = welch_p(a, b); pp = perm_p(a, b)
            hits_w += pw < 0.05; hits_both += max(pw, pp) < 0.05
        print('step %-2d difference %.2f sd = %.3f: Welch p<0.05 in %.0f%%, Welch and permutation both in %.0f%% of %d simulations'
              % (step, delta_sd, delta_sd * sd, 100 * hits_w / SIMS, 100 * hits_both / SIMS, SIMS))
observed = {}
for line in open(FINAL_COMPARE):
    m = re.match(r'^\s+ours - reference ([+-]\S+), Welch', line)
    if m:
        observed[len(observed)] = float(m.group(1))
print('observed ours - reference at steps 1/5/10: %s' % ' / '.join('%+.3f' % v for v in observed.values()))
for j, step in enumerate(study.REPORT_STEPS):
    sd = med[:, j].std(ddof=1)
    out = []
    for m in (3, 5, 10, 20, 30):
        hits = sum(welch_p(rng.normal(0, sd, 30), rng.normal(-observed[j], sd, m)) < 0.05 for _ in range(SIMS))
        out.append('%d runs %.0f%%' % (m, 100 * hits / SIMS))
    print('step %-2d difference %.3f (%.2f sd): Welch p<0.05 with %s' % (step, observed[j], observed[j] / sd, ', '.join(out)))
