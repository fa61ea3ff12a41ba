"""What a user sees: a quiet start-up, the reference's progress lines, speed and time left."""
import os
import re
import subprocess

import main
import utils
from conftest import REPO
from runner import describe, main_command, user_env

NO_DRIVER_LINE = ('I0000 00:00:1796173940.811949    2265 cudart_stub.cc:31] Could not find cuda drivers on your '
                  'machine, GPU will not be used.\n')
CUINIT_LINE = ('E0000 00:00:1796173942.950992    2265 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA '
               'error: Failed call to cuInit: UNKNOWN ERROR (303)\n')
STARTUP = [
    'WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n',
    'I0000 00:00:1796173940.810423    2265 port.cc:153] oneDNN custom operations are on. You may see slightly '
    'different numerical results due to floating-point round-off errors from different computation orders.\n',
    NO_DRIVER_LINE,
    'I0000 00:00:1796174073.768965    3146 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use '
    'available CPU instructions in performance-critical operations.\n',
    'To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow with the appropriate '
    'compiler flags.\n',
    CUINIT_LINE,
]


def test_startup_filter_drops_the_chatter_and_keeps_real_errors():
    real = 'E0000 00:00:1796173942.950992    2265 some_kernel.cc:12] could not allocate 12 GB\n'
    warning = '/usr/lib/python3/site-packages/x.py:3: DeprecationWarning: y\n'
    assert utils.startup_lines_to_show(STARTUP) == []
    assert utils.startup_lines_to_show(STARTUP[:3] + [real] + STARTUP[3:] + [warning]) == [real, warning]
    # a cuInit failure with a CUDA driver present is a real failure: shown
    assert utils.startup_lines_to_show([CUINIT_LINE]) == [CUINIT_LINE]
    assert utils.startup_lines_to_show([CUINIT_LINE, NO_DRIVER_LINE]) == [CUINIT_LINE]


def run_sinusoid(tmp_path, env):
    tmp_path.mkdir()
    flags = ['--datasource=sinusoid', '--norm=None', '--metatrain_iterations=2001', '--logdir=%s' % tmp_path]
    return subprocess.run(main_command(*flags), cwd=str(tmp_path), env=env, capture_output=True, text=True,
                          timeout=300)


def test_main_starts_quietly_and_shows_everything_when_asked(tmp_path):
    env = user_env()
    del env['TF_CPP_MIN_LOG_LEVEL']
    quiet = run_sinusoid(tmp_path / 'quiet', env)
    assert quiet.returncode == 0, describe(quiet)
    for text in ('cuInit', 'InitializeLog', 'oneDNN custom operations', 'cuda drivers', 'cpu_feature_guard'):
        assert text not in quiet.stdout + quiet.stderr, describe(quiet)
    # stdout is the reference's lines, unchanged, then where the last checkpoint is; speed and
    # time left go to stderr
    lines = quiet.stdout.splitlines()
    assert lines[:-1] == ['Done initializing, starting training.',
                          *(l for l in lines if l.startswith('Iteration '))]
    assert lines[-1].startswith('Last checkpoint: '), lines
    assert len(re.findall(r'^Iteration \d+: \S+, \S+$', quiet.stdout, re.M)) == 2
    rates = re.findall(r'^  \S+ s/iteration over the last (\d+); (\d+) left, about .* \(ETA .*\)$',
                       quiet.stderr, re.M)
    assert rates == [('1001', '1000'), ('1000', '0')], quiet.stderr

    # the user's own TF_CPP_MIN_LOG_LEVEL wins: TensorFlow then prints what it always does
    loud = run_sinusoid(tmp_path / 'loud', dict(env, TF_CPP_MIN_LOG_LEVEL='0'))
    assert loud.returncode == 0, describe(loud)
    assert 'InitializeLog' in loud.stderr
    if 'Could not find cuda drivers' in loud.stderr:  # a machine without a GPU, as CI's
        assert 'failed call to cuInit' in loud.stderr


def test_progress_gives_the_rate_of_the_last_interval_and_the_time_left():
    now = [1000.0]
    progress = main.Progress(start_itr=0, total_itr=60000, clock=lambda: now[0])
    now[0] += 101 * 0.5   # iterations 0..100 at 0.5 s
    assert progress.line(100) == '  0.5 s/iteration over the last 101; 59899 left, about 8 h 19 min (ETA %s)' % (
        main.time.strftime('%Y-%m-%d %H:%M', main.time.localtime(now[0] + 59899 * 0.5)))
    now[0] += 100 * 0.25
    assert progress.line(200).startswith('  0.25 s/iteration over the last 100; 59799 left, about 4 h 09 min')
    resumed = main.Progress(start_itr=59901, total_itr=60000, clock=lambda: now[0])
    now[0] += 99 * 2.0
    assert resumed.line(59999).startswith('  2 s/iteration over the last 99; 0 left, about 0 s')
    assert main.format_duration(423) == '7 min 03 s'
