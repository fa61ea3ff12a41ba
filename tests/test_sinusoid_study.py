"""Fast checks of tools/sinusoid_study.py: the reference's test-task recipe, the statistics,
and (when the reference's runs are present) that our evaluation of its run1
checkpoint gives its own per-task test MSEs."""
import itertools
import math
import os
import pickle
import random
from pathlib import Path

import numpy as np
import pytest

import sinusoid_study as study

RUN1 = os.path.join(study.REFERENCE_DIR, 'run1')


def test_reference_runs_are_looked_for_beside_the_project_not_at_a_fixed_path():
    # <project>/../shared/reference/sinusoid5shot, where <project> holds main.py
    assert os.path.exists(os.path.join(study.REPO, 'main.py'))
    assert study.REFERENCE_DIR.endswith(os.path.join(os.sep, 'shared', 'reference', 'sinusoid5shot'))
    assert os.path.dirname(os.path.dirname(os.path.dirname(study.REFERENCE_DIR))) == os.path.dirname(study.REPO)


## The test-task recipe ---------------------------------------------------------------------------

def test_tasks_are_deterministic_shaped_and_float32():
    x, y = study.reference_test_tasks()
    x2, y2 = study.reference_test_tasks()
    assert x.shape == y.shape == (600, 10, 1)
    assert x.dtype == y.dtype == np.float32
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    assert x.min() >= -5 and x.max() <= 5
    assert np.abs(y).max() <= 5.0


def test_tasks_follow_the_recipe_amp_phase_then_x_from_numpy_seed_1():
    """Task 0 and task 1 redrawn by hand: amp, phase, then 10 inputs, in that order."""
    rs = np.random.RandomState(1)
    x, y = study.reference_test_tasks(num_tasks=2)
    for i in range(2):
        amp, phase = rs.uniform(0.1, 5.0, [1]), rs.uniform(0, np.pi, [1])
        xi = rs.uniform(-5.0, 5.0, [10, 1])
        np.testing.assert_array_equal(x[i], xi.astype(np.float32))
        np.testing.assert_array_equal(y[i], (amp * np.sin(xi - phase)).astype(np.float32))
    # the first draws differ from another seed's: the seed really is 1
    assert not np.allclose(x[0], np.random.RandomState(0).uniform(-5, 5, [12, 1])[2:])


def test_tasks_leave_the_global_random_state_alone():
    np.random.seed(123)
    random.seed(123)
    expected_np, expected_py = np.random.RandomState(123).uniform(), random.Random(123).random()
    study.reference_test_tasks(num_tasks=3)
    assert np.random.uniform() == expected_np
    assert random.random() == expected_py


def test_support_is_the_first_five_points_and_query_the_last_five():
    x, y = study.reference_test_tasks(num_tasks=4)
    inputa, inputb, labela, labelb = study.task_batch(x, y, 3)
    for part in (inputa, inputb, labela, labelb):
        assert part.shape == (1, 5, 1)
    np.testing.assert_array_equal(inputa[0], x[3, :5])
    np.testing.assert_array_equal(inputb[0], x[3, 5:])
    np.testing.assert_array_equal(labela[0], y[3, :5])
    np.testing.assert_array_equal(labelb[0], y[3, 5:])


def test_global_stream_draws_amplitudes_phases_then_each_functions_inputs_from_numpy():
    """The reference-like training stream of the --stream=global experiment."""
    from data_generator import DataGenerator
    gen = DataGenerator(10, 3, datasource='sinusoid', seed=0)
    state = np.random.get_state()
    try:
        np.random.seed(7)
        inputs, outputs, amp, phase = study.global_stream_generate(gen, True, 0)
        second = study.global_stream_generate(gen, True, 0)[0]
    finally:
        np.random.set_state(state)
    rs = np.random.RandomState(7)
    want_amp, want_phase = rs.uniform(0.1, 5.0, [3]), rs.uniform(0, np.pi, [3])
    want_x = np.stack([rs.uniform(-5, 5, [10, 1]) for _ in range(3)])
    np.testing.assert_array_equal(amp, want_amp)
    np.testing.assert_array_equal(phase, want_phase)
    np.testing.assert_array_equal(inputs, want_x.astype(np.float32))
    np.testing.assert_array_equal(outputs, (want_amp[:, None, None] * np.sin(want_x - want_phase[:, None, None])).astype(np.float32))
    assert inputs.shape == (3, 10, 1) and not np.array_equal(second, inputs)  # the stream moves on; index is ignored


