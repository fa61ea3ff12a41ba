"""Shared test setup: quiet TensorFlow, the repo on sys.path, the slow marker, a time limit per test."""
import faulthandler
import os
import signal
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
GOLDEN = REPO / 'tests' / 'golden'  # the golden fixtures, compact form (tests/golden/README.md)
# tools/ (benchmark, sinusoid_study: tested here) after the program's modules, which a tool never hides
sys.path.insert(0, str(REPO / 'tools'))
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / 'tests'))

import pytest  # noqa: E402


# Every test has a time limit (its fixtures' set-up included), so that a hang fails one
# test instead of stalling CI.
# A test may set its own with @pytest.mark.time_limit(seconds).
TIME_LIMIT = 1200
SLOW_TIME_LIMIT = 3600
# A hang inside TensorFlow's C++ code never returns to Python, where the alarm is raised:
# this much later the stacks are printed and the run is ended.
HARD_STOP_AFTER = 120


class TimeLimitExceeded(Exception):
    pass


def pytest_addoption(parser):
    parser.addoption('--runslow', action='store_true', help='also run tests marked slow')


def pytest_configure(config):
    config.addinivalue_line('markers', 'time_limit(seconds): fail the test when it runs longer (default %d s, '
                            'slow tests %d s)' % (TIME_LIMIT, SLOW_TIME_LIMIT))


def time_limit(item):
    marker = item.get_closest_marker('time_limit')
    if marker is not None:
        return marker.args[0]
    return SLOW_TIME_LIMIT if 'slow' in item.keywords else TIME_LIMIT


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    limit = time_limit(item)

    def expire(signum, frame):
        raise TimeLimitExceeded('%s ran longer than its time limit of %s s' % (item.nodeid, limit))

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, limit)
    faulthandler.dump_traceback_later(limit + HARD_STOP_AFTER, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def pytest_collection_modifyitems(config, items):
    if config.getoption('--runslow') or os.environ.get('MAML_RUN_SLOW') == '1':
        return
    skip = pytest.mark.skip(reason='slow: run with --runslow or MAML_RUN_SLOW=1')
    for item in items:
        if 'slow' in item.keywords:
            item.add_marker(skip)


# The real data sets, prepared once per test session from ../shared/data by data.prepare:
# tests/test_prepare.py checks the output, tests/test_released_models.py re-scores on it.
REAL_DATA = {  # datasource: (its archives under ../shared/data, the folder data.prepare writes)
    'omniglot': ('omniglot', 'omniglot_resized'),
    'miniimagenet': ('miniImagenet', 'miniImagenet'),
}


@pytest.fixture(scope='session')
def prepare_real_data(tmp_path_factory):
    """datasource -> (a --data_dir holding it freshly prepared, what data.prepare printed);
    skips the test when ../shared/data lacks the archives."""
    import subprocess
    done = {}

    def prepare(datasource):
        source, folder = REAL_DATA[datasource]
        if not (SHARED / 'data' / source).is_dir():
            pytest.skip('real data not available: %s does not exist' % (SHARED / 'data' / source))
        if datasource not in done:
            data = tmp_path_factory.mktemp('real_data')
            proc = subprocess.run([sys.executable, '-m', 'data.prepare', datasource, str(SHARED / 'data' / source),
                                   '--out', str(data / folder)], capture_output=True, text=True, cwd=str(REPO),
                                  timeout=900)
            assert proc.returncode == 0, proc.stdout + proc.stderr
            done[datasource] = data, proc.stdout
        return done[datasource]
    return prepare

