#!/usr/bin/env python
"""Benchmark of `lsuv_callback.core.lsuv_init` against the LSUV methods it replaces.

In one run on one device, in four sections (`--sections`):

- `zoo`: for each model of a small zoo (the course-v3 07a CNN, a deep plain CNN of 07a `ConvLayer`s, torchvision's
  resnet50, a small hand-written transformer), the floor (one plain forward pass under `torch.no_grad`, warmed up, CUDA
  synchronised, median of several) and the cost of each LSUV method in forward-pass-equivalents (fpe = method time /
  forward time), each method on its own `copy.deepcopy` of one seeded model: `ours` (`lsuv_init(model, xb, tol=...)`,
  median of `--repeats` runs interleaved with the forward timings so both see the same machine load), `ours-notel` (the
  same with `telemetry=False`, when asked for in `--methods`), `07a` (the course's loop, a full model forward per check)
  and `pypi` (the PyPI `lsuv` package, when it can be imported); the precision each reaches (worst |mean| and |std-1|
  over the units, in a FRESH forward pass after initialisation); iterations per unit and full model forwards made;
- `depth`: cost against depth for the plain CNN (ours should stay flat in fpe, i.e. linear in time; 07a grows with depth);
- `threads`: fpe of ours at 1 and 2 torch threads (`--thread-counts`) on a 30-layer course-style CNN built two ways (the
  package's `ConvLayer`s in an `nn.Sequential`, and the course's own `CourseConvLayer`), and on plain50 and resnet50;
- `memory`: peak memory above the model's own footprint of a no_grad forward and of `lsuv_init`, each in a fresh
  process (batch 16 at 224 px, resnet50 and vgg11_bn; the method is stated in the results, see memory.py).

Writes `results-<device>[-quick].md`, `.json` (raw numbers, per unit) and `depth-<device>[-quick].png` to `--out`.
On a CPU: torch runs 1 thread (OpenMP spin-waits on a small shared machine distort timings ~100x; `--threads`; the
threads section sets its own), plain50/resnet50/transformer run at a smaller batch (the table says which; `--batch
name=N`), and the baselines, which cost O(units) forwards, abort after `--max-07a-fpe` forwards or `--baseline-budget`
seconds: their fpe is then a lower bound (with an extrapolated estimate), which is enough to check the >= 30x target.
`--quick` runs small sizes (every section) in a minute or two on a CPU and exits non-zero when this package breaks its precision bound.
Costs are reported in the Targets table, never asserted: a shared machine's timing noise must not fail a test suite
(`--check` does fail on a missed cost target, for a run on a quiet machine; the new engine's goals are only reported).

The code reads top to bottom: zoo.py (models), timing.py (timing, the machine), methods.py (ours and the baselines),
precision.py (fresh-pass precision, targets), render.py (tables, plot), memory.py (the memory section), then this file
(the sections and the command line).

Run: python bench/bench.py [--quick] [--device cpu|cuda] [--out bench/results] [--models cnn07a,plain50,...]
"""
from __future__ import annotations
import argparse, statistics, sys, time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
try:
    from lsuv_callback.core import lsuv_init  # noqa: F401
except ImportError as e:  # the engine is the thing under test: without it there is nothing to measure
    sys.exit(f'bench: cannot import the engine ({e}); install the package (pip install -e .) first')

from zoo import make, zoo, depth_spec, thread_specs, memory_specs
from timing import interleaved, machine_info
from methods import OURS, BASELINES, run_ours, ours_result, run_baseline, pypi_lsuv
from precision import adjustable, failures, precision_detail, FPE_TARGET
from render import write_outputs
import memory

SECTIONS = ('zoo', 'depth', 'threads', 'memory')


# ---------------------------------------------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------------------------------------------

def ours_fn(variant:str, xb, args):
    return lambda m: run_ours(m, xb, tol=args.tol, **OURS[variant])


