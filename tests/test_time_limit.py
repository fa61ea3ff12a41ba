"""The per-test time limit of conftest.py: a test that sleeps or blocks past it fails, and says so."""
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

OVERRUNS = '''
import subprocess, sys, time
import pytest

@pytest.mark.time_limit(1)
def test_sleeps_past_its_limit():
    time.sleep(60)

@pytest.mark.time_limit(1)
def test_blocks_on_a_silent_pipe():
    proc = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], stdout=subprocess.PIPE)
    try:
        proc.stdout.readline()
    finally:
        proc.kill()

def test_within_the_default_limit():
    time.sleep(0.1)
'''


def test_a_test_past_its_time_limit_fails_and_the_run_goes_on(tmp_path):
    shutil.copy(HERE / 'conftest.py', tmp_path / 'conftest.py')
    (tmp_path / 'test_overruns.py').write_text(OVERRUNS)
    start = time.time()
    proc = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', str(tmp_path)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert time.time() - start < 60, proc.stdout
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert '2 failed, 1 passed' in proc.stdout, proc.stdout
    assert proc.stdout.count('ran longer than its time limit of 1 s') >= 2, proc.stdout


def test_waiting_for_a_line_of_a_silent_process_times_out():
    from runner import LineReader
    proc = subprocess.Popen([sys.executable, '-c', 'import time; print("first", flush=True); time.sleep(60)'],
                            stdout=subprocess.PIPE, text=True)
    try:
        reader = LineReader(proc.stdout)
        assert reader.wait_for(lambda line: line.startswith('first'), timeout=30) == ['first\n']
        start = time.time()
        try:
            reader.wait_for(lambda line: line.startswith('never'), timeout=1)
        except AssertionError as e:
            assert 'not seen in 1 s' in str(e) and 'first' in str(e)
        else:
            raise AssertionError('wait_for returned without the line')
        assert time.time() - start < 10
    finally:
        proc.kill()
        proc.wait()
