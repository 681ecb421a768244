"""Precision, and the targets: how close each unit's output is to mean 0 and std 1 in a FRESH forward pass after
initialisation (the engine's `unit_stats`, in LSUV's measuring mode), whichever method initialised the model; and the
issue's targets, checked (precision, costs) or reported (the new engine's goals)."""
from __future__ import annotations

from lsuv_callback.core import unit_stats, find_units

FPE_TARGET, SPEEDUP_TARGET, DEPTH_GROWTH = 3., 30., 1.5  # targets of the engine today (`--check` fails on them)
FPE_GOAL, MEMORY_GOAL = 1.5, 1.5  # goals of the engine being written: reported, never asserted


def adjustable(report=None, model=None) -> dict:
    "Unit name -> is its mean adjusted: as `report` says, or (no report) where `find_units` gives the unit a shift knob"
    if report is not None: return {u.name: bool(u.mean_adjusted) for u in report.units}
    return {u.name: u.shift is not None for u in find_units(model)}


def precision(model, xb, adjust:dict, tol:float) -> dict:
    """Over the units of `adjust` (name -> is its mean adjusted), in a fresh forward pass: the worst |mean| of the
    adjusted units and of all, the worst |std-1|, the worst of both where they count, the units off `tol`, the uncalled"""
    fresh = {n: dict(mean=m, std=s) for n, m, s in unit_stats(model, xb) if n in adjust}
    def err(n): return max(abs(fresh[n]['std'] - 1), abs(fresh[n]['mean']) if adjust[n] else 0.)
    off = [n for n in fresh if err(n) > tol]
    return dict(worst_mean_adj=max((abs(s['mean']) for n, s in fresh.items() if adjust[n]), default=0.),
                worst_mean_all=max((abs(s['mean']) for s in fresh.values()), default=0.),
                worst_std=max((abs(s['std'] - 1) for s in fresh.values()), default=0.),
                worst_err=max(map(err, fresh), default=0.), n_off=len(off), off_units=off[:20],
                n_units=len(adjust), n_uncalled=len(adjust) - len(fresh), fresh=fresh)


def within_tol(p:dict) -> bool: return p['n_off'] == 0 and p['n_uncalled'] == 0


def precision_detail(p:dict) -> str:
    return f"worst |mean| {p['worst_mean_adj']:.1e}, worst |std-1| {p['worst_std']:.1e}, {p['n_off']} off"


def speedup(res:dict, meth:str):
    "How many times faster ours was than `meth` on one model, and whether that is a lower bound (`meth` aborted)"
    o, b = res['methods'].get('ours'), res['methods'].get(meth)
    if not o or not b or 'skipped' in b or 'skipped' in o: return None, False
    return b['time_s'] / o['time_s'], bool(b.get('aborted'))


def _cost_targets(results:list, depth_rows:list) -> list:
    out = []
    for r in (r for r in results if r['model'] in ('plain50', 'resnet50')):
        o = r['methods'].get('ours')
        if o: out.append((f"ours <= {FPE_TARGET:g} fpe on {r['model']}", 'PASS' if o['fpe'] <= FPE_TARGET else 'FAIL', f"{o['fpe']:.2f} fpe"))
        s, lower = speedup(r, '07a')
        name = f"ours >= {SPEEDUP_TARGET:g}x faster than 07a on {r['model']}"
        if s is None: out.append((name, 'n/a', '07a not run'))
        else: out.append((name, 'PASS' if s >= SPEEDUP_TARGET else 'INCONCLUSIVE (07a aborted, lower bound)' if lower else 'FAIL',
                          f"{'>= ' if lower else ''}{s:.1f}x"))
    ours = [(d, r['methods']['ours']['fpe']) for d, r in depth_rows if 'ours' in r['methods']]
    if len(ours) >= 2:
        (d0, f0), (d1, f1) = ours[0], ours[-1]
        out.append((f"ours linear in depth (fpe at depth {d1} <= {DEPTH_GROWTH:g} x fpe at depth {d0})",
                    'PASS' if f1 <= DEPTH_GROWTH * f0 else 'FAIL', f'{f0:.2f} -> {f1:.2f} fpe'))
    return out


def _goals(thread_rows:list, memory:dict | None) -> list:
    status = lambda ok: 'met' if ok else 'not met (goal, reported only)'
    out = [(f"goal: ours <= {FPE_GOAL:g} fpe on {r['model']} at {r['threads']} thread{'s' if r['threads'] > 1 else ''}",
            status(r['fpe'] <= FPE_GOAL), f"{r['fpe']:.2f} fpe") for r in thread_rows]
    for r in (memory or {}).get('models', []):
        if r.get('ratio') is not None:
            out.append((f"goal: lsuv_init peak memory <= {MEMORY_GOAL:g}x a no_grad forward's on {r['model']}",
                        status(r['ratio'] <= MEMORY_GOAL), f"{r['ratio']:.2f}x"))
    return out


def checked(results:list, depth_rows:list, thread_rows:list) -> list:
    "Every model ours ran on, once: the main table's, the depth sweep's not in it, and the thread section's"
    seen, out = set(), []
    for r in results + [r for _, r in depth_rows] + thread_rows:
        if r['model'] not in seen and 'ours' in r['methods']: seen.add(r['model']); out.append(r)
    return out


def targets(results:list, depth_rows:list, thread_rows:list, memory:dict | None, tol:float) -> list:
    "The issue's targets as (name, status, detail): PASS / FAIL / n/a / INCONCLUSIVE, and goals met / not met"
    prec = [(f"every unit within tol {tol:g} on {r['model']} (ours, fresh pass)",
             'PASS' if within_tol(r['methods']['ours']['precision']) else 'FAIL',
             precision_detail(r['methods']['ours']['precision'])) for r in checked(results, depth_rows, thread_rows)]
    return _cost_targets(results, depth_rows) + prec + _goals(thread_rows, memory)


def failures(results:list, depth_rows:list, thread_rows:list, tol:float, costs:bool=False) -> list:
    "Our bounds broken: a unit off |std-1| <= tol or (where adjustable) |mean| <= tol; with `costs`, > 3 fpe on a deep model"
    bad = []
    for r in checked(results, depth_rows, thread_rows):
        p = r['methods']['ours']['precision']
        if not within_tol(p):
            bad.append(f"{r['model']}: {p['n_off']} units off tol {tol:g} (worst |mean| {p['worst_mean_adj']:.2e}, "
                       f"|std-1| {p['worst_std']:.2e}; {p['off_units'][:5]}), {p['n_uncalled']} never called")
    for r in (r for r in results if costs and r['model'] in ('plain50', 'resnet50') and 'ours' in r['methods']):
        o = r['methods']['ours']
        if o['fpe'] > FPE_TARGET:
            bad.append(f"{r['model']}: ours {o['fpe']:.2f} fpe > {FPE_TARGET:g} (runs: {', '.join(f'{x:.2f}' for x in o['fpe_runs'])})")
    return bad