def bench_model(name:str, spec, args, device, methods:list, pypi_fn) -> dict:
    "One model: the forward floor, then each method's time, fpe, forwards, iterations and fresh-pass precision"
    base, xb = make(spec, device, args.seed)
    res = dict(model=name, desc=spec.desc, batch=spec.batch, spec_batch=spec.spec_batch, input=list(spec.shape),
               params=sum(p.numel() for p in base.parameters()), methods={})
    print(f"\n== {name}: {spec.desc}, batch {spec.batch} x {tuple(spec.shape)}, {res['params']/1e6:.2f}M params", flush=True)
    ours = [m for m in methods if m in OURS]
    fwd, runs = interleaved(base, xb, {v: ours_fn(v, xb, args) for v in ours}, device, args.repeats if ours else 0,
                            args.fwd_per_round if ours else max(3, args.fwd_per_round), args.warmup)
    res.update(fwd_s=statistics.median(fwd), fwd_times=fwd)
    res['adjustable'] = adjustable(runs[ours[0]][0][2]['report']) if ours else adjustable(model=base)
    res['n_units'] = len(res['adjustable'])
    print(f"   forward: median {res['fwd_s']*1e3:.2f} ms over {len(fwd)}; {res['n_units']} units", flush=True)
    for v in ours:
        res['methods'][v] = ours_result(runs[v], res['fwd_s'], xb, args.tol)
        show(res, v)
    for meth in (m for m in methods if m in BASELINES):
        res['methods'][meth] = run_baseline(meth, base, xb, res['fwd_s'], res['adjustable'], args, device, pypi_fn)
        show(res, meth)
    return res


def show(res:dict, meth:str):
    d = res['methods'][meth]
    if 'skipped' in d: return print(f"   {meth:5s} skipped: {d['skipped']}", flush=True)
    p = d.get('precision')
    note = f"  [{d['note']}]" if d.get('note') else ''
    pr = f"{precision_detail(p)} of {p['n_units']} units" if p else 'precision n/a'
    print(f"   {meth:5s} {d['time_s']:.3f} s = {d['fpe']:.2f} fpe, {d['forwards']} forwards, {pr}{note}", flush=True)


def run_zoo(args, device, pypi_fn) -> list:
    "The main table: every chosen model of the zoo, the baselines on those of `--baselines-on`"
    return [bench_model(n, spec, args, device, [m for m in args.methods if m in OURS or n in args.baselines_on], pypi_fn)
            for n, spec in args.specs['zoo'].items()]


def run_depth(results:list, args, device, pypi_fn) -> list:
    "The plain CNN at each of `--depths`, the baselines up to `--baseline-max-depth`; plain50 reused from the main table"
    rows, plain = [], next((r for r in results if r['model'] == 'plain50'), None)
    for d in args.depths:
        spec = depth_spec(d, args.quick, device.type == 'cpu')
        spec.batch = args.batch.get('plain50', args.batch.get('plain', spec.batch))
        ms = [m for m in args.methods if m in OURS or d <= args.baseline_max_depth]
        if d == 50 and plain is not None and plain['batch'] == spec.batch and set(ms) <= set(plain['methods']):
            r = dict(plain, methods={m: plain['methods'][m] for m in ms})  # the same model and batch: reuse it
        else:
            r = bench_model(f'plain{d}', spec, args, device, ms, pypi_fn)
        for m in args.methods: r['methods'].setdefault(m, dict(skipped=f'depth > {args.baseline_max_depth}'))
        rows.append((d, r))
    return rows


