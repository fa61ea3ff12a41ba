"""Shared test setup: quiet TensorFlow, the repo on sys.path, the slow marker."""
import os
import sys
from pathlib import Path

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
# As utils.py does, in case a test imports TensorFlow before utils. main.py in a
# subprocess gets the user's environment without it (runner.user_env), so that
# the tests see the import order users get.
if 'TF_ENABLE_ONEDNN_OPTS' not in os.environ:
    os.environ['TF_ENABLE_ONEDNN_OPTS'] = '1'
    os.environ['MAML_TESTS_ADDED_ONEDNN_OPTS'] = '1'
REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / 'shared'
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / 'tests'))

import pytest  # noqa: E402


def pytest_addoption(parser):
    parser.addoption('--runslow', action='store_true', help='also run tests marked slow')


def pytest_collection_modifyitems(config, items):
    if config.getoption('--runslow') or os.environ.get('MAML_RUN_SLOW') == '1':
        return
    skip = pytest.mark.skip(reason='slow: run with --runslow or MAML_RUN_SLOW=1')
    for item in items:
        if 'slow' in item.keywords:
            item.add_marker(skip)
