#!/usr/bin/env python
"""Benchmark of `lsuv_callback.core.lsuv_init` against the LSUV methods it replaces.

For each model of a small zoo (the course-v3 07a CNN, a deep plain CNN of 07a `ConvLayer`s, torchvision's resnet50,
a small hand-written transformer) this measures, in one run on one device:

- the floor: one plain forward pass under `torch.no_grad` (warmed up, CUDA synchronised, median of several);
- the cost of each LSUV method in forward-pass-equivalents (fpe = method time / forward time), each method run on
  its own `copy.deepcopy` of one seeded model so all start from the same weights:
    * `ours`     this package's `lsuv_init(model, xb, tol=...)` (median of `--repeats` runs, interleaved with the
                 forward timings so both see the same machine load),
    * `ours-notel` the same with `telemetry=False` (only when asked for in `--methods`),
    * `07a`      a faithful reimplementation of fastai course-v3 07a_lsuv (a full model forward per iteration),
    * `pypi`     the PyPI `lsuv` package, when it can be imported (skipped with a note otherwise);
- the precision each method reaches: worst |mean| and |std-1| over the units `find_units` picks, measured in a
  FRESH forward pass after initialisation;
- iterations per unit, and the number of full model forwards each method made;
- cost against depth for the plain CNN (ours should stay flat in fpe, i.e. linear in time; 07a grows with depth).

Writes `results-<device>[-quick].md`, `.json` (raw numbers, per unit) and `depth-<device>[-quick].png` to `--out`.
On a CPU: torch runs 1 thread (OpenMP spin-waits on a small shared machine distort timings ~100x; `--threads`),
plain50/resnet50/transformer run at a smaller batch (the table says which; `--batch name=N`), and the baselines,
which cost O(units) forwards, abort after `--max-07a-fpe` forwards or `--baseline-budget` seconds: their fpe is then a
lower bound (with an extrapolated estimate), which is enough to check the >= 30x target.
`--quick` runs small sizes in well under a minute on a CPU and exits non-zero when this package breaks its
precision bound. Costs are reported in the Targets table, never asserted: a shared machine's timing noise must not fail
a test suite (`--check` does fail on a missed cost target, for a run on a quiet machine).

Run: python bench/bench.py [--quick] [--device cpu|cuda] [--out bench/results] [--models cnn07a,plain50,...]
"""
from __future__ import annotations
import argparse, copy, datetime, inspect, json, math, os, platform, statistics, sys, time, warnings
from pathlib import Path

import torch
from torch import nn
import torch.nn.functional as F

try:
    from lsuv_callback.layers import ConvLayer, cnn_07a
    from lsuv_callback.core import lsuv_init, find_units
except ImportError as e:  # the engine is the thing under test: without it there is nothing to measure
    sys.exit(f'bench: cannot import the engine ({e}); install the package (pip install -e .) first')

try:
    from lsuv_callback.core import LSUVWarning
except ImportError:
    LSUVWarning = UserWarning

OURS = {'ours': {}, 'ours-notel': dict(telemetry=False)}  # variants of lsuv_init: extra kwargs
METHODS = ('ours', 'ours-notel', '07a', 'pypi')
ACT = dict(leak=0.1, sub=0.4, maxv=6.)  # the activation 07a used


# ---------------------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------------------

def plain_cnn(depth:int, c:int=64, c_in:int=3, n_out:int=10, **kwargs) -> nn.Sequential:
    "`depth` 07a `ConvLayer`s (stride 2 first, then stride 1), average pool and a linear head"
    convs = [ConvLayer(c_in, c, 3, stride=2, **kwargs)] + [ConvLayer(c, c, 3, stride=1, **kwargs) for _ in range(depth - 1)]
    return nn.Sequential(*convs, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, n_out))


