"""The LSUV methods the benchmark compares, each run on its own copy of one seeded model:

- `ours`: this package's `lsuv_init(model, xb, tol=...)`; `ours-notel` the same with `telemetry=False`;
- `07a`: fastai course-v3 07a_lsuv, `lsuv_callback.layers.lsuv_07a` (a full model forward per check), on the units
  `find_units` picks, with 07a's knobs found on each unit by `knobs_07a`;
- `pypi`: the PyPI `lsuv` package, when it can be imported (skipped with a note otherwise).

The baselines cost O(units) forwards: they stop after a budget of forwards or seconds (`Budget`), and their cost is then a
lower bound, with an estimate extrapolated over the units left."""
from __future__ import annotations
import copy, inspect, json, statistics, time, warnings

import torch
from torch import nn

from lsuv_callback.core import lsuv_init, find_units
from lsuv_callback.layers import lsuv_07a, course_knobs
from timing import Budget, ForwardCounter, timed, sync, dist_version
from precision import precision, adjustable

try:
    from lsuv_callback.core import LSUVWarning
except ImportError:
    LSUVWarning = UserWarning

OURS = {'ours': {}, 'ours-notel': dict(telemetry=False)}  # variants of lsuv_init: extra kwargs
BASELINES = ('07a', 'pypi')
METHODS = (*OURS, *BASELINES)


# ---------------------------------------------------------------------------------------------------------------
# ours
# ---------------------------------------------------------------------------------------------------------------

def run_ours(model, xb, **kwargs) -> dict:
    "`lsuv_init(model, xb, **kwargs)` with its full-model forwards counted and its `LSUVWarning`s recorded"
    with warnings.catch_warnings(record=True) as ws, ForwardCounter(model) as fc:
        warnings.simplefilter('always')
        report = lsuv_init(model, xb, **kwargs)
    return dict(report=report, forwards=fc.n, warnings=[str(w.message) for w in ws if issubclass(w.category, LSUVWarning)])


def report_records(report) -> list:
    "The report's units as plain JSON-able dicts, whatever fields the engine gives them"
    recs = json.loads(report.to_df().to_json(orient='records'))
    return [dict(r, mean_adjusted=bool(u.mean_adjusted)) for r, u in zip(recs, report.units)]


def ours_result(runs:list, fwd:float, xb, tol:float) -> dict:
    "One variant of ours from its interleaved runs `[(seconds, model, run_ours result)]`: cost, iterations, precision"
    times = [t for t, _, _ in runs]
    _, model, first = runs[0]
    rep, units = first['report'], report_records(first['report'])
    p = precision(model, xb, adjustable(rep), tol)
    gap = [abs(u['std_after'] - p['fresh'][u['name']]['std']) for u in units
           if u['name'] in p['fresh'] and u.get('std_after') is not None]
    iters, t = [u['iters'] for u in units], statistics.median(times)
    return dict(time_s=t, times=times, fpe=t / fwd, fpe_runs=[x / fwd for x in times], forwards=first['forwards'],
                iters=iters, iters_mean=statistics.mean(iters) if iters else None, iters_max=max(iters, default=None),
                precision=p, report=units, report_vs_fresh_std=max(gap, default=None),
                report_attrs=dict(ok=rep.ok, worst_mean=rep.worst_mean, worst_std=rep.worst_std, elapsed=rep.elapsed),
                warnings=first['warnings'][:20], n_warnings=len(first['warnings']),
                not_adjusted={u['name']: u.get('mean_target') for u in units if not u['mean_adjusted']})


# ---------------------------------------------------------------------------------------------------------------
# the course's 07a loop
# ---------------------------------------------------------------------------------------------------------------

_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)
_WEIGHTED = (nn.Linear, nn.modules.conv._ConvNd)


def knobs_07a(m):
    """07a's knobs on any unit: its own `weight` and `bias` where it has them (a `ConvLayer`'s bias is its `-sub`); in a
    block, those of its last norm (a norm undoes the conv's scale), else of its conv or linear. `None` for a missing one"""
    if not isinstance(getattr(m, 'weight', None), torch.Tensor):
        norms = [k for k in m.modules() if isinstance(k, _NORMS) and isinstance(k.weight, torch.Tensor)]
        m = norms[-1] if norms else next((k for k in m.modules() if isinstance(k, _WEIGHTED)), None)
        if m is None: return None, None
    weight, shift = course_knobs(m)
    return weight, (shift if m.bias is not None else None)


