"""Time one MAML meta-training iteration (Omniglot 5-way 1-shot, paper configuration) in PyTorch.

    python tools/implementations/run_torch.py --impl torch-loop|torch-vmap|learn2learn --order second|first --steps 10 --warmup 3
    python tools/implementations/run_torch.py --impl torch-loop --order second --check 20    # losses on a fixed batch, no timing
    python tools/implementations/run_torch.py --impl torch-loop --order second --dump_grad FILE.pt   # one meta-gradient (check_torch_grads.py)

The network is the reference's (cbfinn/maml, omniglot, conv, batch_norm): 4 x [conv 3x3, 64 filters,
stride 2, + bias -> batch norm with the batch's statistics, offset (beta) only (scale: constant 1), eps 1e-3
-> ReLU], 28 -> 14 -> 7 -> 4 -> 2; then, as the reference does for Omniglot, the spatial mean
(2x2x64 -> 64) and a dense layer 64 -> 5 (--head flatten: 256 -> 5 instead). Loss: the reference's
xent: softmax cross-entropy summed over a task's examples / K (K=1); meta-loss: mean over the 32
tasks. One inner step, update_lr 0.4; Adam(1e-3) on the initial weights.
  torch-loop:  a Python loop over the tasks, torch.autograd.grad(create_graph=True) for the inner step
               (second order), create_graph=False and detached (first order); one backward at the end.
  torch-vmap:  torch.func.vmap over the tasks of a per-task function that takes the inner step with
               torch.func.grad (the gradient detached for first order); one backward at the end.
  learn2learn: l2l.algorithms.MAML(module, lr=0.4, first_order=...) around an equivalent nn.Module,
               the task loop of learn2learn's examples (clone, adapt, query loss, backward per task,
               gradients scaled by 1/tasks), Adam.
Threads: torch.set_num_threads(cores in this process's affinity mask), interop threads 1.
Prints one JSON line.
"""
import argparse
import json
import os
import sys
import types

from run_reference import project_module, time_steps, user_errors  # this folder (project_module: this repository's modules by path)

TASKS, N, K, Q, FILTERS, UPDATE_LR, META_LR, EPS = 32, 5, 1, 1, 64, 0.4, 1e-3, 1e-3


def import_l2l_maml():
    """learn2learn's MAML class. learn2learn/__init__ imports its vision package, which needs
    torchvision; if that import fails (no CPU torchvision for this torch here), load the package's
    algorithms.maml module (and what it imports: algorithms.base_learner, utils) from the installed
    files without running the package __init__ files."""
    try:
        import learn2learn as l2l
        return l2l.algorithms.MAML, 'import learn2learn'
    except Exception as e:  # noqa: BLE001
        reason = '%s: %s' % (type(e).__name__, e)
    import importlib.util
    for name in [m for m in sys.modules if m == 'learn2learn' or m.startswith('learn2learn.')]:
        del sys.modules[name]
    spec = importlib.util.find_spec('learn2learn')  # does not execute the package
    if spec is None:
        raise user_errors().UserError('run_torch.py --impl learn2learn needs learn2learn, which is not installed '
                                      'here: pip install learn2learn')
    root = os.path.dirname(spec.origin)
    for name, path in (('learn2learn', root), ('learn2learn.algorithms', os.path.join(root, 'algorithms'))):
        pkg = types.ModuleType(name)
        pkg.__path__ = [path]
        sys.modules[name] = pkg
    import learn2learn.algorithms.maml as maml_module
    return maml_module.MAML, 'learn2learn.algorithms.maml loaded without the package __init__ (%s)' % reason[:120]