def test_ks_uniform_known_value():
    # D = max over the steps of the empirical CDF = 7/30 for [0.1, 0.5, 0.9]; times sqrt(3)
    assert study.ks_uniform([0.1, 0.5, 0.9], 0, 1) == pytest.approx(7 / 30 * math.sqrt(3))
    assert study.ks_uniform([1.0, 1.0, 1.0], 0, 10) > 1.36  # far from uniform


def test_stream_statistics_of_a_short_stream():
    lines = study.stream_statistics(seed=0, batches=50)
    assert len(lines) == 5 and 'amplitude' in lines[1] and 'phase' in lines[2]


## Per-run figures -------------------------------------------------------------------------------------

def test_summarize_counts_divergence_at_any_step_and_ranks_nan_last():
    mses = np.full((5, 11), 0.5)
    mses[:, 1] = [0.1, 0.2, 0.3, 0.4, 0.5]
    mses[0, 0] = 12.0        # large pre-update support loss only: "divergent" by the README's count
    mses[1, 7:] = np.nan     # diverged after adapting
    mses[1, 10] = np.inf
    s = study.summarize(mses)
    assert s['divergent'] == 2
    assert s['diverged'] == 1
    assert s['median'][2] == 0.5           # step 10 median with the nan/inf task counted as the worst
    assert s['mean_others'][0] == pytest.approx(0.4)  # tasks 2..4 at step 1
    assert s['mean1'] == pytest.approx(0.3)


def test_parse_seeds():
    assert study.parse_seeds('0-3,7,5-5') == [0, 1, 2, 3, 5, 7]


## Statistics against tabulated values ---------------------------------------------------------------

@pytest.mark.parametrize('df, expected', [(1, 12.706205), (2, 4.302653), (4, 2.776445),
                                          (9, 2.262157), (19, 2.093024), (30, 2.042272)])
def test_t_quantile_matches_the_tables(df, expected):
    assert study.t_quantile(0.975, df) == pytest.approx(expected, abs=2e-6)


def test_t_cdf_known_values():
    assert study.t_cdf(0.0, 3) == 0.5
    assert study.t_cdf(2.0, 5) == pytest.approx(0.9490303, abs=1e-7)
    assert study.t_cdf(-2.0, 5) == pytest.approx(1 - 0.9490303, abs=1e-7)
    assert study.t_cdf(1.0, 1) == pytest.approx(0.75, abs=1e-9)  # Cauchy: 1/2 + atan(1)/pi


def test_t_interval_arithmetic():
    mean, half = study.t_interval([1, 2, 3, 4, 5])
    assert mean == 3.0
    # t(0.975, 4) * sd / sqrt(n) = 2.776445 * sqrt(2.5) / sqrt(5)
    assert half == pytest.approx(2.776445 * math.sqrt(2.5 / 5), abs=1e-5)


def test_welch_known_example():
    t, df, p = study.welch([1, 2, 3, 4, 5], [2, 4, 6])
    assert t == pytest.approx(-0.738549, abs=1e-6)
    assert df == pytest.approx(3.532847, abs=1e-6)
    assert p == pytest.approx(0.506214, abs=1e-5)


def test_welch_difference_interval():
    diff, half = study.welch_difference([1, 2, 3, 4, 5], [2, 4, 6])
    assert diff == -1.0
    # t(0.975, df=3.532847) * sqrt(2.5/5 + 4/3) = 2.927405 * 1.354006
    assert half == pytest.approx(3.963726, abs=1e-5)


