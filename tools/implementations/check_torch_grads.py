"""Cross-check: torch-loop, torch-vmap and learn2learn give the same meta-gradient (same initial
weights, same batch), per order; and second order differs from first order.
    python tools/implementations/check_torch_grads.py     (runs run_torch.py --dump_grad six times, under
                                                          this Python: it needs torch and learn2learn)"""
import os, subprocess, sys, tempfile
import torch
HERE = os.path.dirname(os.path.abspath(__file__))
PY = sys.executable
tmp = tempfile.mkdtemp()
res = {}


def rel(a, b):
    # max |a - b| over all entries / max |a| over all entries (the conv biases' gradients are ~0
    # analytically, a bias before batch norm has no effect, so per-tensor ratios are meaningless)
    scale = max(v.abs().max().item() for v in a.values())
    return max((a[k] - b[k]).abs().max().item() for k in a) / scale


for order in ('second', 'first'):
    for impl in ('torch-loop', 'torch-vmap', 'learn2learn'):
        path = os.path.join(tmp, '%s-%s.pt' % (impl, order))
        subprocess.run([PY, os.path.join(HERE, 'run_torch.py'), '--impl', impl, '--order', order, '--dump_grad', path],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        res[impl, order] = torch.load(path)
for order in ('second', 'first'):
    base = res['torch-loop', order]
    for impl in ('torch-vmap', 'learn2learn'):
        other = res[impl, order]
        worst = rel(base['grads'], other['grads'])
        print('%-6s %-11s vs torch-loop: loss %.6f vs %.6f, max |diff| / max |grad| %.2e'
              % (order, impl, other['loss'], base['loss'], worst))
s, f = res['torch-loop', 'second']['grads'], res['torch-loop', 'first']['grads']
print('second vs first (torch-loop): max |diff| / max |grad| %.2e (should be clearly > 0)' % rel(s, f))
