"""Cross-check: torch-loop, torch-vmap and learn2learn give the same meta-gradient (same initial
weights, same batch), per order; and second order differs from first order.
    python tools/implementations/check_torch_grads.py     (runs run_torch.py --dump_grad six times, under
                                                          this Python: it needs torch and learn2learn)"""
import argparse
import os
import subprocess
import sys
import tempfile

from run_reference import user_errors  # this folder

HERE = os.path.dirname(os.path.abspath(__file__))
PY = sys.executable


def rel(a, b):
    # max |a - b| over all entries / max |a| over all entries (the conv biases' gradients are ~0
    # analytically, a bias before batch norm has no effect, so per-tensor ratios are meaningless)
    scale = max(v.abs().max().item() for v in a.values())
    return max((a[k] - b[k]).abs().max().item() for k in a) / scale


def dumped_grads(torch, impl, order, tmp):
    """run_torch.py --dump_grad for impl and order; its failure (learn2learn missing: its one 'Error:'
    line, exit status 2) ends this script the same way."""
    path = os.path.join(tmp, '%s-%s.pt' % (impl, order))
    proc = subprocess.run([PY, os.path.join(HERE, 'run_torch.py'), '--impl', impl, '--order', order,
                           '--dump_grad', path], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode:
        sys.stderr.write(proc.stderr)
        sys.exit(proc.returncode)
    return torch.load(path)


def main():
    user_errors().ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 script=__file__).parse_args()
    torch = user_errors().optional_import('torch', 'check_torch_grads.py')
    tmp = tempfile.mkdtemp()
    res = {(impl, order): dumped_grads(torch, impl, order, tmp)
           for order in ('second', 'first') for impl in ('torch-loop', 'torch-vmap', 'learn2learn')}
    for order in ('second', 'first'):
        base = res['torch-loop', order]
        for impl in ('torch-vmap', 'learn2learn'):
            other = res[impl, order]
            worst = rel(base['grads'], other['grads'])
            print('%-6s %-11s vs torch-loop: loss %.6f vs %.6f, max |diff| / max |grad| %.2e'
                  % (order, impl, other['loss'], base['loss'], worst))
    s, f = res['torch-loop', 'second']['grads'], res['torch-loop', 'first']['grads']
    print('second vs first (torch-loop): max |diff| / max |grad| %.2e (should be clearly > 0)' % rel(s, f))


if __name__ == '__main__':
    user_errors().run(main)