def test_paired_t_known_example():
    # differences 1..5: mean 3, sd sqrt(2.5), t = 3 / (sqrt(2.5) / sqrt(5)) = 4.2426 on 4 df
    mean, half, p = study.paired_t([1, 2, 3, 4, 5])
    assert mean == 3.0
    assert half == pytest.approx(2.776445 * math.sqrt(2.5 / 5), abs=1e-5)
    assert p == pytest.approx(0.013236, abs=1e-5)


def test_paired_lines_pair_by_seed():
    # seeds 0, 1, 2 in both groups (5 and 7 unpaired, and listed first or last so that pairing by
    # position would pair the wrong runs); step-1 differences 0.01, 0.02, 0.03: mean 0.02, sd 0.01,
    # t = 0.02 / (0.01 / sqrt(3)) = 2 sqrt(3) on 2 df, where P(T <= t) = 1/2 + t / (2 sqrt(2 + t^2)):
    # p = 1 - sqrt(12 / 14) = 0.0742; half-width t(0.975, 2) 0.01 / sqrt(3) = 4.302653 * 0.0057735 = 0.0248
    ours = {5: (9.0, 9.0, 9.0), 0: (0.31, 0.20, 0.10), 1: (0.34, 0.20, 0.12), 2: (0.36, 0.21, 0.14)}
    other = {0: (0.30, 0.19, 0.11), 1: (0.32, 0.18, 0.10), 2: (0.33, 0.20, 0.12), 7: (0.0, 0.0, 0.0)}
    lines = study.paired_lines(ours, other, 'global')
    assert lines[0] == 'Paired by seed (same initial weights, 3 pairs):'
    assert len(lines) == 1 + len(study.REPORT_STEPS)
    assert lines[1].startswith('step 1  ours - global +0.020 [-0.005, +0.045], paired t p=0.074;')
    # step 5: differences 0.01, 0.02, 0.01; step 10: -0.01, 0.02, 0.02
    assert lines[2].startswith('step 5  ours - global +0.013 ')
    assert lines[3].startswith('step 10 ours - global +0.010 ')
    assert study.paired_lines({0: (1, 1, 1), 1: (1, 1, 1)}, {0: (1, 1, 1), 1: (2, 2, 2)}, 'x') == []


def write_train_log(path, post):
    """A train_log.txt in main.py's format, 'Iteration N: pre, post' every 1000 iterations."""
    with open(path, 'w') as f:
        f.write('Done initializing, starting training.\n')
        for itr in range(1000, 70000, 1000):
            f.write('Iteration %d: %r, %r\n' % (itr, 3.0, post(itr)))


def test_curve_lines_mean_per_stretch(tmp_path):
    a, b, ref = tmp_path / 'a.txt', tmp_path / 'b.txt', tmp_path / 'ref.txt'
    write_train_log(a, lambda itr: itr / 1000)       # 1, 2, ..., 69
    write_train_log(b, lambda itr: 2 * itr / 1000)   # 2, 4, ..., 138
    write_train_log(ref, lambda itr: 0.5)
    lines = study.curve_lines({'ours': [str(a), str(b)], 'empty': []}, {'run1': str(ref)})
    assert len(lines) == 2 + len(study.CURVE_SEGMENTS)
    assert 'ours (2 runs)' in lines[1] and 'empty (0 runs)' in lines[1] and 'run1' in lines[1]
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    # 1000 alone: a 1, b 2; 3000-5000: a mean 4, b mean 8; 61000-69000: a 65, b 130
    assert rows['1000'][1:4] == ['1.500', '[1.000,', '2.000]']
    assert rows['3000-5000'][1:4] == ['6.000', '[4.000,', '8.000]']
    assert rows['61000-69000'][1:4] == ['97.500', '[65.000,', '130.000]']
    assert all(row[4] == '-' and row[5] == '0.500' for row in rows.values())  # the empty group, the reference