def main():
    p = user_errors().ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     script=__file__)
    p.add_argument('--impl', choices=('torch-loop', 'torch-vmap', 'learn2learn'), required=True)
    p.add_argument('--order', choices=('second', 'first'), default='second')
    p.add_argument('--steps', type=int, default=10)
    p.add_argument('--warmup', type=int, default=3)
    p.add_argument('--head', choices=('mean', 'flatten'), default='mean')
    p.add_argument('--check', type=int, default=0, help='instead of timing: N steps on one fixed batch, print losses')
    p.add_argument('--dump_grad', help='instead of timing: save one meta-gradient (torch.save) to this path')
    args = p.parse_args()
    second = args.order == 'second'

    import numpy as np
    torch = user_errors().optional_import('torch', 'run_torch.py')
    import torch.nn.functional as F
    threads = len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(0)
    head_in = FILTERS if args.head == 'mean' else FILTERS * 4
    # Batch norm without a learnable scale: a constant scale of ones (as TensorFlow's fused batch norm
    # gets for scale=False). With weight=None, the double backward of PyTorch's native batch norm
    # fails ('Expected a proper Tensor but got None ... other'), so second order needs a defined one.
    BN_SCALE = torch.ones(FILTERS)

    # ---- parameters (reference initialisation: Glorot-uniform convs, zero biases, N(0,1) head)
    def init_params():
        torch.manual_seed(0)
        params = {}
        cin = 1
        for i in range(1, 5):
            w = torch.empty(FILTERS, cin, 3, 3)
            torch.nn.init.xavier_uniform_(w)
            params['conv%d' % i] = w
            params['b%d' % i] = torch.zeros(FILTERS)
            params['bn%d' % i] = torch.zeros(FILTERS)  # batch-norm offset (beta)
            cin = FILTERS
        params['w5'] = torch.randn(head_in, N)
        params['b5'] = torch.zeros(N)
        return {k: v.requires_grad_() for k, v in params.items()}

    def forward(params, x):
        h = x.reshape(-1, 1, 28, 28)
        for i in range(1, 5):
            h = F.conv2d(h, params['conv%d' % i], params['b%d' % i], stride=2, padding=1)
            h = F.batch_norm(h, None, None, BN_SCALE, params['bn%d' % i], training=True, eps=EPS)
            h = F.relu(h)
        h = h.mean((2, 3)) if args.head == 'mean' else h.flatten(1)
        return h @ params['w5'] + params['b5']

    def xent(logits, onehot):  # the reference: per-example softmax xent, summed (tf.gradients / reduce_sum) / K
        return -(onehot * F.log_softmax(logits, -1)).sum() / K

    # ---- data: the project's synthetic batches (benchmark.synthetic_batch, the same as the other
    # implementations get): [tasks, N*K, 784] images, one-hot [tasks, N*K, N] labels
    benchmark = project_module('benchmark')
    config, tasks, k_support, k_query = benchmark.CONFIGS['omniglot_5w1s']
    assert (tasks, config['num_classes'], k_support, k_query) == (TASKS, N, K, Q), 'benchmark.CONFIGS changed'
    rng = np.random.default_rng(0)
    batches = []
    for _ in range(4):
        xa, xb, ya, yb = (torch.from_numpy(x) for x in benchmark.synthetic_batch(config, TASKS, K, Q, rng))
        batches.append((xa, ya, xb, yb))

    info = {'impl': args.impl, 'order': args.order, 'threads': threads, 'head': args.head,
            'torch_threads': torch.get_num_threads(), 'interop_threads': torch.get_num_interop_threads()}

    if args.impl in ('torch-loop', 'torch-vmap'):
        params = init_params()
        opt = torch.optim.Adam(params.values(), lr=META_LR)
        info['params'] = sum(v.numel() for v in params.values())

        if args.impl == 'torch-loop':
            def meta_loss(batch):
                xa, ya, xb, yb = batch
                names, values = list(params), list(params.values())
                total = 0.0
                for t in range(TASKS):
                    lossa = xent(forward(params, xa[t]), ya[t])
                    grads = torch.autograd.grad(lossa, values, create_graph=second)
                    fast = {n: v - UPDATE_LR * (g if second else g.detach()) for n, v, g in zip(names, values, grads)}
                    total = total + xent(forward(fast, xb[t]), yb[t])
                return total / TASKS
        else:
            from torch.func import grad, vmap

            def task_loss(p, xa, ya, xb, yb):
                g = grad(lambda q: xent(forward(q, xa), ya))(p)
                if not second:
                    g = {n: v.detach() for n, v in g.items()}
                fast = {n: p[n] - UPDATE_LR * g[n] for n in p}
                return xent(forward(fast, xb), yb)
            batched = vmap(task_loss, in_dims=(None, 0, 0, 0, 0))

            def meta_loss(batch):
                return batched(params, *batch).mean()

        def grads(batch):  # sets .grad of every parameter to the meta-gradient; returns the meta-loss
            opt.zero_grad(set_to_none=True)
            loss = meta_loss(batch)
            loss.backward()
            return float(loss.detach())

        def canonical_grads():
            return {n: v.grad for n, v in params.items()}
    else:
        MAML, how = import_l2l_maml()
        info['l2l_import'] = how
        try:
            from importlib.metadata import version
            info['learn2learn'] = version('learn2learn')
        except Exception:  # noqa: BLE001
            pass

        class BatchNormOffset(torch.nn.Module):  # batch statistics, learnable offset only
            def __init__(self, c):
                super().__init__()
                self.bias = torch.nn.Parameter(torch.zeros(c))

            def forward(self, x):
                return F.batch_norm(x, None, None, BN_SCALE, self.bias, training=True, eps=EPS)

        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                layers, cin = [], 1
                for _ in range(4):
                    conv = torch.nn.Conv2d(cin, FILTERS, 3, stride=2, padding=1)
                    torch.nn.init.xavier_uniform_(conv.weight)
                    torch.nn.init.zeros_(conv.bias)
                    layers += [conv, BatchNormOffset(FILTERS), torch.nn.ReLU()]
                    cin = FILTERS
                self.features = torch.nn.Sequential(*layers)
                self.head = torch.nn.Linear(head_in, N)
                # the same initial weights as torch-loop / torch-vmap (init_params, same seed)
                start = init_params()
                with torch.no_grad():
                    for i in range(4):
                        self.features[3 * i].weight.copy_(start['conv%d' % (i + 1)])
                        self.features[3 * i].bias.copy_(start['b%d' % (i + 1)])
                        self.features[3 * i + 1].bias.copy_(start['bn%d' % (i + 1)])
                    self.head.weight.copy_(start['w5'].T)
                    self.head.bias.copy_(start['b5'])

            def forward(self, x):
                h = self.features(x.reshape(-1, 1, 28, 28))
                h = h.mean((2, 3)) if args.head == 'mean' else h.flatten(1)
                return self.head(h)

        maml = MAML(Net(), lr=UPDATE_LR, first_order=not second)
        opt = torch.optim.Adam(maml.parameters(), lr=META_LR)
        info['params'] = sum(v.numel() for v in maml.parameters())

        def grads(batch):
            xa, ya, xb, yb = batch
            opt.zero_grad()
            total = 0.0
            for t in range(TASKS):
                learner = maml.clone()
                learner.adapt(xent(learner(xa[t]), ya[t]))
                loss = xent(learner(xb[t]), yb[t])
                loss.backward()
                total += float(loss.detach())
            for q in maml.parameters():
                q.grad.mul_(1.0 / TASKS)
            return total / TASKS

        def canonical_grads():
            m = maml.module
            out = {}
            for i in range(4):
                out['conv%d' % (i + 1)] = m.features[3 * i].weight.grad
                out['b%d' % (i + 1)] = m.features[3 * i].bias.grad
                out['bn%d' % (i + 1)] = m.features[3 * i + 1].bias.grad
            out['w5'] = m.head.weight.grad.T
            out['b5'] = m.head.bias.grad
            return out

    def step(batch):
        loss = grads(batch)
        opt.step()
        return loss

    if args.dump_grad:  # one meta-gradient on the first batch from the initial weights, no update
        loss = grads(batches[0])
        torch.save({'loss': loss, 'grads': {k: v.detach().clone() for k, v in canonical_grads().items()}},
                   args.dump_grad)
        info.update(dumped=args.dump_grad, loss=loss)
        print(json.dumps(info), flush=True)
        return

    if args.check:
        losses = [step(batches[0]) for _ in range(args.check)]
        info.update(check_steps=args.check, loss_post_first=losses[0], loss_post_last=losses[-1],
                    finite=bool(np.all(np.isfinite(losses))), decreased=losses[-1] < losses[0])
        print(json.dumps(info), flush=True)
        return

    time_steps(benchmark, step, batches, args, info)


if __name__ == '__main__':
    user_errors().run(main)