class Block(nn.Module):
    "Pre-LayerNorm transformer block with explicit q/k/v/out `nn.Linear`s (each called as a module) and an MLP"
    def __init__(self, d:int, heads:int, mlp:int=4):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.q, self.k, self.v, self.out = (nn.Linear(d, d) for _ in range(4))
        self.fc1, self.act, self.fc2 = nn.Linear(d, mlp * d), nn.GELU(), nn.Linear(mlp * d, d)

    def forward(self, x):
        b, t, d = x.shape
        y = self.ln1(x)
        q, k, v = (lin(y).view(b, t, self.heads, d // self.heads).transpose(1, 2) for lin in (self.q, self.k, self.v))
        a = F.scaled_dot_product_attention(q, k, v)
        x = x + self.out(a.transpose(1, 2).reshape(b, t, d))
        return x + self.fc2(self.act(self.fc1(self.ln2(x))))


class TinyTransformer(nn.Module):
    "Token features -> linear embedding + learned positions -> `n_layers` `Block`s -> LayerNorm -> mean pool -> head"
    def __init__(self, d_in:int=64, d:int=256, heads:int=4, n_layers:int=4, seq:int=128, n_out:int=10):
        super().__init__()
        self.embed = nn.Linear(d_in, d)
        self.pos = nn.Parameter(torch.randn(1, seq, d) * 0.02)
        self.blocks = nn.Sequential(*(Block(d, heads) for _ in range(n_layers)))
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, n_out)

    def forward(self, x): return self.head(self.ln(self.blocks(self.embed(x) + self.pos)).mean(1))


def zoo(quick:bool, device:torch.device) -> dict:
    """Model specs: name -> dict(build, shape, batch, spec_batch, desc). Full sizes are the issue's; on a CPU the three
    heavy models default to a smaller batch (documented in the table; `--batch name=N` overrides)."""
    cpu = device.type == 'cpu'
    if quick:
        return {
            'cnn07a': dict(build=lambda: cnn_07a(**ACT), shape=(1, 28, 28), batch=128,
                           desc='07a CNN (5 ConvLayers + Linear), leak .1 sub .4 maxv 6'),
            'plain50': dict(build=lambda: plain_cnn(50, 64, **ACT), shape=(3, 32, 32), batch=32,
                            desc='plain CNN, 50 07a ConvLayers, 64 ch'),
            'resnet18': dict(build=_resnet('resnet18'), shape=(3, 64, 64), batch=8, desc='torchvision resnet18'),
            'transformer': dict(build=lambda: TinyTransformer(32, 64, 4, 2, 32), shape=(32, 32), batch=16,
                                desc='transformer, 2 blocks, d 64, seq 32'),
        }
    return {
        'cnn07a': dict(build=lambda: cnn_07a(**ACT), shape=(1, 28, 28), batch=512,
                       desc='07a CNN (5 ConvLayers + Linear), leak .1 sub .4 maxv 6'),
        'plain50': dict(build=lambda: plain_cnn(50, 64, **ACT), shape=(3, 32, 32), batch=64 if cpu else 256,
                        spec_batch=256, desc='plain CNN, 50 07a ConvLayers, 64 ch'),
        'resnet50': dict(build=_resnet('resnet50'), shape=(3, 224, 224), batch=8 if cpu else 64, spec_batch=64,
                         desc='torchvision resnet50, weights=None'),
        'transformer': dict(build=lambda: TinyTransformer(64, 256, 4, 4, 128), shape=(128, 64), batch=16 if cpu else 64,
                            spec_batch=64, desc='transformer, 4 blocks, d 256, 4 heads, seq 128'),
    }


def _resnet(name):
    def build():
        import torchvision
        return getattr(torchvision.models, name)(weights=None)
    return build


def depth_spec(quick:bool, device:torch.device, depth:int) -> dict:
    "The plain CNN of the depth sweep; same configuration as `plain50` so that depth 50 can be reused"
    if quick: return dict(build=lambda: plain_cnn(depth, 64, **ACT), shape=(3, 32, 32), batch=32,
                          desc=f'plain CNN, {depth} ConvLayers, 64 ch')
    return dict(build=lambda: plain_cnn(depth, 64, **ACT), shape=(3, 32, 32), batch=64 if device.type == 'cpu' else 256,
                spec_batch=256, desc=f'plain CNN, {depth} ConvLayers, 64 ch')


# ---------------------------------------------------------------------------------------------------------------
# Timing and hooks
# ---------------------------------------------------------------------------------------------------------------

def sync(device):
    if device.type == 'cuda': torch.cuda.synchronize(device)


def timed(fn, device):
    "Wall time of `fn()` with the device synchronised on both sides; returns (seconds, result)"
    sync(device)
    t0 = time.perf_counter()
    res = fn()
    sync(device)
    return time.perf_counter() - t0, res


def call(model, xb):
    if isinstance(xb, dict): return model(**xb)
    if isinstance(xb, tuple): return model(*xb)
    return model(xb)


class Budget(Exception): "A baseline ran past its forward or time budget"


class ForwardCounter:
    "Counts full-model forwards with a pre-hook on the root module; raises `Budget` past `max_calls` or `deadline`"
    def __init__(self, model, max_calls=None, deadline=None):
        self.n, self.max_calls, self.deadline = 0, max_calls, deadline
        self.handle = model.register_forward_pre_hook(self.pre)

    def pre(self, module, args):
        if self.max_calls is not None and self.n >= self.max_calls: raise Budget(f'{self.n} forwards')
        if self.deadline is not None and time.perf_counter() > self.deadline: raise Budget('time budget')
        self.n += 1

    def __enter__(self): return self
    def __exit__(self, *a): self.handle.remove()


def first_tensor(o):
    while isinstance(o, (tuple, list)): o = o[0]
    return o


def fresh_stats(model, xb, units):
    "Per-unit (mean, std, calls) of each unit's output in one fresh forward; a unit called twice is pooled"
    acc = {u.name: [0, 0., 0., 0] for u in units}
    def hook(name):
        def f(m, i, o):
            d = first_tensor(o).detach().double()
            a = acc[name]
            a[0] += d.numel(); a[1] += d.sum().item(); a[2] += (d * d).sum().item(); a[3] += 1
        return f
    hs = [u.module.register_forward_hook(hook(u.name)) for u in units]
    try:
        with torch.no_grad(): call(model, xb)
    finally:
        for h in hs: h.remove()
    out = {}
    for name, (n, s, ss, c) in acc.items():
        if c == 0: out[name] = dict(mean=None, std=None, calls=0); continue
        mean = s / n
        var = max(ss - n * mean * mean, 0.) / max(n - 1, 1)
        out[name] = dict(mean=mean, std=math.sqrt(var), calls=c)
    return out


# ---------------------------------------------------------------------------------------------------------------
# Reference methods
# ---------------------------------------------------------------------------------------------------------------

_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)
_WEIGHTED = (nn.Linear, nn.modules.conv._ConvNd)


def _weight_of(m):
    "The weight 07a divides by the std: the unit's own, or in a block the last norm's (a norm undoes a conv's scale)"
    w = getattr(m, 'weight', None)
    if isinstance(w, torch.Tensor): return w
    kids = list(m.modules())
    first = next((i for i, s in enumerate(kids) if isinstance(s, _WEIGHTED)), None)
    if first is None: return None
    norms = [s.weight for s in kids[first:] if isinstance(s, _NORMS) and isinstance(s.weight, torch.Tensor)]
    return norms[-1] if norms else kids[first].weight