def test_verdict_grades():
    inside = {1: (True, 0.01, 0.5, 0.6), 5: (True, 0.0, 0.9, 0.9), 10: (True, -0.01, 0.4, 0.5)}
    assert study.verdict(inside, 10, 3).startswith('Verdict: AGREE')
    assert 'inside our 95% interval at every step;' in study.verdict(inside, 10, 3)
    outside = {**inside, 5: (False, 0.03, 0.07, 0.1)}
    text = study.verdict(outside, 10, 3)
    assert text.startswith('Verdict: NOT SHOWN TO AGREE') and 'OUTSIDE our 95% interval at step(s) 5' in text
    one_test = {**outside, 10: (True, 0.02, 0.2, 0.04)}  # one test alone is not enough
    assert study.verdict(one_test, 10, 3).startswith('Verdict: NOT SHOWN TO AGREE')
    both = {**outside, 10: (True, 0.02, 0.03, 0.04)}
    assert study.verdict(both, 10, 3).startswith('Verdict: DIFFER')
    assert study.verdict({**inside, 1: (True, 0.02, 0.01, 0.02)}, 10, 3).startswith('Verdict: DIFFER')


def test_permutation_p_counts_every_relabelling():
    # 56 ways to pick 3 of 8; |difference of means| >= the observed 0.0335 in 9 of them (listed by an
    # independent enumeration when the test was written: the observed split, 4 more splits with three
    # of the larger values in b and 4 with three of the smaller ones)
    a = np.array([0.367, 0.377, 0.362, 0.327, 0.308])
    b = np.array([0.300, 0.307, 0.337])
    assert study.permutation_p(a, b) == pytest.approx(9 / 56)
    assert study.permutation_p(np.array([1.0, 2, 3, 4, 5]), np.array([10.0, 11, 12])) == pytest.approx(1 / 56)
    # (only the observed split is that extreme: b = [1, 2, 3] gives |2 - 8.4| = 6.4 < 8)


def test_permutation_p_samples_when_there_are_too_many_relabellings():
    a = np.array([0.367, 0.377, 0.362, 0.327, 0.308])
    b = np.array([0.300, 0.307, 0.337])
    assert study.permutation_p(a, b, exact_limit=10, samples=20000) == pytest.approx(9 / 56, abs=0.01)
    # 20 against 10, far apart: C(30, 10) relabellings are too many to count, the estimate is at its floor
    far = study.permutation_p(np.arange(20.0), np.arange(10.0) + 100, samples=2000)
    assert far == pytest.approx(1 / 2001)


## Against the reference's own test outputs --------------------------------------------------------------

@pytest.mark.skipif(not os.path.exists(os.path.join(RUN1, study.REFERENCE_PKL)),
                    reason='the reference\'s sinusoid runs are not at %s' % RUN1)
def test_run1_checkpoint_gives_the_reference_per_task_mses_on_its_first_50_tasks():
    """The tasks, the loading and the 10-step evaluation at once: a wrong task recipe, a wrong
    split or a wrongly loaded weight would be far off the reference's own figures."""
    model = study.build_test_model()
    choice = study.load_checkpoint(model, RUN1)
    assert 'reference' in choice
    x, y = study.reference_test_tasks(num_tasks=50)
    got = study.evaluate_tasks(model, x, y)
    with open(os.path.join(RUN1, study.REFERENCE_PKL), 'rb') as f:
        expected = np.asarray(pickle.load(f)['mses'])[:50]
    assert got.shape == expected.shape == (50, 11)
    # float32 rounding of the same computation: measured at most 7e-6 relative
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)


## The reference's runs and our recorded runs ---------------------------------------------------------

def test_reference_runs_lists_run_folders_with_a_checkpoint_runs_first_then_seeds_by_number(tmp_path):
    for name in ('seed10', 'run2', 'seed3', 'run1', 'seed4', 'notes', 'seed5x'):
        (tmp_path / name).mkdir()
    for name in ('seed10', 'run2', 'seed3', 'run1', 'notes', 'seed5x'):
        (tmp_path / name / 'model69999.index').write_text('')
    # seed4 has no checkpoint; 'notes' and 'seed5x' are not run folders
    assert study.reference_runs(str(tmp_path)) == ['run1', 'run2', 'seed3', 'seed10']