def run_threads(args, device) -> list:
    "fpe of ours at each of `--thread-counts` torch threads, the forward and lsuv_init timed in the same run, interleaved"
    rows, before = [], torch.get_num_threads()
    for name, spec in args.specs['threads'].items():
        base, xb = make(spec, device, args.seed)
        for n in args.thread_counts:
            torch.set_num_threads(n)
            fwd, runs = interleaved(base, xb, {'ours': ours_fn('ours', xb, args)}, device, args.thread_repeats,
                                    args.fwd_per_round, args.warmup)
            o = ours_result(runs['ours'], statistics.median(fwd), xb, args.tol)
            rows.append(dict(model=name, desc=spec.desc, batch=spec.batch, spec_batch=spec.spec_batch, input=list(spec.shape),
                             threads=n, fwd_s=statistics.median(fwd), fwd_times=fwd, fpe=o['fpe'], methods=dict(ours=o)))
            print(f"   {name} at {n} thread{'s' if n > 1 else ''}: forward {rows[-1]['fwd_s']*1e3:.1f} ms, "
                  f"ours {o['time_s']:.3f} s = {o['fpe']:.2f} fpe", flush=True)
    torch.set_num_threads(before)
    return rows


# ---------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------

def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a('--quick', action='store_true', help='small sizes, CPU-friendly; exits 1 when our precision bound breaks (costs are reported only)')
    a('--device', default='cpu', choices=['cpu', 'cuda'])
    a('--out', default=str(Path(__file__).parent / 'results'), help='folder for the md/json/png results')
    a('--sections', default=','.join(SECTIONS), help=f'comma list of {",".join(SECTIONS)} (default: all)')
    a('--models', default=None, help='comma list: the models the zoo, threads and memory sections run (default: each '
      'section\'s own; "none" for none: the depth sweep only)')
    a('--methods', default='ours,07a,pypi', help='comma list of ours,07a,pypi and ours-notel (lsuv_init with telemetry=False)')
    a('--baselines-on', default=None, help='models the 07a/pypi baselines run on (default: all; quick: cnn07a)')
    a('--depths', default=None, help='comma list for the depth sweep (default 10,25,50,100; quick 10,25,50; "" none)')
    a('--baseline-max-depth', type=int, default=None,
      help='deepest plain CNN the baselines run on in the sweep (default: 25 on CPU, 100 on CUDA, 0 quick)')
    a('--max-07a-fpe', type=int, default=None, help='abort a baseline after this many full forwards (default 150 full, 0 = no cap in quick)')
    a('--baseline-budget', type=float, default=None, help='abort a baseline after this many seconds (default 100 on CPU)')
    a('--batch', action='append', default=[], metavar='MODEL=N', help="override a model's batch size")
    a('--tol', type=float, default=1e-3)
    a('--pypi-tol', type=float, default=None, help="the PyPI lsuv's std_tol (default: --tol; its own default is 0.1)")
    a('--repeats', type=int, default=None, help='runs of ours per model, median taken (default 3; quick 5)')
    a('--warmup', type=int, default=2, help='untimed forwards before timing')
    a('--fwd-per-round', type=int, default=2, help='timed forwards around each run of ours')
    a('--max-iter-07a', type=int, default=50, help='cap on each 07a loop per unit')
    a('--order-07a', default='course', choices=['course', 'std-first'],
      help='course: mean loop then std loop, as in 07a_lsuv; std-first: the other way round')
    a('--threads', type=int, default=None,
      help='torch CPU threads (default 1 on CPU: on a shared small machine OpenMP spin-waits distort timings)')
    a('--thread-counts', default='1,2', help='torch thread counts of the threads section')
    a('--thread-repeats', type=int, default=None, help='runs of ours per model and thread count in the threads section (default 5; quick 3)')
    a('--seed', type=int, default=0)
    a('--check', action='store_true', help='exit 1 when a precision or cost target of ours fails (quick checks precision only)')
    return p.parse_args(argv)


def _list(s): return [x.strip() for x in s.split(',') if x.strip()]


