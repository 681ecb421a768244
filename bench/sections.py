"""The benchmark's sections: the zoo (the main table), the depth sweep and the torch thread counts, each giving typed
rows (`ModelResult`, `DepthRow`, `ThreadRow`); a whole run is a `BenchRun` (the memory section is in memory.py)."""
from __future__ import annotations
import dataclasses, statistics
from dataclasses import dataclass, field

import torch

from .zoo import ModelRun, make, depth_spec
from .timing import interleaved
from .methods import OURS, BASELINES, MethodResult, OursResult, Skipped, run_ours, ours_result, run_baseline
from .precision import adjustable
from .memory import MemoryResult


@dataclass(kw_only=True)
class ModelResult(ModelRun):
    "One model of the main table or the depth sweep: its forward floor, its units, and each method's result"
    params: int
    fwd_s: float  # the median of `fwd_times`
    fwd_times: list[float]
    adjustable: dict[str, bool]  # unit -> is its mean adjusted
    n_units: int
    methods: dict[str, MethodResult | Skipped] = field(default_factory=dict)


@dataclass
class DepthRow:
    "The plain CNN at one depth of the sweep"
    depth: int
    result: ModelResult


@dataclass(kw_only=True)
class ThreadRow(ModelRun):
    "Ours on one model at one torch thread count, timed against forwards at that count"
    threads: int
    fwd_s: float
    fwd_times: list[float]
    ours: OursResult


@dataclass
class BenchRun:
    "What one run of the benchmark measured, section by section (empty, or None, for a section left out)"
    models: list[ModelResult]
    depth: list[DepthRow]
    threads: list[ThreadRow]
    memory: MemoryResult | None
    wall_s: float


def ours_fn(variant:str, xb, args):
    return lambda m: run_ours(m, xb, tol=args.tol, **OURS[variant])


def bench_model(name:str, spec, args, device, methods:list, pypi_fn) -> ModelResult:
    "One model: the forward floor, then each method's time, fpe, forwards, iterations and fresh-pass precision"
    base, xb = make(spec, device, args.seed)
    params = sum(p.numel() for p in base.parameters())
    print(f"\n== {name}: {spec.desc}, batch {spec.batch} x {tuple(spec.shape)}, {params/1e6:.2f}M params", flush=True)
    ours = [m for m in methods if m in OURS]
    fwd, runs = interleaved(base, xb, {v: ours_fn(v, xb, args) for v in ours}, device, args.repeats if ours else 0,
                            args.fwd_per_round if ours else max(3, args.fwd_per_round), args.warmup)
    adjust = adjustable(runs[ours[0]][0].result.report) if ours else adjustable(model=base)
    res = ModelResult.of(name, spec, params=params, fwd_s=statistics.median(fwd), fwd_times=fwd, adjustable=adjust,
                         n_units=len(adjust))
    print(f"   forward: median {res.fwd_s*1e3:.2f} ms over {len(fwd)}; {res.n_units} units", flush=True)
    for v in ours:
        res.methods[v] = ours_result(runs[v], res.fwd_s, xb, args.tol)
        show(res, v)
    for meth in (m for m in methods if m in BASELINES):
        res.methods[meth] = run_baseline(meth, base, xb, res.fwd_s, res.adjustable, args, device, pypi_fn)
        show(res, meth)
    return res


def show(res:ModelResult, meth:str):
    d = res.methods[meth]
    if isinstance(d, Skipped): return print(f"   {meth:5s} skipped: {d.skipped}", flush=True)
    p = d.precision
    note = f"  [{d.note}]" if d.note else ''
    pr = f"{p.detail()} of {p.n_units} units" if p else 'precision n/a'
    print(f"   {meth:5s} {d.time_s:.3f} s = {d.fpe:.2f} fpe, {d.forwards} forwards, {pr}{note}", flush=True)


def run_zoo(args, device, pypi_fn) -> list[ModelResult]:
    "The main table: every chosen model of the zoo, the baselines on those of `--baselines-on`"
    return [bench_model(n, spec, args, device, [m for m in args.methods if m in OURS or n in args.baselines_on], pypi_fn)
            for n, spec in args.specs['zoo'].items()]


def run_depth(results:list[ModelResult], args, device, pypi_fn) -> list[DepthRow]:
    "The plain CNN at each of `--depths`, the baselines up to `--baseline-max-depth`; plain50 reused from the main table"
    rows, plain = [], next((r for r in results if r.model == 'plain50'), None)
    for d in args.depths:
        spec = depth_spec(d, args.quick, device.type == 'cpu')
        spec.batch = args.batch.get('plain50', args.batch.get('plain', spec.batch))
        ms = [m for m in args.methods if m in OURS or d <= args.baseline_max_depth]
        if d == 50 and plain is not None and plain.batch == spec.batch and set(ms) <= set(plain.methods):
            r = dataclasses.replace(plain, methods={m: plain.methods[m] for m in ms})  # the same model and batch: reuse it
        else:
            r = bench_model(f'plain{d}', spec, args, device, ms, pypi_fn)
        for m in args.methods: r.methods.setdefault(m, Skipped(f'depth > {args.baseline_max_depth}'))
        rows.append(DepthRow(d, r))
    return rows


def run_threads(args, device) -> list[ThreadRow]:
    "fpe of ours at each of `--thread-counts` torch threads, the forward and lsuv_init timed in the same run, interleaved"
    rows, before = [], torch.get_num_threads()
    for name, spec in args.specs['threads'].items():
        base, xb = make(spec, device, args.seed)
        for n in args.thread_counts:
            torch.set_num_threads(n)
            fwd, runs = interleaved(base, xb, {'ours': ours_fn('ours', xb, args)}, device, args.thread_repeats,
                                    args.fwd_per_round, args.warmup)
            o = ours_result(runs['ours'], statistics.median(fwd), xb, args.tol)
            rows.append(ThreadRow.of(name, spec, threads=n, fwd_s=statistics.median(fwd), fwd_times=fwd, ours=o))
            print(f"   {name} at {n} thread{'s' if n > 1 else ''}: forward {rows[-1].fwd_s*1e3:.1f} ms, "
                  f"ours {o.time_s:.3f} s = {o.fpe:.2f} fpe", flush=True)
    torch.set_num_threads(before)
    return rows