def _shift_of(m):
    "A function `f(delta)` that moves the unit's output by about -delta, or None when the unit has no shift knob"
    if isinstance(getattr(type(m), 'bias', None), property):  # 07a ConvLayer: bias is -relu.sub, with a setter
        if m.bias is None: return None
        def f(d): m.bias = m.bias - d
        return f
    b = getattr(m, 'bias', None)
    if isinstance(b, torch.Tensor):
        return lambda d: b.data.sub_(d)
    if not hasattr(m, 'bias'):  # a block: the bias of its last norm, else of its last conv/linear
        cands = [s.bias for s in m.modules() if s is not m and isinstance(getattr(s, 'bias', None), torch.Tensor)]
        norms = [s.bias for s in m.modules() if isinstance(s, _NORMS) and isinstance(s.bias, torch.Tensor)]
        b = (norms or cands or [None])[-1]
        if b is not None: return lambda d: b.data.sub_(d)
    return None


def lsuv_07a(model, xb, units, tol=1e-3, max_iter=50, order='course', recs=None):
    """fastai course-v3 07a_lsuv, unit by unit with a hook and a FULL model forward per check:
        while mdl(xb) is not None and abs(h.mean)  > 1e-3: m.bias -= h.mean
        while mdl(xb) is not None and abs(h.std-1) > 1e-3: m.weight.data /= h.std
    (`order='course'`; `'std-first'` swaps the two loops). A unit without a shift knob skips the mean loop; each loop
    stops after `max_iter` adjustments (07a would spin forever where the mean is unreachable) and is counted as capped.
    Appends per-unit records (forwards made, adjustments, capped loops, done) to `recs` (kept if interrupted)."""
    stat = {}
    def hook(m, i, o):
        d = first_tensor(o).detach().float()
        stat['mean'], stat['std'] = d.mean().item(), d.std().item()
    recs = [] if recs is None else recs
    with torch.no_grad():
        for u in units:
            m = u.module
            w, shift = _weight_of(m), _shift_of(m)
            rec = dict(name=u.name, forwards=0, mean_steps=0, std_steps=0, capped=[], called=True, done=False)
            h = m.register_forward_hook(hook)
            try:
                def fwd():
                    stat.clear()
                    call(model, xb)
                    rec['forwards'] += 1
                    if not stat: rec['called'] = False
                    return rec['called']
                def mean_loop():
                    if shift is None: return
                    while fwd() and abs(stat['mean']) > tol:
                        if rec['mean_steps'] >= max_iter: rec['capped'].append('mean'); return
                        shift(stat['mean']); rec['mean_steps'] += 1
                def std_loop():
                    if w is None: return
                    while fwd() and abs(stat['std'] - 1) > tol:
                        if rec['std_steps'] >= max_iter or not (stat['std'] > 0 and math.isfinite(stat['std'])):
                            rec['capped'].append('std'); return
                        w.data /= stat['std']; rec['std_steps'] += 1
                for loop in ((mean_loop, std_loop) if order == 'course' else (std_loop, mean_loop)): loop()
                rec['done'] = True
            finally:
                h.remove()
                recs.append(rec)
    return recs


def pypi_lsuv():
    "The PyPI `lsuv` package's single-batch entry point, or (None, why)"
    try:
        import lsuv
        fn = getattr(lsuv, 'lsuv_with_singlebatch', None) or getattr(lsuv, 'LSUVinit', None)
        if fn is not None: return fn, f"lsuv {_version('lsuv')}: lsuv.{fn.__name__}"
    except Exception as e: err = e
    else: err = 'no lsuv_with_singlebatch/LSUVinit in lsuv'
    try:  # the old layout: `from LSUV import LSUVinit`
        from LSUV import LSUVinit
        return LSUVinit, 'LSUV.LSUVinit'
    except Exception: pass
    return None, f'PyPI lsuv not importable ({err}); `pip install lsuv` to include it'


def _version(dist):
    try:
        from importlib.metadata import version
        return version(dist)
    except Exception: return '?'


def run_pypi(fn, model, xb, tol, device):
    "Same target and tolerance as ours, orthonormal pre-init off so it starts from the same weights, quiet"
    kw = dict(needed_std=1.0, std_tol=tol, max_attempts=10, do_orthonorm=False, verbose=False, device=device)
    params = inspect.signature(fn).parameters
    kw = {k: v for k, v in kw.items() if k in params}
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        fn(model, xb, **kw)


def _pypi_units_done():
    try:
        from lsuv.lsuvinit import gg
        return gg['done_counter'] + 1, gg['total_fc_conv_layers']
    except Exception: return None, None


# ---------------------------------------------------------------------------------------------------------------
# One model
# ---------------------------------------------------------------------------------------------------------------

def precision(stats, adjustable, tol):
    "Worst |mean| over mean-adjustable units, worst |mean| over all, worst |std-1|, and the units off `tol`"
    called = {n: s for n, s in stats.items() if s['calls']}
    adj = [abs(s['mean']) for n, s in called.items() if adjustable.get(n, True)]
    worst_mean_adj = max(adj, default=0.)
    worst_mean_all = max((abs(s['mean']) for s in called.values()), default=0.)
    worst_std = max((abs(s['std'] - 1) for s in called.values()), default=0.)
    off = [n for n, s in called.items() if abs(s['std'] - 1) > tol or (adjustable.get(n, True) and abs(s['mean']) > tol)]
    worst_unit = max(called, key=lambda n: abs(called[n]['std'] - 1), default=None)
    return dict(worst_mean_adj=worst_mean_adj, worst_mean_all=worst_mean_all, worst_std=worst_std,
                n_off=len(off), off_units=off[:20], worst_std_unit=worst_unit, n_units=len(stats),
                n_uncalled=len(stats) - len(called))


