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

The code reads top to bottom: zoo.py (models), timing.py (timing, the machine), course07a.py (the course's loop),
methods.py (ours and the baselines), precision.py (fresh-pass precision), memory.py (the memory section), sections.py
(the other sections), targets.py (the targets), render.py (tables, plot), then this file (the command line).

Run: python -m bench [--quick] [--device cpu|cuda] [--out bench/results] [--models cnn07a,plain50,...]
"""
from __future__ import annotations
import argparse, sys, time
from pathlib import Path

import torch

try:
    from lsuv_callback.core import lsuv_init  # noqa: F401
except ImportError as e:  # the engine is the thing under test: without it there is nothing to measure
    sys.exit(f'bench: cannot import the engine ({e}); install the package (pip install -e .) first')

from .zoo import zoo, thread_specs, memory_specs
from .timing import machine_info
from .methods import pypi_lsuv
from .sections import BenchRun, run_zoo, run_depth, run_threads
from .targets import failures, FPE_TARGET
from .render import write_outputs
from . import memory

SECTIONS = ('zoo', 'depth', 'threads', 'memory')


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


def run_sections(args, device, pypi_fn, t0:float) -> BenchRun:
    "Each section `--sections` asks for, in turn; the times are from `t0`, the run's start"
    models = run_zoo(args, device, pypi_fn)
    depth = run_depth(models, args, device, pypi_fn) if 'depth' in args.sections else []
    if args.specs['threads']: print(f'\n== torch threads ({time.perf_counter() - t0:.0f} s in)', flush=True)
    threads = run_threads(args, device)
    if args.specs['memory']: print(f'\n== peak memory, fresh processes ({time.perf_counter() - t0:.0f} s in)', flush=True)
    mem = (memory.memory_section(list(args.specs['memory']), args.quick, args.device, args.threads or 1)
           if args.specs['memory'] else None)
    return BenchRun(models, depth, threads, mem, wall_s=time.perf_counter() - t0)


def main(argv=None):
    args, device = settle(parse(argv))
    t0 = time.perf_counter()
    pypi_fn, args.pypi_why = pypi_lsuv() if 'pypi' in args.methods else (None, 'not requested')
    info, tag = machine_info(device), device.type + ('-quick' if args.quick else '')
    print(f"lsuv_callback bench ({'quick' if args.quick else 'full'}) on {device}: {info.gpu or info.cpu}, "
          f"torch {info.torch}, {info.torch_threads} threads; pypi: {args.pypi_why}", flush=True)
    run = run_sections(args, device, pypi_fn, t0)
    md, _ = write_outputs(run, info, args, Path(args.out), tag)
    print('\n' + md)
    print(f'written to {Path(args.out).resolve()} (results-{tag}.md/.json' + (f', depth-{tag}.png)' if run.depth else ')'))
    if not (args.quick or args.check): return 0
    bad = failures(run.models, run.depth, run.threads, args.tol, costs=args.check)
    if bad:
        print('BENCH CHECK FAILED:\n  ' + '\n  '.join(bad))
        return 1
    print('bench check: ours within its precision bound on every model (depth sweep and threads included)'
          + (f' and <= {FPE_TARGET:g} fpe on the deep models' if args.check else '; costs reported above, not checked'))
    return 0


if __name__ == '__main__':
    sys.exit(main())
