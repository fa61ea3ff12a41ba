"""Every tool fails as the program does (main.py, reproduce.py): a bad input, a missing file or folder,
missing data or a missing optional package gives one line 'Error: ...' and exit status 2, never a
traceback; and --help works without the optional packages (scipy, torch, learn2learn, tf_slim).

Each tool runs as a user runs it, in its own process, all at once: every bad input here fails
before TensorFlow does any work, so the whole file takes seconds of CPU.
"""
import concurrent.futures
import subprocess
import sys

import pytest

from conftest import REPO
from runner import describe, user_env

# the packages the program does not need, made missing for the tools whatever is installed
OPTIONAL_PACKAGES = ('scipy', 'torch', 'learn2learn', 'tf_slim', 'tf_keras')
MISSING = '{missing}'  # replaced by a path that does not exist

# tool: a bad input
BAD_INPUTS = {
    'tools/benchmark.py': ['--configs', 'nosuch'],
    'tools/inner_steps.py': ['omniglot-5way-1shot', '--data_dir', MISSING],  # no data
    'tools/gradient_precision.py': ['omniglot-5way-1shot', '--data_dir', MISSING],  # no data
    'tools/training_curves.py': [MISSING],
    'tools/sinusoid_study.py': ['--seeds', '0-x'],
    'tools/sinusoid_baselines.py': [MISSING + '/test_ubs5_stepsize0.01.pkl'],
    'tools/sinusoid-study/power.py': [],  # no scipy
    'tools/implementations/compare.py': ['--impls', 'nosuch'],
    'tools/implementations/run_reference.py': ['--reference', MISSING],
    'tools/implementations/run_ours.py': ['--repo', MISSING],
    'tools/implementations/run_torch.py': ['--impl', 'torch-loop'],  # no torch
    'tools/implementations/gradcompare.py': [MISSING],
    'tools/implementations/check_torch_grads.py': [],  # no torch
}
NOT_A_TOOL = ('tools/user_errors.py',)  # the tools' shared error handling


def block_packages(folder):
    """A folder that, first on PYTHONPATH, makes each optional package fail to import as a missing one does."""
    for name in OPTIONAL_PACKAGES:
        (folder / name).mkdir(parents=True)
        (folder / name / '__init__.py').write_text(
            'raise ModuleNotFoundError("No module named %r (made missing by the test)", name=%r)\n' % (name, name))
    return folder


def run_tool(tool, args, env):
    return subprocess.run([sys.executable, str(REPO / tool)] + args, cwd=str(REPO), env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    """{(tool, 'help' or 'bad'): CompletedProcess}, all run in parallel."""
    tmp = tmp_path_factory.mktemp('tools_cli')
    env = dict(user_env(), PYTHONPATH=str(block_packages(tmp / 'blocked')))
    missing = str(tmp / 'missing')
    jobs = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=2 * len(BAD_INPUTS)) as pool:
        for tool, args in BAD_INPUTS.items():
            jobs[tool, 'help'] = pool.submit(run_tool, tool, ['--help'], env)
            jobs[tool, 'bad'] = pool.submit(run_tool, tool, [a.replace(MISSING, missing) for a in args], env)
        return {key: job.result() for key, job in jobs.items()}


def test_every_tool_is_tested():
    tools = sorted(str(p.relative_to(REPO)) for folder in ('tools', 'tools/sinusoid-study', 'tools/implementations')
                   for p in (REPO / folder).glob('*.py'))
    assert [t for t in tools if t not in NOT_A_TOOL] == sorted(BAD_INPUTS)


@pytest.mark.parametrize('tool', sorted(BAD_INPUTS))
def test_help_works_without_the_optional_packages(runs, tool):
    proc = runs[tool, 'help']
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout.startswith('usage: '), describe(proc)
    assert 'Traceback' not in proc.stderr, describe(proc)


@pytest.mark.parametrize('tool', sorted(BAD_INPUTS))
def test_a_bad_input_is_one_error_line_and_status_2(runs, tool):
    proc = runs[tool, 'bad']
    assert proc.returncode == 2, describe(proc)
    assert 'Traceback' not in proc.stderr, describe(proc)
    assert proc.stderr.startswith('Error: '), describe(proc)
    assert len([line for line in proc.stderr.splitlines() if line.startswith('Error: ')]) == 1, describe(proc)