def report_units(report):
    "Our report's per-unit records as plain dicts (whatever fields the engine provides)"
    keys = ('name', 'kind', 'knobs', 'mean_before', 'std_before', 'mean_after', 'std_after', 'iters', 'converged',
            'mean_target', 'calls')
    out = []
    for u in getattr(report, 'units', []):
        d = {}
        for k in keys:
            v = getattr(u, k, None) if not isinstance(u, dict) else u.get(k)
            if isinstance(v, torch.Tensor): v = v.item() if v.numel() == 1 else v.tolist()
            if v is not None and not isinstance(v, (int, float, str, bool, list)): v = str(v)
            d[k] = v
        out.append(d)
    return out


def bench_model(name, spec, args, device, pypi_fn, methods):
    "Everything for one model: forward floor, each method's time/fpe/forwards/iterations/precision"
    torch.manual_seed(args.seed)
    base = spec['build']().to(device)
    xb = torch.randn(spec['batch'], *spec['shape'], device=device)
    units = find_units(base)
    n_params = sum(p.numel() for p in base.parameters())
    res = dict(model=name, desc=spec['desc'], batch=spec['batch'], spec_batch=spec.get('spec_batch', spec['batch']),
               input=list(spec['shape']), params=n_params, n_units=len(units), methods={})
    print(f"\n== {name}: {spec['desc']}, batch {spec['batch']} x {tuple(spec['shape'])}, {len(units)} units, "
          f"{n_params/1e6:.2f}M params", flush=True)

    fwd_model = copy.deepcopy(base)
    def forward():
        with torch.no_grad(): call(fwd_model, xb)
    if device.type == 'cuda': torch.cuda.reset_peak_memory_stats(device)
    for _ in range(args.warmup): timed(forward, device)
    fwd_times = []
    def fwd_round(k):
        for _ in range(k): fwd_times.append(timed(forward, device)[0])
    if device.type == 'cuda': res['fwd_peak_mib'] = torch.cuda.max_memory_allocated(device) / 2**20

    # ours (and variants), interleaved with forward timings so load changes hit both sides alike
    ours = [m for m in methods if m in OURS]
    runs = {v: dict(times=[], counts=[], rep=None, model=None, warnings=[]) for v in ours}
    for r in range(args.repeats if ours else 0):
        fwd_round(args.fwd_per_round)
        for v in ours:
            m, run = copy.deepcopy(base), runs[v]
            if device.type == 'cuda': torch.cuda.reset_peak_memory_stats(device)
            with warnings.catch_warnings(record=True) as wl, ForwardCounter(m) as fc:
                warnings.simplefilter('always')
                t, rep = timed(lambda: lsuv_init(m, xb, tol=args.tol, **OURS[v]), device)
            run['times'].append(t); run['counts'].append(fc.n)
            if r == 0:
                run.update(model=m, rep=rep, warnings=[str(w.message) for w in wl if issubclass(w.category, LSUVWarning)])
                if device.type == 'cuda': run['peak_mib'] = torch.cuda.max_memory_allocated(device) / 2**20
    fwd_round(args.fwd_per_round if ours else max(3, args.fwd_per_round))
    fwd = statistics.median(fwd_times)
    res.update(fwd_s=fwd, fwd_times=fwd_times)
    print(f'   forward: median {fwd*1e3:.2f} ms over {len(fwd_times)}', flush=True)

    rep_units = report_units(runs[ours[0]]['rep']) if ours else []
    adjustable = {u['name']: u.get('mean_target') in (None, 'adjusted') for u in rep_units if u.get('name') is not None}
    if not adjustable:  # no report (ours not run): a unit's mean is adjustable when it has a shift knob
        adjustable = {u.name: _shift_of(u.module) is not None for u in units}
    res['adjustable'] = adjustable

    for v in ours:
        run = runs[v]
        t, rep_data, rep_units = statistics.median(run['times']), run['rep'], report_units(run['rep'])
        stats = fresh_stats(run['model'], xb, find_units(run['model']))
        iters = [u['iters'] for u in rep_units if isinstance(u.get('iters'), (int, float))]
        # does the report agree with what a fresh forward sees?
        gap = [abs(u['std_after'] - stats[u['name']]['std']) for u in rep_units
               if isinstance(u.get('std_after'), (int, float)) and stats.get(u['name'], {}).get('std') is not None]
        rep_attr = {k: _num(getattr(rep_data, k, None)) for k in ('ok', 'worst_mean', 'worst_std', 'elapsed')}
        res['methods'][v] = dict(
            time_s=t, times=run['times'], fpe=t / fwd, fpe_runs=[x / fwd for x in run['times']], forwards=run['counts'][0],
            iters_mean=statistics.mean(iters) if iters else None, iters_max=max(iters) if iters else None,
            iters=iters, precision=precision(stats, adjustable, args.tol), fresh=stats, report=rep_units,
            report_attrs=rep_attr, report_vs_fresh_std=max(gap, default=None), warnings=run['warnings'][:20],
            n_warnings=len(run['warnings']), peak_mib=run.get('peak_mib'),
            not_adjusted={u['name']: u['mean_target'] for u in rep_units if u.get('mean_target') not in (None, 'adjusted')})
        _print_method(res, v)

    for meth in ('07a', 'pypi'):
        if meth not in methods: continue
        if meth == 'pypi' and pypi_fn is None:
            res['methods'][meth] = dict(skipped=args.pypi_why); continue
        m = copy.deepcopy(base)
        deadline = time.perf_counter() + args.baseline_budget if args.baseline_budget else None
        max_calls = args.max_07a_fpe or None
        recs, aborted = None, None
        with ForwardCounter(m, max_calls=max_calls, deadline=deadline) as fc:
            t0 = time.perf_counter()
            try:
                if meth == '07a':
                    recs, mu = [], find_units(m)
                    t, _ = timed(lambda: lsuv_07a(m, xb, mu, tol=args.tol, max_iter=args.max_iter_07a,
                                                  order=args.order_07a, recs=recs), device)
                else:
                    t, _ = timed(lambda: run_pypi(pypi_fn, m, xb, args.pypi_tol or args.tol, device), device)
            except Budget as e:
                sync(device)
                t, aborted = time.perf_counter() - t0, str(e)
            except Exception as e:  # a baseline that cannot handle a model is a finding, not a crash
                res['methods'][meth] = dict(skipped=f'failed: {type(e).__name__}: {e}'[:300]); continue
        d = dict(time_s=t, fpe=t / fwd, forwards=fc.n, aborted=aborted)
        if meth == '07a':
            done = sum(r['done'] for r in recs)
            if aborted:
                d['note'] = f"aborted after {fc.n} forwards, {done}/{len(mu)} units done ({aborted})"
                if done: d['fpe_est'] = d['fpe'] * len(mu) / done
            else:
                d.update(iters=[r['forwards'] for r in recs], iters_mean=statistics.mean(r['forwards'] for r in recs) if recs else None,
                         iters_max=max((r['forwards'] for r in recs), default=None),
                         capped=[(r['name'], r['capped']) for r in recs if r['capped']],
                         uncalled=[r['name'] for r in recs if not r['called']])
        else:
            done, total = _pypi_units_done()
            d.update(iters_mean=fc.n / total if total and not aborted else None, pypi_units=total)
            if aborted and done is not None:
                d['note'] = f'aborted after {fc.n} forwards, {done}/{total} layers done ({aborted})'
                if done: d['fpe_est'] = d['fpe'] * total / done
        if not aborted:
            stats = fresh_stats(m, xb, find_units(m))
            d.update(precision=precision(stats, adjustable, args.tol), fresh=stats)
        res['methods'][meth] = d
        _print_method(res, meth)
    return res