def test_pkl_medians_counts_a_diverged_task_as_the_worst(tmp_path):
    mses = np.full((3, 11), 0.5)
    mses[:, 1] = [0.1, 0.2, 0.3]
    mses[0, 5], mses[1, 5], mses[2, 5] = np.nan, 0.2, 0.4   # nan ranks last: median 0.4, not 0.3
    with open(tmp_path / study.REFERENCE_PKL, 'wb') as f:
        pickle.dump({'mses': mses}, f)
    assert study.pkl_medians(str(tmp_path)) == (0.2, 0.4, 0.5)
    assert study.pkl_medians(str(tmp_path / 'elsewhere')) is None


def test_recorded_runs_read_back_what_run_line_printed(tmp_path):
    log = tmp_path / 'train_log.txt'
    write_train_log(log, lambda itr: 3.0 if itr < 3000 else 0.5 + itr / 2e6)
    s = {'median': (0.36749, 0.19051, 0.1672), 'mean1': 0.691, 'ci1': 0.077, 'divergent': 35, 'diverged': 16,
         'mean_others': (0.643, 0.419, 0.378)}
    out = tmp_path / 'old.out'
    out.write_text('\n'.join([
        'reference run1         0.300 / 0.157 / 0.142 0.635 +- 0.068    32    11   0.589 / 0.391 / 0.327 0.694      2000      1/22',
        study.run_line('ours seed 3', s, str(log), (3, 23)),
        study.run_line('global seed 3', dict(s, median=(0.1, 0.2, 0.3)), str(tmp_path / 'no-log.txt'), (0, 0)),
        'ours seed 4             not trained to 70000 iterations (x); left out']) + '\n')
    ours = study.recorded_runs(str(out), 'ours', [3, 4])
    assert list(ours) == [3]
    assert ours[3]['median'] == (0.367, 0.191, 0.167)
    assert ours[3]['escape'] == 3000
    assert ours[3]['train_post'] == 0.527  # 0.5 + 54500 / 2e6, the mean of 40000..69000, to 3 decimals
    other = study.recorded_runs(str(out), 'global', [3])
    assert other[3]['median'] == (0.1, 0.2, 0.3)
    assert other[3]['escape'] is None and math.isnan(other[3]['train_post'])


def test_recorded_runs_read_the_studys_own_earlier_output():
    path = os.path.join(study.REPO, 'docs', 'sinusoid-study', 'final_compare.out')
    ours = study.recorded_runs(path, 'ours', list(range(30)))
    other = study.recorded_runs(path, 'global', list(range(27)))
    assert sorted(ours) == list(range(30)) and sorted(other) == list(range(26))  # global 26 was not finished
    assert ours[0]['median'] == (0.367, 0.191, 0.167) and ours[0]['escape'] == 9000


def test_spread_lines_quartiles_and_the_permutation_test_of_the_deviations():
    lines = study.spread_lines({'a': [(v, v, v) for v in (0.0, 10.0, 20.0)],
                                'b': [(v, v, v) for v in (5.0, 6.0, 7.0)]})
    assert lines[1] == 'step 1  a          n=3   sd 10.000; 0.000 [5.000, 10.000, 15.000] 20.000, IQR 10.000'
    assert lines[2] == 'step 1  b          n=3   sd 1.000; 5.000 [5.500, 6.000, 6.500] 7.000, IQR 1.000'
    # deviations from the medians: a 10, 0, 10; b 1, 0, 1. Of the 20 ways to pick 3 of the 6, the
    # difference of means is as large as the observed 6 when a gets both 10s (4 ways) or neither (4 ways)
    assert lines[7] == ('step 1  sd a / b 10.00; mean absolute deviation from the median 6.667 / 0.667, '
                        'permutation p=0.400')
    assert len(lines) == 1 + 2 * 3 + 3


