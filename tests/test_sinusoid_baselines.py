"""tools/sinusoid_baselines.py: which test tasks are listed as diverging, the tasks rebuilt as main.py
and the reference drew them, the network's Jacobian and curvature, and its errors (one line, exit 2)."""
import pickle

import numpy as np
import pytest

import sinusoid_baselines as sb


def mses_with(rows, n=6):
    """[n, 11] MSEs of 0.01 everywhere but the given {task: row}."""
    m = np.full((n, 11), 0.01)
    for i, row in rows.items():
        m[i] = row
    return m


## Which tasks are listed ------------------------------------------------------------------------------

def test_a_task_is_listed_when_some_step_after_adaptation_exceeds_the_threshold():
    grows = [0.01, 0.1, 5, 40, 12, 3, 3, 3, 3, 3, 3]       # above 10 at steps 3 and 4
    support_only = [50, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]     # step 0 is the support loss: not a step taken
    late = [0.01] * 10 + [10.5]                            # only at step 10
    m = mses_with({1: grows, 2: support_only, 4: late})
    np.testing.assert_array_equal(sb.diverging(m, 10), [False, True, False, False, True, False])
    np.testing.assert_array_equal(sb.first_step_above(m, 10), [0, 3, 0, 0, 10, 0])


def test_a_task_whose_mse_is_nan_or_inf_is_listed():
    m = mses_with({0: [0.01, 1, 1e30, np.inf, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan],
                   2: [0.01] * 5 + [np.nan] * 6})
    np.testing.assert_array_equal(sb.diverging(m, 10), [True, False, True, False, False, False])
    np.testing.assert_array_equal(sb.diverging(m, 10, growth=2), [True, False, True, False, False, False])
    np.testing.assert_array_equal(sb.first_step_above(m, 10), [2, 0, 5, 0, 0, 0])


def test_growth_also_asks_the_mse_to_rise_that_much_after_step_1():
    rising = [3, 2, 2.5, 5, 5, 5, 5, 5, 5, 5, 5]          # 2.5 x its step-1 MSE
    high_but_falling = [30, 20, 15, 12, 11, 11, 11, 11, 11, 11, 11]
    m = mses_with({0: rising, 1: high_but_falling})
    np.testing.assert_array_equal(sb.diverging(m, above=0, growth=2), [True, False, False, False, False, False])
    np.testing.assert_array_equal(sb.diverging(m, above=10), [False, True, False, False, False, False])


## The tasks -----------------------------------------------------------------------------------------

def test_our_tasks_are_the_ones_main_py_tests_with_the_oracle_inputs_beside():
    from data_generator import DataGenerator
    x, amp, phase = sb.our_tasks(4, 5, seed=0, split='test')
    gen = DataGenerator(10, 1, 'sinusoid', test_set=True, seed=0, baseline='oracle')
    inputs = sb.network_inputs(x, amp, phase, 3)
    for i in range(4):
        inputa, inputb, _, _ = gen.make_batch(False, i, 5)
        np.testing.assert_array_equal(inputs[i, :5], inputa[0])
        np.testing.assert_array_equal(inputs[i, 5:], inputb[0])
    other = sb.our_tasks(4, 5, seed=0, split='val')[0]
    assert not np.array_equal(x, other)


def test_reference_tasks_are_the_recipe_sinusoid_study_checks_against_the_reference_pkl():
    import sinusoid_study
    x, amp, phase = sb.reference_tasks(600, 5)
    x_study, y_study = sinusoid_study.reference_test_tasks()
    np.testing.assert_array_equal(x, x_study[:, :, 0])
    np.testing.assert_allclose(amp[:, None] * np.sin(x.astype(np.float64) - phase[:, None]), y_study[:, :, 0],
                               rtol=1e-5, atol=1e-5)


## Jacobian and curvature ----------------------------------------------------------------------------

def small_network(rng, dim_input=3, hidden=7):
    return {'w1': rng.normal(size=(dim_input, hidden)), 'b1': rng.normal(size=hidden),
            'w2': rng.normal(size=(hidden, hidden)), 'b2': rng.normal(size=hidden),
            'w3': rng.normal(size=(hidden, 1)), 'b3': rng.normal(size=1)}


def forward(w, inputs):
    h = np.maximum(inputs @ w['w1'] + w['b1'], 0)
    h = np.maximum(h @ w['w2'] + w['b2'], 0)
    return (h @ w['w3'] + w['b3'])[:, 0]