def _num(v):
    if isinstance(v, torch.Tensor): v = v.item()
    return v if isinstance(v, (int, float, bool)) or v is None else str(v)


def _print_method(res, meth):
    d = res['methods'][meth]
    p = d.get('precision') or {}
    ab = f"  [{d['note']}]" if d.get('note') else ''
    pr = (f"worst |mean| {p['worst_mean_adj']:.1e}, |std-1| {p['worst_std']:.1e}, {p['n_off']}/{p['n_units']} off"
          if p else 'precision n/a')
    print(f"   {meth:5s} {d['time_s']:.3f} s = {d['fpe']:.2f} fpe, {d['forwards']} forwards, {pr}{ab}", flush=True)


# ---------------------------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------------------------

def machine_info(device):
    cpu = platform.processor() or platform.machine()
    try:
        for line in open('/proc/cpuinfo'):
            if line.startswith('model name'): cpu = line.split(':', 1)[1].strip(); break
    except OSError: pass
    info = dict(cpu=cpu, cores=os.cpu_count(), torch_threads=torch.get_num_threads(), python=platform.python_version(),
                torch=torch.__version__, torchvision=_version('torchvision'), lsuv_callback=_version('lsuv_callback'),
                platform=platform.platform(), device=str(device),
                date=datetime.datetime.now().isoformat(timespec='seconds'))
    try: info['load_avg'] = os.getloadavg()
    except OSError: pass
    if device.type == 'cuda':
        info['gpu'] = torch.cuda.get_device_name(device)
        info['cuda'] = torch.version.cuda
    return info


def fmt(v, f='{:.2f}'):
    return '—' if v is None else f.format(v)


def method_cells(d, fwd):
    "Cells for one method row: time, fpe, forwards, iters/unit, worst mean, worst std, off tol, notes"
    if 'skipped' in d: return ['—'] * 7 + [d['skipped']]
    p = d.get('precision') or {}
    fpe = f"{d['fpe']:.2f}"
    if d.get('aborted'): fpe = f'>= {d["fpe"]:.1f}' + (f" (est ~{d['fpe_est']:.0f})" if d.get('fpe_est') else '')
    its = '—' if d.get('iters_mean') is None else f"{d['iters_mean']:.1f}" + (
        f" / {d['iters_max']}" if d.get('iters_max') is not None else '')
    notes = []
    if d.get('note'): notes.append(d['note'])
    if d.get('capped'): notes.append(f"{len(d['capped'])} units capped: " + ', '.join(f'{n}({"+".join(c)})' for n, c in d['capped'][:4]))
    if d.get('uncalled'): notes.append(f"{len(d['uncalled'])} units never called")
    if d.get('n_warnings'): notes.append(f"{d['n_warnings']} LSUVWarnings")
    if d.get('not_adjusted'): notes.append(f"mean not adjusted on {len(d['not_adjusted'])} units")
    if d.get('report_vs_fresh_std') is not None and d['report_vs_fresh_std'] > 1e-4:
        notes.append(f"report std_after differs from fresh pass by {d['report_vs_fresh_std']:.1e}")
    off = f"{p['n_units'] - p['n_uncalled'] - p['n_off']}/{p['n_units'] - p['n_uncalled']}" if p else '—'
    return [f"{d['time_s']:.3f}", fpe, str(d['forwards']), its, fmt(p.get('worst_mean_adj'), '{:.1e}'),
            fmt(p.get('worst_std'), '{:.1e}'), off, '; '.join(notes)]