def test_escape_lines_count_per_iteration_and_compare_the_first_group_with_the_others():
    ours = [(2000, 0.30), (3000, 0.35), (4000, 0.40), (None, 0.50)]   # a run without a log is left out
    reference = [(2000, 0.30), (2000, 0.32), (3000, 0.31)]
    lines = study.escape_lines({'ours': ours, 'reference': reference})
    assert lines[1] == ('ours       3 runs; runs per iteration 2000: 1, 3000: 1, 4000: 1; by 2000: 1 of 3; '
                        'median 3000, mean 3000; correlation with the step-1 median +1.00')
    assert lines[2].startswith('reference  3 runs; runs per iteration 2000: 2, 3000: 1; by 2000: 2 of 3; '
                               'median 2000, mean 2333;')
    # every way of picking which 3 of the 6 escapes are "ours", counted here independently
    pooled = [2000, 3000, 4000, 2000, 2000, 3000]
    picks = list(itertools.combinations(range(6), 3))

    def p(values):
        observed = abs(np.mean(values[:3]) - np.mean(values[3:]))
        return sum(abs(np.mean([values[i] for i in k]) - np.mean([values[i] for i in range(6) if i not in k]))
                   >= observed - 1e-9 for k in picks) / len(picks)
    early = [float(v <= 2000) for v in pooled]
    assert lines[3] == ('ours - reference: share by 2000 -0.33 (permutation p=%.4f); mean escape iteration '
                        '+667 (permutation p=%.4f)' % (p(early), p(pooled)))


def test_the_study_stops_with_an_error_without_the_reference_runs(tmp_path, capsys):
    assert study.main_study(study.parse_args(['--reference', str(tmp_path)])) == 2
    assert capsys.readouterr().err.startswith('Error: no reference run1 checkpoint in %s' % tmp_path)


## The paper's protocol: trained at K = 10, tested at K = 5 and K = 10 --------------------------------

REFERENCE10_SEED1 = os.path.join(os.path.dirname(study.REFERENCE_DIR), study.K10_REFERENCE_DIR_NAME, 'seed1')


def test_train_k_10_trains_main_py_with_the_papers_k10_flags_in_its_own_folders():
    command = study.train_command(3, 'logs/x', train_k=10)
    flags = command[command.index(os.path.join(study.REPO, 'main.py')) + 1:]
    assert flags == ['--datasource=sinusoid', '--norm=None', '--metatrain_iterations=70000',
                     '--update_batch_size=10', '--update_lr=0.01', '--seed=3', '--logdir=logs/x']
    assert study.experiment_dir('logs/x', 10) == os.path.join('logs/x', 'cls_5.mbs_25.ubs_10.numstep1.updatelr0.01nonorm')
    assert study.experiment_dir('logs/x') == os.path.join('logs/x', 'cls_5.mbs_25.ubs_5.numstep1.updatelr0.01nonorm')
    assert '--update_batch_size=5' in study.train_command(3, 'logs/x')  # the K=5 study as before


def test_train_k_10_defaults_to_its_own_run_folders_and_the_k10_reference_runs():
    args = study.parse_args(['--train-k', '10'])
    assert args.logdir == study.K10_LOGDIR != study.DEFAULT_LOGDIR
    assert args.reference == os.path.join(os.path.dirname(study.REFERENCE_DIR), 'sinusoid10shot')
    args = study.parse_args([])
    assert (args.logdir, args.reference) == (study.DEFAULT_LOGDIR, study.REFERENCE_DIR)


def test_a_k10_run_already_trained_is_skipped(tmp_path, capsys):
    exp = study.experiment_dir(str(tmp_path / 'seed4'), 10)
    os.makedirs(exp)
    (Path(exp) / 'model-69999.index').write_text('')
    assert study.train(4, str(tmp_path / 'seed4'), train_k=10) == 0.0
    assert 'already trained to 70000 iterations' in capsys.readouterr().out


