"""The golden fixtures: the reference code's own numbers, reproduced in float64."""
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import reference_check
from conftest import REPO, SHARED

FIXTURES = sorted((SHARED / 'reference' / 'golden').glob('*.npz'))
pytestmark = pytest.mark.skipif(not FIXTURES, reason='no fixtures in ../shared/reference/golden')


@pytest.mark.parametrize('path', FIXTURES, ids=[p.stem for p in FIXTURES])
def test_fixture_matches_in_float64(path):
    fixture = reference_check.load_fixture(path)
    errs = reference_check.errors(fixture, reference_check.run_fixture(fixture, tf.float64))
    for kind, value in errs.items():
        assert value <= reference_check.BOUNDS[kind], '%s error %.2e' % (kind, value)


def test_a_perturbed_weight_is_caught():
    """The check can fail: nudge one initial weight and the gradients no longer match."""
    fixture = reference_check.load_fixture(SHARED / 'reference' / 'golden' / 'sin_so.npz')
    name = next(k for k in fixture if k.startswith('init/'))
    fixture[name] = fixture[name] + 1e-3 * np.sign(fixture[name] + 0.5)
    ours = reference_check.run_fixture(fixture, tf.float64)
    fixture[name] = fixture[name] - 1e-3 * np.sign(fixture[name] + 0.5)  # compare with the original
    errs = reference_check.errors(fixture, ours)
    assert errs['grad'] > reference_check.BOUNDS['grad']


def test_command_line_prints_one_line_per_fixture():
    paths = [str(SHARED / 'reference' / 'golden' / n) for n in ('sin_so.npz', 'sin_fo.npz')]
    proc = subprocess.run([sys.executable, str(REPO / 'tests' / 'reference_check.py')] + paths,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert [l.split()[0] for l in lines[:2]] == ['sin_so', 'sin_fo']
    assert all(' ok ' in l and 'float32 (info)' in l for l in lines[:2])
    assert lines[2].startswith('bounds:')