def speedup(res, meth):
    o, b = res['methods'].get('ours'), res['methods'].get(meth)
    if not o or not b or 'skipped' in b or 'skipped' in o: return None, False
    return b['time_s'] / o['time_s'], bool(b.get('aborted'))


def checks(results, depth_rows, args):
    "The issue's targets as (name, status, detail); status PASS / FAIL / n/a / lower-bound"
    out = []
    deep = [r for r in results if r['model'] in ('plain50', 'resnet50')]
    for r in deep:
        o = r['methods'].get('ours')
        if o: out.append((f"ours <= 3 fpe on {r['model']}", 'PASS' if o['fpe'] <= 3 else 'FAIL', f"{o['fpe']:.2f} fpe"))
        s, lower = speedup(r, '07a')
        if s is None: out.append((f"ours >= 30x faster than 07a on {r['model']}", 'n/a', '07a not run'))
        else:
            st = 'PASS' if s >= 30 else ('INCONCLUSIVE (07a aborted, lower bound)' if lower else 'FAIL')
            out.append((f"ours >= 30x faster than 07a on {r['model']}", st, f"{'>= ' if lower else ''}{s:.1f}x"))
    for r in results + [r for _, r in depth_rows if all(r['model'] != x['model'] for x in results)]:
        o = r['methods'].get('ours')
        if o:
            p = o['precision']
            out.append((f"every unit within tol {args.tol:g} on {r['model']} (ours, fresh pass)",
                        'PASS' if p['n_off'] == 0 and p['n_uncalled'] == 0 else 'FAIL',
                        f"worst |mean| {p['worst_mean_adj']:.1e}, worst |std-1| {p['worst_std']:.1e}, {p['n_off']} off"
                        + (f"; the report's std_after differs from the fresh pass by up to {o['report_vs_fresh_std']:.1e}"
                           if (o.get('report_vs_fresh_std') or 0) > 1e-4 else '')))
    ours = [(d, r['methods']['ours']['fpe']) for d, r in depth_rows if 'ours' in r['methods']]
    if len(ours) >= 2:
        (d0, f0), (d1, f1) = ours[0], ours[-1]
        out.append((f"ours linear in depth (fpe at depth {d1} <= 1.5 x fpe at depth {d0})",
                    'PASS' if f1 <= 1.5 * f0 else 'FAIL', f'{f0:.2f} -> {f1:.2f} fpe'))
    return out


def write_outputs(results, depth_rows, info, args, wall, out_dir, tag):
    out_dir.mkdir(parents=True, exist_ok=True)
    chk = checks(results, depth_rows, args)
    L = [f"# lsuv_callback benchmark ({'quick' if args.quick else 'full'}, {info['device']})", '',
         f"- command: `{' '.join([Path(sys.executable).name] + sys.argv)}`",
         f"- machine: {info['cpu']}, {info['cores']} cores, torch threads {info['torch_threads']}"
         + (f", GPU {info['gpu']} (CUDA {info['cuda']})" if 'gpu' in info else '')
         + (f", load avg at start {tuple(round(x, 2) for x in info['load_avg'])}" if 'load_avg' in info else ''),
         f"- torch {info['torch']}, torchvision {info['torchvision']}, lsuv_callback {info['lsuv_callback']}, "
         f"python {info['python']}, {info['platform']}, {info['date']}",
         f"- tol {args.tol:g}; input: seeded `torch.randn` batch; each method on a deepcopy of the same seeded model; "
         f"wall time of the whole run {wall:.0f} s",
         f"- fpe = method time / median no_grad forward time. ours: median of {args.repeats} runs interleaved with "
         f"the forward timings. 07a: course-v3 07a_lsuv loops (order `{args.order_07a}`), full forward per check, "
         f"loop cap {args.max_iter_07a}. pypi: {args.pypi_why} (std_tol={args.pypi_tol or args.tol:g}, do_orthonorm=False, max_attempts=10; "
         f"it scales conv/linear outputs, std only, so it does not aim at our units' means)."
         + (f" Baselines abort after {args.max_07a_fpe} forwards" if args.max_07a_fpe else '')
         + (f" or {args.baseline_budget:g} s" if args.baseline_budget else '')
         + ' (then the fpe is a lower bound, `est` extrapolates over the units left).', '',
         '## Cost and precision', '',
         '| model | batch x input | fwd (ms) | method | time (s) | fpe | model fwds | iters/unit (mean / max) '
         '| worst abs mean | worst abs(std-1) | units within tol | notes |',
         '|---|---|---:|---|---:|---:|---:|---|---:|---:|---:|---|']
    for r in results:
        bs = f"{r['batch']} x {'x'.join(map(str, r['input']))}"
        if r['spec_batch'] != r['batch']: bs += f" (spec {r['spec_batch']})"
        for i, meth in enumerate(m for m in METHODS if m in r['methods']):
            first = [f"{r['model']} ({r['n_units']} units)", bs, f"{r['fwd_s']*1e3:.1f}"] if i == 0 else ['', '', '']
            L.append('| ' + ' | '.join(first + [meth] + method_cells(r['methods'][meth], r['fwd_s'])) + ' |')
    L += ['', 'iters/unit: ours = the report\'s `iters`; 07a = full forwards per unit (each loop check is one); '
          'pypi = its forwards / its layer count. worst abs mean: over units whose mean ours adjusts '
          '(the report\'s `mean_target`); units within tol: |std-1| and (where adjustable) |mean| <= tol.', '']
    sp = []
    for r in results:
        for meth in ('07a', 'pypi'):
            s, lower = speedup(r, meth)
            if s is not None: sp.append(f"{r['model']}: ours is {'>= ' if lower else ''}{s:.1f}x faster than {meth}")
    if sp: L += ['## Speed-up', ''] + [f'- {s}' for s in sp] + ['']
    mem = [f"- {r['model']}: forward {r['fwd_peak_mib']:.0f} MiB, ours {r['methods']['ours']['peak_mib']:.0f} MiB"
           for r in results if r.get('fwd_peak_mib') is not None and (r['methods'].get('ours') or {}).get('peak_mib') is not None]
    if mem: L += ['## Peak CUDA memory (max_memory_allocated)', ''] + mem + ['']
    if depth_rows:
        ms = [m for m in METHODS if any(m in r['methods'] for _, r in depth_rows)]
        L += ['## Cost vs depth (plain CNN of 07a ConvLayers)', '',
              '| depth | batch | fwd (s) | ' + ' | '.join(f'{m} fpe | {m} s' for m in ms) + ' |',
              '|---:|---:|---:|' + '---:|---:|' * len(ms)]
        for d, r in depth_rows:
            cells = [str(d), str(r['batch']), f"{r['fwd_s']:.3f}"]
            for m in ms:
                x = r['methods'].get(m)
                if x is None or 'skipped' in x: cells += ['skipped', '—']
                else: cells += [(f">= {x['fpe']:.1f}" if x.get('aborted') else f"{x['fpe']:.2f}"), f"{x['time_s']:.2f}"]
            L.append('| ' + ' | '.join(cells) + ' |')
        L += ['', f'![cost vs depth](depth-{tag}.png)', '']
    L += ['## Targets', '', '| target | status | value |', '|---|---|---|']
    L += [f'| {n} | {s} | {v} |' for n, s, v in chk]
    md = '\n'.join(L) + '\n'
    (out_dir / f'results-{tag}.md').write_text(md)
    raw = dict(machine=info, args={k: v for k, v in vars(args).items()}, wall_s=wall, models=results,
               depth=[dict(depth=d, **r) for d, r in depth_rows], checks=chk)
    (out_dir / f'results-{tag}.json').write_text(json.dumps(raw, indent=1, default=str))
    if depth_rows: plot_depth(depth_rows, out_dir / f'depth-{tag}.png', info)
    return md, chk