def test_blow_ups_and_the_k10_figures_of_one_run():
    mses = np.full((4, 11), 0.5)
    mses[:, 0] = [12.0, 0.5, 0.5, 0.5]      # a large step-0 support loss: not a blow-up, but above 10
    mses[1, 6:] = [150.0, np.inf, np.nan, np.nan, np.nan]   # blows up from step 6
    mses[2, 3] = 99.0                         # large, not a blow-up; above 10
    mses[:, 1] = [0.1, 0.2, 0.3, 0.4]
    assert study.blow_ups(mses).tolist() == [False, True, False, False]
    f = study.k10_figures(mses)
    assert f['blowups'] == 1
    assert f['plain'][0] == pytest.approx(0.25) and not math.isfinite(f['plain'][2])
    assert f['median'] == (0.25, 0.5, 0.5)
    assert f['never10'] == (0.4, 0.5, 0.5)       # only task 3 is never above 10 at any step 0..10
    assert f['without'] == pytest.approx((0.8 / 3, 0.5, 0.5))


def test_saved_mses_read_back_per_k(tmp_path):
    m5, m10 = np.random.RandomState(0).rand(3, 11), np.random.RandomState(1).rand(3, 11)
    m5[0, 4] = np.inf
    study.save_mses(str(tmp_path / 'k10' / 'seed0.npz'), {5: m5, 10: m10})
    back = study.load_mses(str(tmp_path / 'k10' / 'seed0.npz'))
    assert sorted(back) == [5, 10]
    np.testing.assert_allclose(back[5], m5, rtol=1e-7)
    np.testing.assert_allclose(back[10], m10, rtol=1e-7)


def test_representative_seed_is_the_median_step1_plain_mean_lower_middle_when_even():
    figures = {s: {'plain': (v, 1.0, 1.0)} for s, v in {0: 0.70, 1: 0.60, 2: 0.65, 3: 0.90, 4: 0.66}.items()}
    assert study.representative_seed(figures) == 4          # 0.60 0.65 [0.66] 0.70 0.90
    del figures[3]
    assert study.representative_seed(figures) == 2          # 0.60 [0.65] 0.66 0.70


def test_reference_task_parameters_are_the_tasks_amplitudes_and_phases():
    for k in (5, 10):
        x, y = study.reference_test_tasks(num_tasks=20, k=k)
        amp, phase = study.reference_task_parameters(20, k)
        assert x.shape == (20, 2 * k, 1)
        np.testing.assert_allclose(y[..., 0], amp[:, None] * np.sin(x[..., 0].astype(np.float64) - phase[:, None]),
                                   atol=1e-5)
        assert (amp >= 0.1).all() and (amp <= 5).all() and (phase >= 0).all() and (phase <= np.pi).all()


def test_k10_reference_check_names_a_run_whose_pkl_differs(tmp_path):
    mses = np.full((5, 11), 0.3)
    for k, shift in ((5, 0.0), (10, 0.01)):
        with open(tmp_path / ('test_ubs%d_stepsize0.01.pkl' % k), 'wb') as f:
            pickle.dump({'mses': mses + shift}, f)
    assert study.k10_reference_check('seed9', str(tmp_path), {5: mses}) == []
    wrong = study.k10_reference_check('seed9', str(tmp_path), {5: mses, 10: mses})
    assert len(wrong) == 1 and wrong[0].startswith('seed9 K=10: medians 0.300 / 0.300 / 0.300 and 0 blow-ups')
    blown = mses.copy()
    blown[0, 3] = np.inf
    assert study.k10_reference_check('seed9', str(tmp_path), {5: blown})  # same medians, one more blow-up


def test_row_verdict_follows_the_rule():
    agree = {'median': 'Verdict: AGREE', 'never10': 'Verdict: NOT SHOWN TO AGREE (nor to differ)',
             'plain1': 'Verdict: AGREE', 'share_p': 0.5}
    assert "THE SAME AS THE REFERENCE'S" in study.row_verdict(agree, False, 30)
    assert study.row_verdict(agree, True, 9).startswith('PARTIAL, 9 runs.')
    assert "DIFFERENT" in study.row_verdict(dict(agree, share_p=0.01), False, 30)
    assert "DIFFERENT" in study.row_verdict(dict(agree, plain1='Verdict: DIFFER'), False, 30)
    assert "NOT SHOWN" in study.row_verdict(dict(agree, median='Verdict: NOT SHOWN TO AGREE (nor to differ)'), False, 30)


