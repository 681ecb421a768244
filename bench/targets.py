"""The issue's targets: checked (precision, costs) or reported (the new engine's goals), as `Target`s; and the bounds a
`--quick` or `--check` run fails on."""
from __future__ import annotations
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .methods import OursResult, Skipped

if TYPE_CHECKING:
    from .memory import MemoryResult
    from .sections import DepthRow, ModelResult, ThreadRow

FPE_TARGET, SPEEDUP_TARGET, DEPTH_GROWTH = 3., 30., 1.5  # targets of the engine today (`--check` fails on them)
FPE_GOAL, MEMORY_GOAL = 1.5, 1.5  # goals of the engine being written: reported, never asserted
DEEP = ('plain50', 'resnet50')  # the models the cost targets are about


@dataclass
class Target:
    "One target or goal: what it asks, its status (PASS / FAIL / n/a / INCONCLUSIVE, or goal met / not met), the value"
    target: str
    status: str
    value: str


def speedup(res:ModelResult, meth:str):
    "How many times faster ours was than `meth` on one model, and whether that is a lower bound (`meth` aborted)"
    o, b = res.methods.get('ours'), res.methods.get(meth)
    if o is None or b is None or isinstance(b, Skipped) or isinstance(o, Skipped): return None, False
    return b.time_s / o.time_s, bool(b.aborted)


def _speedup_target(r:ModelResult) -> Target:
    s, lower = speedup(r, '07a')
    name = f"ours >= {SPEEDUP_TARGET:g}x faster than 07a on {r.model}"
    if s is None: return Target(name, 'n/a', '07a not run')
    return Target(name, 'PASS' if s >= SPEEDUP_TARGET else 'INCONCLUSIVE (07a aborted, lower bound)' if lower else 'FAIL',
                  f"{'>= ' if lower else ''}{s:.1f}x")


def _cost_targets(results:list[ModelResult], depth_rows:list[DepthRow]) -> list[Target]:
    out = []
    for r in (r for r in results if r.model in DEEP):
        o = r.methods.get('ours')
        if o: out.append(Target(f"ours <= {FPE_TARGET:g} fpe on {r.model}", 'PASS' if o.fpe <= FPE_TARGET else 'FAIL', f"{o.fpe:.2f} fpe"))
        out.append(_speedup_target(r))
    ours = [(d.depth, d.result.methods['ours'].fpe) for d in depth_rows if 'ours' in d.result.methods]
    if len(ours) >= 2:
        (d0, f0), (d1, f1) = ours[0], ours[-1]
        out.append(Target(f"ours linear in depth (fpe at depth {d1} <= {DEPTH_GROWTH:g} x fpe at depth {d0})",
                          'PASS' if f1 <= DEPTH_GROWTH * f0 else 'FAIL', f'{f0:.2f} -> {f1:.2f} fpe'))
    return out


def _goals(thread_rows:list[ThreadRow], memory:MemoryResult | None) -> list[Target]:
    status = lambda ok: 'met' if ok else 'not met (goal, reported only)'
    out = [Target(f"goal: ours <= {FPE_GOAL:g} fpe on {r.model} at {r.threads} thread{'s' if r.threads > 1 else ''}",
                  status(r.ours.fpe <= FPE_GOAL), f"{r.ours.fpe:.2f} fpe") for r in thread_rows]
    for r in (memory.models if memory else []):
        if r.ratio is not None:
            out.append(Target(f"goal: lsuv_init peak memory <= {MEMORY_GOAL:g}x a no_grad forward's on {r.model}",
                              status(r.ratio <= MEMORY_GOAL), f"{r.ratio:.2f}x"))
    return out


def checked(results:list[ModelResult], depth_rows:list[DepthRow], thread_rows:list[ThreadRow]) -> list[tuple[str, OursResult]]:
    "Every model ours ran on, once, with ours' result: the main table's, the depth sweep's not in it, and the thread section's"
    runs = [(r.model, r.methods.get('ours')) for r in results + [d.result for d in depth_rows]]
    seen, out = set(), []
    for name, o in runs + [(r.model, r.ours) for r in thread_rows]:
        if name not in seen and isinstance(o, OursResult): seen.add(name); out.append((name, o))
    return out


def targets(results:list[ModelResult], depth_rows:list[DepthRow], thread_rows:list[ThreadRow],
            memory:MemoryResult | None, tol:float) -> list[Target]:
    "The issue's targets: PASS / FAIL / n/a / INCONCLUSIVE, and goals met / not met"
    prec = [Target(f"every unit within tol {tol:g} on {name} (ours, fresh pass)",
                   'PASS' if o.precision.within_tol else 'FAIL', o.precision.detail())
            for name, o in checked(results, depth_rows, thread_rows)]
    return _cost_targets(results, depth_rows) + prec + _goals(thread_rows, memory)


def failures(results:list[ModelResult], depth_rows:list[DepthRow], thread_rows:list[ThreadRow], tol:float,
             costs:bool=False) -> list[str]:
    "Our bounds broken: a unit off |std-1| <= tol or (where adjustable) |mean| <= tol; with `costs`, > 3 fpe on a deep model"
    bad = []
    for name, o in checked(results, depth_rows, thread_rows):
        p = o.precision
        if not p.within_tol:
            bad.append(f"{name}: {p.n_off} units off tol {tol:g} (worst |mean| {p.worst_mean_adj:.2e}, "
                       f"|std-1| {p.worst_std:.2e}; {p.off_units[:5]}), {p.n_uncalled} never called")
    for r in (r for r in results if costs and r.model in DEEP and 'ours' in r.methods):
        o = r.methods['ours']
        if o.fpe > FPE_TARGET:
            bad.append(f"{r.model}: ours {o.fpe:.2f} fpe > {FPE_TARGET:g} (runs: {', '.join(f'{x:.2f}' for x in o.fpe_runs)})")
    return bad