def test_the_jacobian_is_the_networks_derivative_by_each_weight_in_order():
    rng = np.random.default_rng(0)
    w = small_network(rng)
    inputs = rng.normal(size=(5, 3))
    jac = sb.output_jacobian(w, inputs)
    numeric, eps = [], 1e-6
    for name in sb.LAYERS:
        for idx in np.ndindex(w[name].shape):
            up, down = {k: v.copy() for k, v in w.items()}, {k: v.copy() for k, v in w.items()}
            up[name][idx] += eps
            down[name][idx] -= eps
            numeric.append((forward(up, inputs) - forward(down, inputs)) / (2 * eps))
    np.testing.assert_allclose(jac, np.stack(numeric, axis=1), rtol=1e-5, atol=1e-6)


def test_curvature_is_the_hessians_top_eigenvalue_where_the_fit_is_exact():
    """With zero residuals the MSE's Hessian is its Gauss-Newton matrix: compare with the Hessian
    from finite differences of the gradient (2/K) J^T r."""
    rng = np.random.default_rng(1)
    w = small_network(rng)
    inputs = rng.normal(size=(5, 3))
    labels = forward(w, inputs)
    flat = np.concatenate([w[n].ravel() for n in sb.LAYERS])

    def unflatten(v):
        out, at = {}, 0
        for n in sb.LAYERS:
            out[n] = v[at:at + w[n].size].reshape(w[n].shape)
            at += w[n].size
        return out

    def gradient(v):
        u = unflatten(v)
        return 2.0 / len(inputs) * sb.output_jacobian(u, inputs).T @ (forward(u, inputs) - labels)

    eps = 1e-6
    hessian = np.stack([(gradient(flat + eps * e) - gradient(flat - eps * e)) / (2 * eps) for e in np.eye(len(flat))])
    expected = np.linalg.eigvalsh((hessian + hessian.T) / 2).max()
    assert sb.curvature(w, inputs) == pytest.approx(expected, rel=1e-4)


## Command line ----------------------------------------------------------------------------------------

def write_pkl(folder, mses, name='test_ubs5_stepsize0.001.pkl'):
    path = folder / name
    with open(path, 'wb') as f:
        pickle.dump({'mses': mses}, f)
    return str(path)


def test_the_command_lists_the_diverging_tasks_with_their_parameters(tmp_path, capsys):
    m = mses_with({3: [0.01, 0.1, 5, 40, 12, 3, 3, 3, 3, 3, 3]}, n=8)
    assert sb.main([write_pkl(tmp_path, m)]) == 0
    out = capsys.readouterr().out
    x, amp, phase = sb.our_tasks(8, 5)
    assert 'K=5, step size 0.001' in out
    assert 'MSE above 10 at some step 1..10: 1 of 8; first step above 10: step 3: 1' in out
    row = [line for line in out.splitlines() if line.startswith('   3  ')]
    assert len(row) == 1 and ('%.2f  %.2f' % (amp[3], phase[3])) in row[0]
    assert ' '.join('%+5.2f' % v for v in np.sort(x[3, :5].astype(np.float64))) in row[0]


@pytest.mark.parametrize('make_args, message', [
    (lambda d: [str(d / 'missing_test_ubs5_stepsize0.01.pkl')], 'Error: no file'),
    (lambda d: [write_pkl(d, np.zeros((4, 3)))], 'expected [tasks, 11]'),
    (lambda d: [write_pkl(d, np.zeros((4, 11)), name='results.pkl')], 'cannot read K from the file name'),
    (lambda d: [write_pkl(d, np.zeros((4, 11))), '--top', '-1'], '--top at least 0'),
    (lambda d: [write_pkl(d, np.zeros((4, 11))), '--curvature'], '--curvature: no checkpoint'),
])
def test_user_errors_are_one_line_and_exit_2(tmp_path, capsys, make_args, message):
    with pytest.raises(SystemExit) as exit_info:
        sb.run(lambda: sb.main(make_args(tmp_path)))  # as the tool runs from the command line
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith('Error: ') and message in err and len(err.strip().splitlines()) == 1


def test_a_file_that_is_not_a_pickle_is_a_one_line_error(tmp_path, capsys):
    path = tmp_path / 'test_ubs5_stepsize0.01.pkl'
    path.write_text('not a pickle')
    with pytest.raises(SystemExit) as exit_info:
        sb.run(lambda: sb.main([str(path)]))
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith('Error: %s is not a test pkl' % path)


def test_help_exits_0(capsys):
    with pytest.raises(SystemExit) as exit_info:
        sb.main(['--help'])
    assert exit_info.value.code == 0
    assert 'diverge' in capsys.readouterr().out
