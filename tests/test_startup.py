"""What a user sees: a quiet start-up, the reference's progress lines, speed and time left."""
import os
import re
import subprocess
import sys

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
    # TensorFlow 2.16's
    '2026-12-07 09:04:50.606396: E external/local_xla/xla/stream_executor/cuda/cuda_fft.cc:479] Unable to register '
    'cuFFT factory: Attempting to register factory for plugin cuFFT when one has already been registered\n',
    '2026-12-07 09:04:50.673440: E external/local_xla/xla/stream_executor/cuda/cuda_dnn.cc:10575] Unable to register '
    'cuDNN factory: Attempting to register factory for plugin cuDNN when one has already been registered\n',
    '2026-12-07 09:04:50.673492: E external/local_xla/xla/stream_executor/cuda/cuda_blas.cc:1442] Unable to register '
    'cuBLAS factory: Attempting to register factory for plugin cuBLAS when one has already been registered\n',
    '2026-12-07 09:04:54.154398: W tensorflow/compiler/tf2tensorrt/utils/py_utils.cc:38] TF-TRT Warning: Could not '
    'find TensorRT\n',
]
REAL_ERROR = 'E0000 00:00:1796173942.950992    2265 some_kernel.cc:12] could not allocate 12 GB\n'


def test_startup_filter_drops_the_chatter_and_keeps_real_errors():
    real = REAL_ERROR
    warning = '/usr/lib/python3/site-packages/x.py:3: DeprecationWarning: y\n'
    assert utils.startup_lines_to_show(STARTUP) == []
    assert utils.startup_lines_to_show(STARTUP[:3] + [real] + STARTUP[3:] + [warning]) == [real, warning]
    # a cuInit failure with a CUDA driver present is a real failure: shown
    assert utils.startup_lines_to_show([CUINIT_LINE]) == [CUINIT_LINE]
    assert utils.startup_lines_to_show([CUINIT_LINE, NO_DRIVER_LINE]) == [CUINIT_LINE]


# A stand-in for TensorFlow that prints, as TensorFlow's C++ side does, straight to fd 2 while it
# loads and while it finds the devices; every attribute is a harmless stand-in, so utils imports.
FAKE_TENSORFLOW = """
import os
os.write(2, b'%s')


class Anything:
    def __getattr__(self, name):
        return self

    def __call__(self, *args, **kwargs):
        return self


def list_physical_devices(*args):
    os.write(2, b'%s')
    return []


config = Anything()
config.list_physical_devices = list_physical_devices


def __getattr__(name):
    return Anything()
"""


def import_utils_with_fake_tensorflow(tmp_path, env):
    """Import utils in a fresh process where `import tensorflow` finds FAKE_TENSORFLOW.

    Returns its stderr and what the stand-in printed while it was imported.
    """
    chatter_on_import = ''.join(STARTUP[:3]) + REAL_ERROR
    chatter_on_devices = ''.join(STARTUP[3:])
    fake = tmp_path / 'tensorflow'
    fake.mkdir(parents=True)
    (fake / '__init__.py').write_text(FAKE_TENSORFLOW % (chatter_on_import.encode('unicode_escape').decode(),
                                                         chatter_on_devices.encode('unicode_escape').decode()))
    env = dict(env, PYTHONPATH=os.pathsep.join([str(tmp_path), str(REPO)]))
    done = subprocess.run([sys.executable, '-c', 'import utils'], cwd=str(tmp_path), env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, describe(done)
    return done.stderr, chatter_on_import


def test_import_filters_what_tensorflow_prints_unless_the_user_sets_a_log_level(tmp_path):
    env = user_env()
    del env['TF_CPP_MIN_LOG_LEVEL']
    stderr, _ = import_utils_with_fake_tensorflow(tmp_path / 'quiet', env)
    assert stderr == REAL_ERROR
    # the user's own TF_CPP_MIN_LOG_LEVEL wins: all TensorFlow prints is shown, unfiltered (and
    # the devices are left for the program to find)
    stderr, printed_on_import = import_utils_with_fake_tensorflow(tmp_path / 'loud',
                                                                  dict(env, TF_CPP_MIN_LOG_LEVEL='0'))
    assert stderr == printed_on_import


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
    rate = re.compile(r'^  \S+ s/iteration over the last (\d+); (\d+) left, about .* \(ETA .*\)$')
    if not utils.tf.config.list_physical_devices('GPU'):
        # on a CPU-only machine, as CI's, whatever this TensorFlow version prints at start-up is filtered
        assert [l for l in quiet.stderr.splitlines() if not rate.match(l)] == [], describe(quiet)
    # stdout is the reference's lines, unchanged, then where the last checkpoint is; speed and
    # time left go to stderr
    lines = quiet.stdout.splitlines()
    assert lines[:-1] == ['Done initializing, starting training.',
                          *(l for l in lines if l.startswith('Iteration '))]
    assert lines[-1].startswith('Last checkpoint: '), lines
    assert len(re.findall(r'^Iteration \d+: \S+, \S+$', quiet.stdout, re.M)) == 2
    rates = [rate.match(l).groups() for l in quiet.stderr.splitlines() if rate.match(l)]
    assert rates == [('1001', '1000'), ('1000', '0')], quiet.stderr

    # the user's own TF_CPP_MIN_LOG_LEVEL wins: TensorFlow then prints what it always does, the
    # lines the filter would drop among them (their wording is this TensorFlow version's)
    loud = run_sinusoid(tmp_path / 'loud', dict(env, TF_CPP_MIN_LOG_LEVEL='0'))
    assert loud.returncode == 0, describe(loud)
    lines = loud.stderr.splitlines(keepends=True)
    assert len(utils.startup_lines_to_show(lines)) < len(lines), describe(loud)


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
