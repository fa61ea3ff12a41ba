"""Run main.py as a user would: a fresh process, real flags, its printed lines."""
import csv
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np

from conftest import REPO

ITERATION_LINE = re.compile(r'^(?:Pretrain )?Iteration (\d+): (\S+), (\S+)$', re.M)


def main_command(*flags):
    return [sys.executable, str(REPO / 'main.py')] + list(flags)


def user_env():
    """The environment a user's shell would give main.py: without what conftest added."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', PYTHONUNBUFFERED='1')
    if env.pop('MAML_TESTS_ADDED_ONEDNN_OPTS', None):
        del env['TF_ENABLE_ONEDNN_OPTS']
    return env


def run_main(*flags, cwd, timeout=900):
    """Run main.py in cwd; returns the CompletedProcess (stdout and stderr as text)."""
    return subprocess.run(main_command(*flags), cwd=str(cwd), env=user_env(), capture_output=True,
                          text=True, timeout=timeout)


def start_main(*flags, cwd, sigint_ignored=False):
    """Start main.py in the background; stdout is a pipe read line by line.

    sigint_ignored: start it as a shell starts a background job (`cmd &`), SIGINT ignored.
    """
    ignore = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if sigint_ignored else None
    return subprocess.Popen(main_command(*flags), cwd=str(cwd), env=user_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=ignore)


class LineReader:
    """Reads a pipe in a thread, so that waiting for a line can time out (a bare readline() blocks for good)."""

    def __init__(self, pipe):
        self.lines, self._queue = [], queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self._thread.start()

    def _read(self, pipe):
        for line in iter(pipe.readline, ''):
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, predicate, timeout):
        """Lines up to the first for which predicate holds; AssertionError at the timeout or the pipe's end."""
        deadline = time.time() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.time()))
            except queue.Empty:
                break
            if line is None:
                self._queue.put(None)
                break
            self.lines.append(line)
            if predicate(line):
                return self.lines
        raise AssertionError('not seen in %d s; output so far:\n%s' % (timeout, ''.join(self.lines)))

    def text(self, timeout=60):
        """Everything read, once the pipe has closed."""
        self._thread.join(timeout)
        assert not self._thread.is_alive(), 'the pipe is still open after %d s' % timeout
        while True:
            line = self._queue.get_nowait()
            if line is None:
                return ''.join(self.lines)
            self.lines.append(line)


def iteration_lines(stdout):
    """{iteration: (pre, post)} as printed, exact strings."""
    return {int(m.group(1)): (m.group(2), m.group(3)) for m in ITERATION_LINE.finditer(stdout)}


def read_results_csv(path):
    """(header, means, stds, ci95) of a test CSV."""
    with open(path) as f:
        rows = list(csv.reader(f))
    return rows[0], *(np.array(r, float) for r in rows[1:4])


def describe(proc):
    return 'exit %s\nstdout:\n%s\nstderr:\n%s' % (proc.returncode, proc.stdout[-3000:], proc.stderr[-3000:])


def train_experiment(name, logdir, iterations):
    """paper.py's experiment `name` trained for a few iterations in logdir (main.py with the flags
    reproduce.py gives it); returns its run folder."""
    import paper
    import reproduce
    flags = reproduce.experiment_flags(paper.get(name), str(logdir), iterations=iterations)
    logdir.mkdir(parents=True)
    proc = subprocess.run(main_command(*flags), cwd=str(logdir.parent), env=user_env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, describe(proc)
    return logdir / reproduce.exp_dir_name(flags)
