"""The results as Markdown, a depth plot and raw JSON: a header saying how the run was made, then cost and precision per
model, speed-ups, cost against depth, cost at each torch thread count, peak memory, and the targets."""
from __future__ import annotations
import json, sys
from dataclasses import asdict, astuple
from pathlib import Path

from .zoo import ModelRun
from .timing import Machine
from .methods import METHODS, MethodResult, Skipped
from .memory import MemoryResult
from .sections import BenchRun, DepthRow, ModelResult, ThreadRow
from .targets import speedup, targets, FPE_GOAL, MEMORY_GOAL


def fmt(v, f='{:.2f}'): return '—' if v is None else f.format(v)


def table(head:list, align:str, rows:list) -> list:
    "Markdown table lines: `head` cells, `align` 'l' or 'r' per column, `rows` lists of cells"
    return (['| ' + ' | '.join(head) + ' |', '|' + '|'.join('---:' if a == 'r' else '---' for a in align) + '|']
            + ['| ' + ' | '.join(map(str, r)) + ' |' for r in rows])


def command() -> str:
    "The command this run was started with: `python -m bench.stock ...` for a module run with `-m`"
    spec = getattr(sys.modules['__main__'], '__spec__', None)
    prog = ['-m', spec.name.removesuffix('.__main__')] if spec else sys.argv[:1]
    return ' '.join([Path(sys.executable).name, *prog, *sys.argv[1:]])


def header(title:str, info:Machine, notes:list) -> list:
    "The title, then how the run was made: command, machine, versions, and one bullet per note"
    gpu = f", GPU {info.gpu} (CUDA {info.cuda})" if info.gpu else ''
    load = f", load avg at start {tuple(round(x, 2) for x in info.load_avg)}" if info.load_avg else ''
    libs = ''.join(f", {lib} {v}" for lib, v in info.libs.items())
    return [f'# {title}', '', f"- command: `{command()}`",
            f"- machine: {info.cpu}, {info.cores} cores, torch threads {info.torch_threads}{gpu}{load}",
            f"- torch {info.torch}{libs}, lsuv_callback {info.lsuv_callback}, python {info.python}, "
            f"{info.platform}, {info.date}", *[f'- {n}' for n in notes], '']


def batch_cell(r:ModelRun) -> str:
    s = f"{r.batch} x {'x'.join(map(str, r.input))}"
    return s + (f" (spec {r.spec_batch})" if r.spec_batch != r.batch else '')


def method_cells(d:MethodResult | Skipped) -> list:
    "Cells for one method row: time, fpe, forwards, iters/unit, worst mean, worst std, units within tol, notes"
    if isinstance(d, Skipped): return ['—'] * 7 + [d.skipped]
    p = d.precision
    fpe = f"{d.fpe:.2f}"
    if d.aborted: fpe = f'>= {d.fpe:.1f}' + (f" (est ~{d.fpe_est:.0f})" if d.fpe_est else '')
    its = '—' if d.iters_mean is None else f"{d.iters_mean:.1f}" + (f" / {d.iters_max}" if d.iters_max is not None else '')
    called = p.n_units - p.n_uncalled if p else None
    return [f"{d.time_s:.3f}", fpe, str(d.forwards), its, fmt(p and p.worst_mean_adj, '{:.1e}'),
            fmt(p and p.worst_std, '{:.1e}'), f"{called - p.n_off}/{called}" if p else '—', '; '.join(d.notes())]


def cost_section(results:list[ModelResult]) -> list:
    if not results: return []
    rows = []
    for r in results:
        for i, meth in enumerate(m for m in METHODS if m in r.methods):
            first = [f"{r.model} ({r.n_units} units)", batch_cell(r), f"{r.fwd_s*1e3:.1f}"] if i == 0 else [''] * 3
            rows.append(first + [meth] + method_cells(r.methods[meth]))
    head = ['model', 'batch x input', 'fwd (ms)', 'method', 'time (s)', 'fpe', 'model fwds', 'iters/unit (mean / max)',
            'worst abs mean', 'worst abs(std-1)', 'units within tol', 'notes']
    sp = [f"- {r.model}: ours is {'>= ' if lower else ''}{s:.1f}x faster than {meth}"
          for r in results for meth in ('07a', 'pypi') for s, lower in [speedup(r, meth)] if s is not None]
    return (['## Cost and precision', ''] + table(head, 'llrlrrrlrrrl', rows) +
            ['', "iters/unit: ours = the report's `iters`; 07a = full forwards per unit (each loop check is one); "
             'pypi = its forwards / its layer count. worst abs mean: over units whose mean ours adjusts '
             "(the report's `mean_adjusted`); units within tol: |std-1| and (where adjustable) |mean| <= tol.", '']
            + (['## Speed-up', ''] + sp + [''] if sp else []))