def plot_depth(depth_rows, path, info):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for m, mk in zip(METHODS, 'o^sd'):
        pts = [(d, r['methods'][m]) for d, r in depth_rows if m in r['methods'] and 'skipped' not in r['methods'][m]]
        if not pts: continue
        ds = [d for d, _ in pts]
        ls = '--' if any(x.get('aborted') for _, x in pts) else '-'
        a1.plot(ds, [x['fpe'] for _, x in pts], ls, marker=mk, label=m + (' (lower bound)' if ls == '--' else ''))
        a2.plot(ds, [x['time_s'] for _, x in pts], ls, marker=mk, label=m)
    fw = [(d, r['fwd_s']) for d, r in depth_rows]
    a2.plot([d for d, _ in fw], [t for _, t in fw], ':', marker='x', color='gray', label='one forward')
    fpes = [x['fpe'] for _, r in depth_rows for x in r['methods'].values() if 'fpe' in x]
    a1.set(xlabel='depth (ConvLayers)', ylabel='time / forward pass (fpe)', title='LSUV cost in fpe',
           yscale='log' if max(fpes, default=1) > 10 * min(fpes, default=1) else 'linear')
    if a1.get_yscale() == 'linear': a1.set_ylim(0, max(fpes + [3.5]) * 1.15)
    a2.set(xlabel='depth (ConvLayers)', ylabel='seconds', yscale='log', title='LSUV wall time')
    a1.axhline(3, color='red', lw=0.8, ls=':'); a1.text(depth_rows[0][0], 3.2, '3 fpe', color='red', fontsize=8)
    for a in (a1, a2): a.grid(alpha=.3, which='both'); a.legend(fontsize=8)
    fig.suptitle(f"plain CNN, batch {depth_rows[0][1]['batch']}, {info['device']}: {info.get('gpu', info['cpu'])}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------------------

def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--quick', action='store_true', help='small sizes, CPU-friendly; exits 1 when our precision bound breaks (costs are reported only)')
    p.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    p.add_argument('--out', default=str(Path(__file__).parent / 'results'), help='folder for the md/json/png results')
    p.add_argument('--models', default=None, help='comma list (default: all of the zoo; "none" for the depth sweep only)')
    p.add_argument('--methods', default='ours,07a,pypi',
                   help='comma list of ours,07a,pypi and ours-notel (lsuv_init with telemetry=False)')
    p.add_argument('--baselines-on', default=None,
                   help='models the 07a/pypi baselines run on (default: all; quick: cnn07a)')
    p.add_argument('--depths', default=None, help='comma list for the depth sweep (default 10,25,50,100; quick 10,25,50; "" none)')
    p.add_argument('--baseline-max-depth', type=int, default=None,
                   help='deepest plain CNN the baselines run on in the sweep (default: 25 on CPU, 100 on CUDA, 0 quick)')
    p.add_argument('--max-07a-fpe', type=int, default=None,
                   help='abort a baseline after this many full forwards (default 150 full, 0 = no cap in quick)')
    p.add_argument('--baseline-budget', type=float, default=None, help='abort a baseline after this many seconds (default 100 on CPU)')
    p.add_argument('--batch', action='append', default=[], metavar='MODEL=N', help='override a model\'s batch size')
    p.add_argument('--tol', type=float, default=1e-3)
    p.add_argument('--pypi-tol', type=float, default=None, help="the PyPI lsuv's std_tol (default: --tol; its own default is 0.1)")
    p.add_argument('--repeats', type=int, default=None, help='runs of ours per model, median taken (default 3; quick 5)')
    p.add_argument('--warmup', type=int, default=2, help='untimed forwards before timing')
    p.add_argument('--fwd-per-round', type=int, default=2, help='timed forwards around each run of ours')
    p.add_argument('--max-iter-07a', type=int, default=50, help='cap on each 07a loop per unit')
    p.add_argument('--order-07a', default='course', choices=['course', 'std-first'],
                   help='course: mean loop then std loop, as in 07a_lsuv; std-first: the other way round')
    p.add_argument('--threads', type=int, default=None,
                   help='torch CPU threads (default 1 on CPU: on a shared small machine OpenMP spin-waits distort timings)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--check', action='store_true', help='exit 1 when a precision or cost target of ours fails (quick checks precision only)')
    return p.parse_args(argv)


def main(argv=None):
    args = parse(argv)
    t_start = time.perf_counter()
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available(): sys.exit('bench: --device cuda but CUDA is not available')
    if device.type == 'cpu': torch.set_num_threads(args.threads or 1)
    elif args.threads: torch.set_num_threads(args.threads)
    cpu = device.type == 'cpu'
    if args.max_07a_fpe is None: args.max_07a_fpe = 0 if args.quick else 150
    if args.baseline_budget is None: args.baseline_budget = 0 if (args.quick or not cpu) else 100
    if args.repeats is None: args.repeats = 5 if args.quick else 3
    if args.baseline_max_depth is None: args.baseline_max_depth = 0 if args.quick else (25 if cpu else 100)
    methods = [m.strip() for m in args.methods.split(',') if m.strip()]
    specs = zoo(args.quick, device)
    names = list(specs) if args.models is None else [m.strip() for m in args.models.split(',') if m.strip() not in ('', 'none')]
    unknown = [n for n in names if n not in specs]
    if unknown: sys.exit(f'bench: unknown models {unknown}; choose from {list(specs)}')
    for o in args.batch:
        k, v = o.split('=')
        specs[k]['batch'] = int(v)
    base_on = ([m.strip() for m in args.baselines_on.split(',')] if args.baselines_on is not None
               else (['cnn07a'] if args.quick else list(specs)))
    depths = args.depths if args.depths is not None else ('10,25,50' if args.quick else '10,25,50,100')
    depths = [int(d) for d in depths.split(',') if d.strip()]
    pypi_fn, args.pypi_why = pypi_lsuv() if 'pypi' in methods else (None, 'not requested')
    info = machine_info(device)
    tag = device.type + ('-quick' if args.quick else '')
    print(f"lsuv_callback bench ({'quick' if args.quick else 'full'}) on {device}: {info.get('gpu', info['cpu'])}, "
          f"torch {info['torch']}, {info['torch_threads']} threads; pypi: {args.pypi_why}", flush=True)

    results = []
    for n in names:
        ms = [m for m in methods if m in OURS or n in base_on]
        results.append(bench_model(n, specs[n], args, device, pypi_fn, ms))
    depth_rows = []
    plain = next((r for r in results if r['model'] == 'plain50'), None)
    for d in depths:
        spec = depth_spec(args.quick, device, d)
        for o in args.batch:
            k, v = o.split('=')
            if k in ('plain', 'plain50'): spec['batch'] = int(v)
        ms = [m for m in methods if m in OURS or d <= args.baseline_max_depth]
        if d == 50 and plain is not None and plain['batch'] == spec['batch'] and set(ms) <= set(plain['methods']):
            r = dict(plain, methods={m: plain['methods'][m] for m in ms})  # the same model and batch: reuse it
        else:
            r = bench_model(f'plain{d}', spec, args, device, pypi_fn, ms)
        for m in methods:
            if m not in r['methods']: r['methods'][m] = dict(skipped=f'depth > {args.baseline_max_depth}')
        depth_rows.append((d, r))

    wall = time.perf_counter() - t_start
    md, chk = write_outputs(results, depth_rows, info, args, wall, Path(args.out), tag)
    print('\n' + md)
    print(f'written to {Path(args.out).resolve()} (results-{tag}.md/.json' + (f', depth-{tag}.png)' if depth_rows else ')'))
    if args.quick or args.check:
        bad = quick_failures(results + [r for _, r in depth_rows if all(r['model'] != x['model'] for x in results)], args,
                             costs=args.check)
        if bad:
            print('BENCH CHECK FAILED:\n  ' + '\n  '.join(bad))
            return 1
        print('bench check: ours within its precision bound on every model (depth sweep included)'
              + (' and <= 3 fpe on the deep CNN' if args.check else '; costs reported above, not checked'))
    return 0


def quick_failures(results, args, costs=False):
    "Our bounds: every unit |std-1| <= tol and (where adjustable) |mean| <= tol; with `costs`, <= 3 fpe on the deep CNN"
    bad = []
    for r in results:
        o = r['methods'].get('ours')
        if not o: continue
        p = o['precision']
        if p['n_off'] or p['n_uncalled']:
            bad.append(f"{r['model']}: {p['n_off']} units off tol {args.tol:g} (worst |mean| {p['worst_mean_adj']:.2e}, "
                       f"|std-1| {p['worst_std']:.2e}; {p['off_units'][:5]}), {p['n_uncalled']} never called")
        if costs and r['model'] in ('plain50', 'resnet50') and o['fpe'] > 3:
            bad.append(f"{r['model']}: ours {o['fpe']:.2f} fpe > 3 (runs: {', '.join(f'{x:.2f}' for x in o['fpe_runs'])})")
    return bad


if __name__ == '__main__':
    sys.exit(main())
