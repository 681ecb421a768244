"""The LSUV methods the benchmark compares, each run on its own copy of one seeded model:

- `ours`: this package's `lsuv_init(model, xb, tol=...)`; `ours-notel` the same with `telemetry=False`;
- `07a`: fastai course-v3 07a_lsuv, `course07a.lsuv_07a` (a full model forward per check), on the units `find_units`
  picks, with 07a's knobs found on each unit by `knobs_07a`;
- `pypi`: the PyPI `lsuv` package, when it can be imported (skipped with a note otherwise).

Each gives a `MethodResult` (`OursResult`, `BaselineResult`), or `Skipped`. The baselines cost O(units) forwards: they
stop after a budget of forwards or seconds (`Budget`), and their cost is then a lower bound, with an estimate
extrapolated over the units left."""
from __future__ import annotations
import copy, inspect, json, statistics, time, warnings
from dataclasses import dataclass

import torch
from torch import nn

from lsuv_callback.core import lsuv_init, find_units
from .course07a import lsuv_07a, course_knobs
from .timing import Budget, ForwardCounter, Timed, timed, sync, dist_version
from .precision import Precision, precision, adjustable

try:
    from lsuv_callback.core import LSUVWarning
except ImportError:
    LSUVWarning = UserWarning

OURS = {'ours': {}, 'ours-notel': dict(telemetry=False)}  # variants of lsuv_init: extra kwargs
BASELINES = ('07a', 'pypi')
METHODS = (*OURS, *BASELINES)


@dataclass
class Skipped:
    "A method that did not run on a model, and why"
    skipped: str


@dataclass(kw_only=True)
class MethodResult:
    "A method's run on one model: its time, fpe (time / forward), full-model forwards, iterations per unit, precision"
    time_s: float
    fpe: float
    forwards: int
    iters_mean: float | None = None
    iters_max: int | None = None
    precision: Precision | None = None  # in a fresh pass; None where the run stopped early
    aborted: str | None = None  # why a baseline stopped at its budget: its fpe is then a lower bound
    fpe_est: float | None = None  # an aborted baseline's fpe, extrapolated over the units it had left
    note: str | None = None

    def notes(self) -> list[str]: return [self.note] if self.note else []


# ---------------------------------------------------------------------------------------------------------------
# ours
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class OursRun:
    "What one `run_ours` gave: the engine's report, the full-model forwards it made, its `LSUVWarning`s"
    report: object
    forwards: int
    warnings: list[str]


@dataclass
class ReportSummary:
    "The engine report's own verdict"
    ok: bool
    worst_mean: float
    worst_std: float
    elapsed: float


@dataclass(kw_only=True)
class OursResult(MethodResult):
    "`lsuv_init` on one model: the median of its runs, each run's time, the first run's report, warnings and precision"
    times: list[float]
    fpe_runs: list[float]
    iters: list[int]
    report: list[dict]  # the engine report's units, as records
    report_vs_fresh_std: float | None  # the largest gap between a unit's reported std and its fresh-pass std
    report_attrs: ReportSummary
    warnings: list[str]  # the first 20
    n_warnings: int
    not_adjusted: dict[str, str | None]  # unit -> why its mean was left alone

    def notes(self) -> list[str]:
        notes = super().notes()
        if self.n_warnings: notes.append(f"{self.n_warnings} LSUVWarnings")
        if self.not_adjusted: notes.append(f"mean not adjusted on {len(self.not_adjusted)} units")
        if (self.report_vs_fresh_std or 0) > 1e-4:
            notes.append(f"report std_after differs from fresh pass by {self.report_vs_fresh_std:.1e}")
        return notes


def run_ours(model, xb, **kwargs) -> OursRun:
    "`lsuv_init(model, xb, **kwargs)` with its full-model forwards counted and its `LSUVWarning`s recorded"
    with warnings.catch_warnings(record=True) as ws, ForwardCounter(model) as fc:
        warnings.simplefilter('always')
        report = lsuv_init(model, xb, **kwargs)
    return OursRun(report, fc.n, [str(w.message) for w in ws if issubclass(w.category, LSUVWarning)])


def report_records(report) -> list[dict]:
    "The report's units as plain JSON-able dicts, whatever fields the engine gives them"
    recs = json.loads(report.to_df().to_json(orient='records'))
    return [dict(r, mean_adjusted=bool(u.mean_adjusted)) for r, u in zip(recs, report.units)]