def depth_section(depth_rows:list[DepthRow], tag:str) -> list:
    if not depth_rows: return []
    ms = [m for m in METHODS if any(m in d.result.methods for d in depth_rows)]
    def cells(x):
        if x is None or isinstance(x, Skipped): return ['skipped', '—']
        return [(f">= {x.fpe:.1f}" if x.aborted else f"{x.fpe:.2f}"), f"{x.time_s:.2f}"]
    rows = [[d.depth, d.result.batch, f"{d.result.fwd_s:.3f}"] + [c for m in ms for c in cells(d.result.methods.get(m))]
            for d in depth_rows]
    head = ['depth', 'batch', 'fwd (s)'] + [f'{m} {k}' for m in ms for k in ('fpe', 's')]
    return (['## Cost vs depth (plain CNN of 07a ConvLayers)', ''] + table(head, 'r' * len(head), rows)
            + ['', f'![cost vs depth](depth-{tag}.png)', ''])


def threads_section(thread_rows:list[ThreadRow], repeats:int) -> list:
    if not thread_rows: return []
    rows = [[r.model, batch_cell(r), r.threads, f"{r.fwd_s*1e3:.1f}", f"{r.ours.time_s:.3f}", f"{r.ours.fpe:.2f}",
             ', '.join(f'{x:.2f}' for x in r.ours.fpe_runs), 'yes' if r.ours.precision.within_tol else 'NO']
            for r in thread_rows]
    head = ['model', 'batch x input', 'torch threads', 'fwd (ms)', 'lsuv_init (s)', 'fpe', 'fpe of each run', 'within tol']
    return (['## Cost at each torch thread count', '',
             f'fpe = median lsuv_init time / median no_grad forward time, both measured in one run at that thread count, '
             f'{repeats} runs of lsuv_init interleaved with forwards. deep30: an `nn.Sequential` of 30 of the package\'s '
             f'`ConvLayer`s (32 channels, stride 1, leak .1 sub .4 maxv 6) and a linear head; deep30-course: the same network '
             f'of the course\'s own `CourseConvLayer`, a plain `nn.Module` as a user would write it. '
             f'Goal of the new engine: <= {FPE_GOAL:g} fpe (reported, not asserted).', '']
            + table(head, 'llrrrrll', rows) + [''])


def memory_section(memory:MemoryResult | None) -> list:
    if not memory: return []
    cal = memory.calibration
    rows = [[r.model, batch_cell(r), fmt(r.forward.model_mib, '{:.1f}'), fmt(r.forward.peak_mib, '{:.1f}'),
             fmt(r.lsuv_init.peak_mib, '{:.1f}'), fmt(r.ratio, '{:.2f}x'),
             '; '.join(m.error for m in (r.forward, r.lsuv_init) if m.error)]
            for r in memory.models]
    head = ['model', 'batch x input', 'weights+buffers (MiB)', 'no_grad forward peak (MiB)', 'lsuv_init peak (MiB)',
            'ratio', 'errors']
    return (['## Peak memory above the model and its batch', '', memory.method, '',
             f"Calibration: a {cal.expected_mib} MiB tensor measured {fmt(cal.peak_mib, '{:.1f}')} MiB "
             f"({cal.method or cal.error}); torch threads {memory.threads}. "
             f'Goal of the new engine: <= {MEMORY_GOAL:g}x (reported, not asserted).', '']
            + table(head, 'llrrrrl', rows) + [''])


