"""Time the project's own step: this repository's tools/benchmark.py for omniglot_5w1s, one order; print one JSON line.

    python tools/implementations/run_ours.py --order second|first --steps 10 --warmup 3 [--repo DIR] [--python PYTHON]

Runs `python tools/benchmark.py --configs omniglot_5w1s --eval_configs none --orders ORDER --steps S --warmup W`
with cwd = the repository (benchmark.py starts its own worker subprocess, which inherits this
process's CPU affinity), and parses the "s/iter" column of its omniglot_5w1s row.
"""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from run_reference import user_errors  # this folder

REPO = str(Path(__file__).resolve().parents[2])  # this repository (tools/implementations/ is two folders down)

def parse_rows(text):
    """{order: {'s_iter': float} or {'error': str}} from benchmark.py's training table."""
    rows, columns = {}, None
    for line in text.splitlines():
        if line.startswith('config') and 's/iter' in line:
            columns = line.split('  ')
            columns = [c.strip() for c in columns if c.strip()]
            continue
        if not line.startswith('omniglot_5w1s'):
            continue
        parts = line.split()
        order = parts[1]
        if len(parts) > 2 and parts[2] == 'ERROR:':
            rows[order] = {'error': line.split('ERROR:', 1)[1].strip()}
            continue
        # columns: config, order, s/iter, report s/iter, 60k iters h, peak MB, GFLOP/iter, ...
        rows[order] = {'s_iter': float(parts[2]), 'report_s_iter': float(parts[3]), 'line': line.strip()}
        if columns and columns[2] != 's/iter':
            rows[order]['warning'] = 'unexpected columns: %s' % columns[:4]
    return rows


def main():
    p = user_errors().ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     script=__file__)
    p.add_argument('--order', choices=('second', 'first'), default='second')
    p.add_argument('--steps', type=int, default=10)
    p.add_argument('--warmup', type=int, default=3)
    p.add_argument('--repo', default=REPO, help='the repository holding tools/benchmark.py (default: %(default)s)')
    p.add_argument('--python', default=sys.executable, help='the interpreter for benchmark.py (default: this one)')
    args = p.parse_args()
    if not os.path.isfile(os.path.join(args.repo, 'tools', 'benchmark.py')):
        p.error('--repo %s: no tools/benchmark.py there' % args.repo)
    cmd = [args.python, os.path.join(args.repo, 'tools', 'benchmark.py'), '--configs', 'omniglot_5w1s',
           '--eval_configs', 'none', '--orders', args.order, '--steps', str(args.steps), '--warmup', str(args.warmup)]
    proc = subprocess.run(cmd, cwd=args.repo, capture_output=True, text=True)
    rows = parse_rows(proc.stdout)
    info = {'impl': 'ours', 'order': args.order, 'threads': len(os.sched_getaffinity(0)), 'steps': args.steps,
            'warmup': args.warmup, 'command': ' '.join(cmd)}
    header = [l for l in proc.stdout.splitlines() if l.startswith(('python ', 'machine:'))]
    info['benchmark_header'] = header
    row = rows.get(args.order)
    if row is None:
        tail = (proc.stderr.strip().splitlines() or ['exit status %d' % proc.returncode])[-1]
        info['error'] = 'no omniglot_5w1s %s row in benchmark.py output: %s' % (args.order, tail[:300])
    elif 'error' in row:
        info['error'] = row['error']
    else:
        info.update(median_s=row['s_iter'], report_s_iter=row['report_s_iter'], row=row['line'])
        if 'warning' in row:
            info['warning'] = row['warning']
    print(json.dumps(info), flush=True)
    return 0 if 'median_s' in info else 1


if __name__ == '__main__':
    sys.exit(user_errors().run(main))