def settle(args):
    "The device and its threads, each default that depends on the mode, and the models each section runs"
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available(): sys.exit('bench: --device cuda but CUDA is not available')
    if device.type == 'cpu' or args.threads: torch.set_num_threads(args.threads or 1)
    cpu, q = device.type == 'cpu', args.quick
    if args.max_07a_fpe is None: args.max_07a_fpe = 0 if q else 150
    if args.baseline_budget is None: args.baseline_budget = 0 if (q or not cpu) else 100
    if args.repeats is None: args.repeats = 5 if q else 3
    if args.thread_repeats is None: args.thread_repeats = 3 if q else 5
    if args.baseline_max_depth is None: args.baseline_max_depth = 0 if q else (25 if cpu else 100)
    args.methods, args.sections = _list(args.methods), _list(args.sections)
    args.depths = [int(d) for d in _list(args.depths if args.depths is not None else '10,25,50' if q else '10,25,50,100')]
    args.thread_counts = [int(n) for n in _list(args.thread_counts)]
    args.batch = {k: int(v) for k, v in (o.split('=') for o in args.batch)}
    args.specs = choose_models(args, cpu)
    args.baselines_on = _list(args.baselines_on) if args.baselines_on is not None else (['cnn07a'] if q else list(args.specs['zoo']))
    return args, device


def choose_models(args, cpu:bool) -> dict:
    "Section -> the models it runs: its own, those `--models` names only if given, none if `--sections` leaves it out"
    sections = dict(zoo=zoo(args.quick, cpu), threads=thread_specs(args.quick, cpu), memory=memory_specs(args.quick))
    known = {n for specs in sections.values() for n in specs}
    chosen = None if args.models is None else set(_list(args.models)) - {'none'}
    unknown = ((chosen or set()) | set(args.batch)) - known - {'plain'}
    if unknown: sys.exit(f'bench: unknown models {sorted(unknown)}; choose from '
                         + '; '.join(f'{k}: {",".join(specs)}' for k, specs in sections.items()))
    pick = {k: {n: s for n, s in specs.items() if k in args.sections and (chosen is None or n in chosen)}
            for k, specs in sections.items()}
    for n, spec in [*pick['zoo'].items(), *pick['threads'].items()]: spec.batch = args.batch.get(n, spec.batch)
    return pick


def main(argv=None):
    args, device = settle(parse(argv))
    t0 = time.perf_counter()
    pypi_fn, args.pypi_why = pypi_lsuv() if 'pypi' in args.methods else (None, 'not requested')
    info, tag = machine_info(device), device.type + ('-quick' if args.quick else '')
    print(f"lsuv_callback bench ({'quick' if args.quick else 'full'}) on {device}: {info.get('gpu', info['cpu'])}, "
          f"torch {info['torch']}, {info['torch_threads']} threads; pypi: {args.pypi_why}", flush=True)
    out = dict(models=run_zoo(args, device, pypi_fn))
    out['depth'] = run_depth(out['models'], args, device, pypi_fn) if 'depth' in args.sections else []
    if args.specs['threads']: print(f'\n== torch threads ({time.perf_counter() - t0:.0f} s in)', flush=True)
    out['threads'] = run_threads(args, device)
    if args.specs['memory']: print(f'\n== peak memory, fresh processes ({time.perf_counter() - t0:.0f} s in)', flush=True)
    out['memory'] = (memory.memory_section(list(args.specs['memory']), args.quick, args.device, args.threads or 1)
                     if args.specs['memory'] else None)
    out['wall_s'] = time.perf_counter() - t0
    md, _ = write_outputs(out, info, args, Path(args.out), tag)
    print('\n' + md)
    print(f'written to {Path(args.out).resolve()} (results-{tag}.md/.json' + (f', depth-{tag}.png)' if out['depth'] else ')'))
    if not (args.quick or args.check): return 0
    bad = failures(out['models'], out['depth'], out['threads'], args.tol, costs=args.check)
    if bad:
        print('BENCH CHECK FAILED:\n  ' + '\n  '.join(bad))
        return 1
    print('bench check: ours within its precision bound on every model (depth sweep and threads included)'
          + (f' and <= {FPE_TARGET:g} fpe on the deep models' if args.check else '; costs reported above, not checked'))
    return 0


if __name__ == '__main__':
    sys.exit(main())
