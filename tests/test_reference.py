"""The golden fixtures: the reference code's own numbers, reproduced in float64."""
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import reference_check
from conftest import GOLDEN, REPO, SHARED
from golden import compact

FIXTURES = sorted(GOLDEN.glob('*.npz'))
ORIGINALS = SHARED / 'reference' / 'golden'  # the fixtures as made, outside a clone


def test_the_fixtures_are_in_the_repository():
    assert [p.stem for p in FIXTURES] == ['mini_bn_so', 'o20_bn_so', 'o5_bn_fo', 'o5_bn_so', 'o5_fc_bn', 'o5_ln_so',
                                          'sin_fo', 'sin_so']


@pytest.mark.skipif(not ORIGINALS.is_dir(), reason='no ../shared/reference/golden (the originals) to compare with')
@pytest.mark.parametrize('path', FIXTURES, ids=[p.stem for p in FIXTURES])
def test_compact_form_gives_back_the_original_arrays(path):
    with np.load(ORIGINALS / path.name) as data:
        original = {k: data[k] for k in data.files}
    expanded = compact.load(path)
    assert sorted(expanded) == sorted(original)
    for key, value in original.items():
        assert expanded[key].dtype == value.dtype and expanded[key].shape == value.shape, key
        assert np.array_equal(expanded[key], value), key


def test_compact_form_stores_the_images_as_uint8():
    """The pixels and one-hot labels as uint8; compact() of the expanded arrays is what is stored."""
    with np.load(GOLDEN / 'o5_bn_so.npz') as data:
        stored = {k: data[k] for k in data.files}
    for key in ('pixels/inputa', 'pixels/inputb', 'uint8/labela', 'uint8/labelb'):
        assert stored[key].dtype == np.uint8, key
    again = compact.compact(compact.expand(stored))
    assert sorted(again) == sorted(stored)
    for key, value in again.items():
        assert value.dtype == stored[key].dtype and np.array_equal(value, stored[key]), key


def test_compact_form_keeps_what_uint8_would_round():
    assert compact.encode('inputa', np.array([0.5, 1.0]))[0] == 'inputa'  # 0.5 is no pixel / 255
    assert compact.encode('inputa', np.array([128 / 255, 1.0]))[0] == 'inputa'  # divided in float64, not float32
    assert compact.encode('inputa', np.array([np.float32(128) / np.float32(255), 1.0]))[0] == 'pixels/inputa'
    assert compact.encode('init/w1', np.array([0.0, 1.0]))[0] == 'init/w1'  # weights stay float64


def test_a_fixture_in_the_original_layout_is_read_as_it_is(tmp_path):
    fixture = compact.load(GOLDEN / 'o5_ln_so.npz')
    np.savez(tmp_path / 'o5_ln_so.npz', **fixture)
    again = reference_check.load_fixture(tmp_path / 'o5_ln_so.npz')
    assert again['flags'] == reference_check.load_fixture(GOLDEN / 'o5_ln_so.npz')['flags']
    for key, value in fixture.items():
        if key != 'flags_json':
            assert again[key].dtype == value.dtype and np.array_equal(again[key], value), key


@pytest.mark.time_limit(1800)  # mini_bn_so took over 900 s on a loaded machine (2026-12-04)
@pytest.mark.parametrize('path', FIXTURES, ids=[p.stem for p in FIXTURES])
def test_fixture_matches_in_float64(path):
    fixture = reference_check.load_fixture(path)
    errs = reference_check.errors(fixture, reference_check.run_fixture(fixture, tf.float64))
    for kind, value in errs.items():
        assert value <= reference_check.BOUNDS[kind], '%s error %.2e' % (kind, value)


def test_a_perturbed_weight_is_caught():
    """The check can fail: nudge one initial weight and the gradients no longer match."""
    fixture = reference_check.load_fixture(GOLDEN / 'sin_so.npz')
    name = next(k for k in fixture if k.startswith('init/'))
    fixture[name] = fixture[name] + 1e-3 * np.sign(fixture[name] + 0.5)
    ours = reference_check.run_fixture(fixture, tf.float64)
    fixture[name] = fixture[name] - 1e-3 * np.sign(fixture[name] + 0.5)  # compare with the original
    errs = reference_check.errors(fixture, ours)
    assert errs['grad'] > reference_check.BOUNDS['grad']


def test_command_line_prints_one_line_per_fixture():
    paths = [str(GOLDEN / n) for n in ('sin_so.npz', 'sin_fo.npz')]
    proc = subprocess.run([sys.executable, str(REPO / 'tests' / 'reference_check.py')] + paths,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert [l.split()[0] for l in lines[:2]] == ['sin_so', 'sin_fo']
    assert all(' ok ' in l and 'float32 (info)' in l for l in lines[:2])
    assert lines[2].startswith('bounds:')