def bench_notes(args, wall:float) -> list:
    return [f"tol {args.tol:g}; input: seeded `torch.randn` batch; each method on a deepcopy of the same seeded model; "
            f"wall time of the whole run {wall:.0f} s",
            f"fpe = method time / median no_grad forward time. ours: median of {args.repeats} runs interleaved with "
            f"the forward timings. 07a: course-v3 07a_lsuv loops (`bench.course07a.lsuv_07a`, order `{args.order_07a}`), "
            f"full forward per check, loop cap {args.max_iter_07a}. pypi: {args.pypi_why} (std_tol={args.pypi_tol or args.tol:g}, "
            f"do_orthonorm=False, max_attempts=10; it scales conv/linear outputs, std only, so it does not aim at our units' means)."
            + (f" Baselines abort after {args.max_07a_fpe} forwards" if args.max_07a_fpe else '')
            + (f" or {args.baseline_budget:g} s" if args.baseline_budget else '')
            + ' (then the fpe is a lower bound, `est` extrapolates over the units left).']


def write_outputs(run:BenchRun, info:Machine, args, out_dir:Path, tag:str):
    "Write results-<tag>.md/.json (and the depth plot); returns the Markdown and the targets"
    out_dir.mkdir(parents=True, exist_ok=True)
    chk = targets(run.models, run.depth, run.threads, run.memory, args.tol)
    L = header(f"lsuv_callback benchmark ({'quick' if args.quick else 'full'}, {info.device})", info,
               bench_notes(args, run.wall_s))
    L += (cost_section(run.models) + depth_section(run.depth, tag) + threads_section(run.threads, args.thread_repeats)
          + memory_section(run.memory))
    L += ['## Targets', ''] + table(['target', 'status', 'value'], 'lll', [astuple(c) for c in chk])
    md = '\n'.join(L) + '\n'
    (out_dir / f'results-{tag}.md').write_text(md)
    run_args = {k: v for k, v in vars(args).items() if k != 'specs'} | dict(models_run={k: list(v) for k, v in args.specs.items()})
    raw = dict(machine=asdict(info), args=run_args, **asdict(run), checks=[asdict(c) for c in chk])
    (out_dir / f'results-{tag}.json').write_text(json.dumps(raw, indent=1, default=str))
    if run.depth: plot_depth(run.depth, out_dir / f'depth-{tag}.png', info)
    return md, chk


def plot_depth(depth_rows:list[DepthRow], path:Path, info:Machine):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for m, mk in zip(METHODS, 'o^sd'):
        pts = [(d.depth, d.result.methods[m]) for d in depth_rows if isinstance(d.result.methods.get(m), MethodResult)]
        if not pts: continue
        ls = '--' if any(x.aborted for _, x in pts) else '-'
        a1.plot([d for d, _ in pts], [x.fpe for _, x in pts], ls, marker=mk, label=m + (' (lower bound)' if ls == '--' else ''))
        a2.plot([d for d, _ in pts], [x.time_s for _, x in pts], ls, marker=mk, label=m)
    a2.plot([d.depth for d in depth_rows], [d.result.fwd_s for d in depth_rows], ':', marker='x', color='gray', label='one forward')
    fpes = [x.fpe for d in depth_rows for x in d.result.methods.values() if isinstance(x, MethodResult)]
    a1.set(xlabel='depth (ConvLayers)', ylabel='time / forward pass (fpe)', title='LSUV cost in fpe',
           yscale='log' if max(fpes, default=1) > 10 * min(fpes, default=1) else 'linear')
    if a1.get_yscale() == 'linear': a1.set_ylim(0, max(fpes + [3.5]) * 1.15)
    a2.set(xlabel='depth (ConvLayers)', ylabel='seconds', yscale='log', title='LSUV wall time')
    a1.axhline(3, color='red', lw=0.8, ls=':'); a1.text(depth_rows[0].depth, 3.2, '3 fpe', color='red', fontsize=8)
    for a in (a1, a2): a.grid(alpha=.3, which='both'); a.legend(fontsize=8)
    fig.suptitle(f"plain CNN, batch {depth_rows[0].result.batch}, {info.device}: {info.gpu or info.cpu}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