def ours_result(runs:list[Timed], fwd:float, xb, tol:float) -> OursResult:
    "One variant of ours from its interleaved runs (each `Timed` of a `run_ours`): cost, iterations, precision"
    times, first = [r.seconds for r in runs], runs[0].result
    rep, units = first.report, report_records(first.report)
    p = precision(runs[0].model, xb, adjustable(rep), tol)
    gap = [abs(u['std_after'] - p.fresh[u['name']].std) for u in units
           if u['name'] in p.fresh and u.get('std_after') is not None]
    iters, t = [u['iters'] for u in units], statistics.median(times)
    return OursResult(time_s=t, times=times, fpe=t / fwd, fpe_runs=[x / fwd for x in times], forwards=first.forwards,
                      iters=iters, iters_mean=statistics.mean(iters) if iters else None, iters_max=max(iters, default=None),
                      precision=p, report=units, report_vs_fresh_std=max(gap, default=None),
                      report_attrs=ReportSummary(rep.ok, rep.worst_mean, rep.worst_std, rep.elapsed),
                      warnings=first.warnings[:20], n_warnings=len(first.warnings),
                      not_adjusted={u['name']: u.get('mean_target') for u in units if not u['mean_adjusted']})


# ---------------------------------------------------------------------------------------------------------------
# the baselines: what they give
# ---------------------------------------------------------------------------------------------------------------

@dataclass(kw_only=True)
class BaselineResult(MethodResult):
    "A baseline's run on one model, within its budget: how far it got (units done of `total`) and how it went"
    total: int | None  # units: those `find_units` picks for 07a, the layers it counts for pypi
    done: int | None = None
    iters: list[int] | None = None  # 07a: full forwards per unit
    capped: list[tuple] | None = None  # 07a: (unit, the loops stopped at their cap)
    uncalled: list[str] | None = None  # 07a: units its forwards never called
    pypi_units: int | None = None

    def notes(self) -> list[str]:
        notes = super().notes()
        if self.capped:
            notes.append(f"{len(self.capped)} units capped: " + ', '.join(f'{n}({"+".join(c)})' for n, c in self.capped[:4]))
        if self.uncalled: notes.append(f"{len(self.uncalled)} units never called")
        return notes


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
    its = [r.forwards for r in recs]
    return dict(done=sum(r.done for r in recs), iters=its, iters_mean=statistics.mean(its) if its else None,
                iters_max=max(its, default=None), capped=[(r.name, r.capped) for r in recs if r.capped],
                uncalled=[r.name for r in recs if not r.called])


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

def _budgeted(run, m, args, device):
    "Run `run()` on model `m` within the baseline budget: (seconds, full forwards, why it was aborted or None)"
    deadline = time.perf_counter() + args.baseline_budget if args.baseline_budget else None
    with ForwardCounter(m, max_calls=args.max_07a_fpe or None, deadline=deadline) as fc:
        t0 = time.perf_counter()
        try: return timed(run, device)[0], fc.n, None
        except Budget as e:
            sync(device)
            return time.perf_counter() - t0, fc.n, str(e)


def run_baseline(meth:str, base, xb, fwd:float, adjust:dict, args, device, pypi_fn) -> BaselineResult | Skipped:
    "One run of baseline `meth` on a copy of `base` within its budget: time, fpe, forwards, progress, precision"
    if meth == 'pypi' and pypi_fn is None: return Skipped(args.pypi_why)
    m, recs = copy.deepcopy(base), []
    run = ((lambda: run_07a(m, xb, args, recs)) if meth == '07a' else
           (lambda: run_pypi(pypi_fn, m, xb, args.pypi_tol or args.tol, device)))
    try: t, forwards, aborted = _budgeted(run, m, args, device)
    except Exception as e:  # a baseline that cannot handle a model is a finding, not a crash
        return Skipped(f'failed: {type(e).__name__}: {e}'[:300])
    progress = _07a_progress(recs) if meth == '07a' else _pypi_progress(forwards)
    res = BaselineResult(**(dict(time_s=t, fpe=t / fwd, forwards=forwards, aborted=aborted, total=len(adjust)) | progress))
    if not aborted:
        res.precision = precision(m, xb, adjust, args.tol)
        return res
    res.note = f"aborted after {forwards} forwards, {res.done}/{res.total} units done ({aborted})"
    if res.done: res.fpe_est = res.fpe * res.total / res.done
    res.iters = res.iters_mean = res.iters_max = res.capped = res.uncalled = None
    return res