def test_compare_on_one_step_only():
    lines, results = study.compare([(0.6,), (0.7,), (0.8,)], [(0.7,), (0.75,)], steps=(1,))
    assert list(results) == [1] and len(lines) == 2 and lines[0].startswith('step 1  ours 0.700')


def test_blow_up_task_lines_describe_the_tasks_that_blow_up_somewhere():
    tasks = study.reference_test_tasks(num_tasks=6, k=5)
    quiet = np.full((6, 11), 0.2)
    loud = quiet.copy()
    loud[4, 5:] = np.inf
    lines = study.blow_up_task_lines({'ours': {0: loud, 1: loud}, 'reference': {'seed1': quiet}}, tasks)
    assert lines[0].startswith('Tasks that blow up at K=5 in at least one run: 1 of 6.')
    amp, phase = study.reference_task_parameters(6, 5)
    assert lines[1].startswith('task   4  ours  2  ref  0  amp %.2f  phase %.2f  x ' % (amp[4], phase[4]))
    assert lines[2].startswith('tasks blowing up somewhere  n=  1') and lines[3].startswith('all tasks')
    assert lines[4].startswith('blow-ups (task x run)       n=  2  amplitude median %.2f' % amp[4])  # once per run


def test_the_k10_study_stops_with_an_error_without_the_reference_runs(tmp_path, capsys):
    assert study.main_study(study.parse_args(['--train-k', '10', '--seeds', '', '--reference', str(tmp_path)])) == 2
    assert capsys.readouterr().err.startswith('Error: no reference run with a checkpoint in %s' % tmp_path)


@pytest.mark.skipif(not os.path.exists(os.path.join(REFERENCE10_SEED1, 'test_ubs5_stepsize0.01.pkl')),
                    reason='the reference\'s K=10 sinusoid runs are not at %s' % REFERENCE10_SEED1)
def test_k10_seed1_checkpoint_gives_the_reference_per_task_mses_at_k5_and_k10():
    """The K=10-trained model tested on K=5 and K=10 tasks, all 600 in one batch, against the
    reference's own test pkls (seed1 has no blow-up task at either K)."""
    model = study.build_test_model()
    study.load_checkpoint(model, REFERENCE10_SEED1)
    for k in (5, 10):
        got = study.evaluate_all_tasks(model, *study.reference_test_tasks(k=k))
        with open(os.path.join(REFERENCE10_SEED1, 'test_ubs%d_stepsize0.01.pkl' % k), 'rb') as f:
            expected = np.asarray(pickle.load(f)['mses'])
        assert got.shape == expected.shape == (600, 11)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)


def test_k10_training_skips_a_seed_whose_test_mses_are_saved_and_trains_the_others(tmp_path, monkeypatch, capsys):
    """Run folders do not outlive a session; the saved per-task MSEs do: a seed with them is not trained again."""
    outputs = tmp_path / 'k10'
    study.save_mses(str(outputs / 'seed3.npz'), {5: np.zeros((2, 11)), 10: np.zeros((2, 11))})
    trained = []
    monkeypatch.setattr(study, 'train', lambda seed, logdir, stream='ours', train_k=5: trained.append((seed, train_k)))
    args = study.parse_args(['--train-k', '10', '--train', '3-4', '--no-test', '--k10-outputs', str(outputs)])
    assert study.main_study(args) == 0
    assert trained == [(4, 10)]
    assert 'seed 3: trained and tested already (%s); skipped' % (outputs / 'seed3.npz') in capsys.readouterr().out


def test_keep_run_saves_the_mses_and_the_training_log_beside_them(tmp_path):
    run = tmp_path / 'seed2'
    run.mkdir()
    write_train_log(run / 'train_log.txt', lambda itr: 0.5)
    study.keep_run(str(tmp_path / 'k10' / 'seed2.npz'), {5: np.ones((2, 11)), 10: np.ones((2, 11))}, str(run))
    assert sorted(study.load_mses(str(tmp_path / 'k10' / 'seed2.npz'))) == [5, 10]
    assert (tmp_path / 'k10' / 'seed2_train_log.txt').read_text() == (run / 'train_log.txt').read_text()