def run_07a(model, xb, args, recs:list):
    "The course's loop on every unit `find_units` picks, in forward order; records go to `recs` as units start"
    mods = [u.module for u in find_units(model)]
    lsuv_07a(model, xb, mods, tol=args.tol, max_iter=args.max_iter_07a, order=args.order_07a, knobs=knobs_07a, recs=recs)
    return len(mods)


def _07a_progress(recs:list) -> dict:
    its = [r['forwards'] for r in recs]
    return dict(done=sum(r['done'] for r in recs), iters=its, iters_mean=statistics.mean(its) if its else None,
                iters_max=max(its, default=None), capped=[(r['name'], r['capped']) for r in recs if r['capped']],
                uncalled=[r['name'] for r in recs if not r['called']])


# ---------------------------------------------------------------------------------------------------------------
# the PyPI lsuv package
# ---------------------------------------------------------------------------------------------------------------

def pypi_lsuv():
    "The PyPI `lsuv` package's single-batch entry point and a description, or (None, why not)"
    try:
        import lsuv
        fn = getattr(lsuv, 'lsuv_with_singlebatch', None) or getattr(lsuv, 'LSUVinit', None)
        if fn is not None: return fn, f"lsuv {dist_version('lsuv')}: lsuv.{fn.__name__}"
        err = 'no lsuv_with_singlebatch/LSUVinit in lsuv'
    except Exception as e: err = e
    try:  # the old layout: `from LSUV import LSUVinit`
        from LSUV import LSUVinit
        return LSUVinit, 'LSUV.LSUVinit'
    except Exception: pass
    return None, f'PyPI lsuv not importable ({err}); `pip install lsuv` to include it'


def run_pypi(fn, model, xb, tol, device):
    "Same target and tolerance as ours, orthonormal pre-init off so it starts from the same weights, quiet"
    kw = dict(needed_std=1.0, std_tol=tol, max_attempts=10, do_orthonorm=False, verbose=False, device=device)
    params = inspect.signature(fn).parameters
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        fn(model, xb, **{k: v for k, v in kw.items() if k in params})


def _pypi_progress(forwards:int) -> dict:
    try:
        from lsuv.lsuvinit import gg
        done, total = gg['done_counter'] + 1, gg['total_fc_conv_layers']
    except Exception: done, total = None, None
    return dict(done=done, total=total, pypi_units=total, iters_mean=forwards / total if total else None)


# ---------------------------------------------------------------------------------------------------------------
# a baseline, within its budget
# ---------------------------------------------------------------------------------------------------------------

def run_baseline(meth:str, base, xb, fwd:float, adjust:dict, args, device, pypi_fn) -> dict:
    "One run of baseline `meth` on a copy of `base` within its budget: time, fpe, forwards, progress, precision"
    if meth == 'pypi' and pypi_fn is None: return dict(skipped=args.pypi_why)
    m, recs, n_units = copy.deepcopy(base), [], len(adjust)
    run = ((lambda: run_07a(m, xb, args, recs)) if meth == '07a' else
           (lambda: run_pypi(pypi_fn, m, xb, args.pypi_tol or args.tol, device)))
    deadline = time.perf_counter() + args.baseline_budget if args.baseline_budget else None
    aborted = None
    with ForwardCounter(m, max_calls=args.max_07a_fpe or None, deadline=deadline) as fc:
        t0 = time.perf_counter()
        try: t, _ = timed(run, device)
        except Budget as e:
            sync(device)
            t, aborted = time.perf_counter() - t0, str(e)
        except Exception as e:  # a baseline that cannot handle a model is a finding, not a crash
            return dict(skipped=f'failed: {type(e).__name__}: {e}'[:300])
    d = dict(time_s=t, fpe=t / fwd, forwards=fc.n, aborted=aborted, total=n_units)
    d.update(_07a_progress(recs) if meth == '07a' else _pypi_progress(fc.n))
    if aborted:
        d['note'] = f"aborted after {fc.n} forwards, {d['done']}/{d['total']} units done ({aborted})"
        if d['done']: d['fpe_est'] = d['fpe'] * d['total'] / d['done']
        for k in ('iters', 'iters_mean', 'iters_max', 'capped', 'uncalled'): d.pop(k, None)
    else:
        d['precision'] = precision(m, xb, adjust, args.tol)
    return d
