"""The results as Markdown, a depth plot and raw JSON: a header saying how the run was made, then cost and precision per
model, speed-ups, cost against depth, cost at each torch thread count, peak memory, and the targets."""
from __future__ import annotations
import json, sys
from pathlib import Path

from methods import METHODS
from precision import speedup, targets, within_tol, FPE_GOAL, MEMORY_GOAL


def fmt(v, f='{:.2f}'): return '—' if v is None else f.format(v)


def table(head:list, align:str, rows:list) -> list:
    "Markdown table lines: `head` cells, `align` 'l' or 'r' per column, `rows` lists of cells"
    return (['| ' + ' | '.join(head) + ' |', '|' + '|'.join('---:' if a == 'r' else '---' for a in align) + '|']
            + ['| ' + ' | '.join(map(str, r)) + ' |' for r in rows])


def header(title:str, info:dict, notes:list) -> list:
    "The title, then how the run was made: command, machine, versions, and one bullet per note"
    gpu = f", GPU {info['gpu']} (CUDA {info['cuda']})" if 'gpu' in info else ''
    load = f", load avg at start {tuple(round(x, 2) for x in info['load_avg'])}" if 'load_avg' in info else ''
    libs = ''.join(f", {lib} {info[lib]}" for lib in info.get('libs', []))
    return [f'# {title}', '', f"- command: `{' '.join([Path(sys.executable).name] + sys.argv)}`",
            f"- machine: {info['cpu']}, {info['cores']} cores, torch threads {info['torch_threads']}{gpu}{load}",
            f"- torch {info['torch']}{libs}, lsuv_callback {info['lsuv_callback']}, python {info['python']}, "
            f"{info['platform']}, {info['date']}", *[f'- {n}' for n in notes], '']


def batch_cell(r:dict) -> str:
    s = f"{r['batch']} x {'x'.join(map(str, r['input']))}"
    return s + (f" (spec {r['spec_batch']})" if r.get('spec_batch', r['batch']) != r['batch'] else '')


def _notes(d:dict) -> str:
    notes = [d['note']] if d.get('note') else []
    if d.get('capped'): notes.append(f"{len(d['capped'])} units capped: " + ', '.join(f'{n}({"+".join(c)})' for n, c in d['capped'][:4]))
    if d.get('uncalled'): notes.append(f"{len(d['uncalled'])} units never called")
    if d.get('n_warnings'): notes.append(f"{d['n_warnings']} LSUVWarnings")
    if d.get('not_adjusted'): notes.append(f"mean not adjusted on {len(d['not_adjusted'])} units")
    if (d.get('report_vs_fresh_std') or 0) > 1e-4: notes.append(f"report std_after differs from fresh pass by {d['report_vs_fresh_std']:.1e}")
    return '; '.join(notes)


def method_cells(d:dict) -> list:
    "Cells for one method row: time, fpe, forwards, iters/unit, worst mean, worst std, units within tol, notes"
    if 'skipped' in d: return ['—'] * 7 + [d['skipped']]
    p = d.get('precision') or {}
    fpe = f"{d['fpe']:.2f}"
    if d.get('aborted'): fpe = f'>= {d["fpe"]:.1f}' + (f" (est ~{d['fpe_est']:.0f})" if d.get('fpe_est') else '')
    its = '—' if d.get('iters_mean') is None else f"{d['iters_mean']:.1f}" + (
        f" / {d['iters_max']}" if d.get('iters_max') is not None else '')
    called = p['n_units'] - p['n_uncalled'] if p else None
    return [f"{d['time_s']:.3f}", fpe, str(d['forwards']), its, fmt(p.get('worst_mean_adj'), '{:.1e}'),
            fmt(p.get('worst_std'), '{:.1e}'), f"{called - p['n_off']}/{called}" if p else '—', _notes(d)]


def cost_section(results:list) -> list:
    if not results: return []
    rows = []
    for r in results:
        for i, meth in enumerate(m for m in METHODS if m in r['methods']):
            first = [f"{r['model']} ({r['n_units']} units)", batch_cell(r), f"{r['fwd_s']*1e3:.1f}"] if i == 0 else [''] * 3
            rows.append(first + [meth] + method_cells(r['methods'][meth]))
    head = ['model', 'batch x input', 'fwd (ms)', 'method', 'time (s)', 'fpe', 'model fwds', 'iters/unit (mean / max)',
            'worst abs mean', 'worst abs(std-1)', 'units within tol', 'notes']
    sp = [f"- {r['model']}: ours is {'>= ' if lower else ''}{s:.1f}x faster than {meth}"
          for r in results for meth in ('07a', 'pypi') for s, lower in [speedup(r, meth)] if s is not None]
    return (['## Cost and precision', ''] + table(head, 'llrlrrrlrrrl', rows) +
            ['', "iters/unit: ours = the report's `iters`; 07a = full forwards per unit (each loop check is one); "
             'pypi = its forwards / its layer count. worst abs mean: over units whose mean ours adjusts '
             "(the report's `mean_adjusted`); units within tol: |std-1| and (where adjustable) |mean| <= tol.", '']
            + (['## Speed-up', ''] + sp + [''] if sp else []))


def depth_section(depth_rows:list, tag:str) -> list:
    if not depth_rows: return []
    ms = [m for m in METHODS if any(m in r['methods'] for _, r in depth_rows)]
    def cells(x):
        if x is None or 'skipped' in x: return ['skipped', '—']
        return [(f">= {x['fpe']:.1f}" if x.get('aborted') else f"{x['fpe']:.2f}"), f"{x['time_s']:.2f}"]
    rows = [[d, r['batch'], f"{r['fwd_s']:.3f}"] + [c for m in ms for c in cells(r['methods'].get(m))] for d, r in depth_rows]
    head = ['depth', 'batch', 'fwd (s)'] + [f'{m} {k}' for m in ms for k in ('fpe', 's')]
    return (['## Cost vs depth (plain CNN of 07a ConvLayers)', ''] + table(head, 'r' * len(head), rows)
            + ['', f'![cost vs depth](depth-{tag}.png)', ''])


def threads_section(thread_rows:list, repeats:int) -> list:
    if not thread_rows: return []
    rows = [[r['model'], batch_cell(r), r['threads'], f"{r['fwd_s']*1e3:.1f}", f"{r['methods']['ours']['time_s']:.3f}",
             f"{r['fpe']:.2f}", ', '.join(f'{x:.2f}' for x in r['methods']['ours']['fpe_runs']),
             'yes' if within_tol(r['methods']['ours']['precision']) else 'NO'] for r in thread_rows]
    head = ['model', 'batch x input', 'torch threads', 'fwd (ms)', 'lsuv_init (s)', 'fpe', 'fpe of each run', 'within tol']
    return (['## Cost at each torch thread count', '',
             f'fpe = median lsuv_init time / median no_grad forward time, both measured in one run at that thread count, '
             f'{repeats} runs of lsuv_init interleaved with forwards. deep30: an `nn.Sequential` of 30 of the package\'s '
             f'`ConvLayer`s (32 channels, stride 1, leak .1 sub .4 maxv 6) and a linear head; deep30-course: the same network '
             f'of the course\'s own `CourseConvLayer`, a plain `nn.Module` as a user would write it. '
             f'Goal of the new engine: <= {FPE_GOAL:g} fpe (reported, not asserted).', '']
            + table(head, 'llrrrrll', rows) + [''])


def memory_section(memory:dict | None) -> list:
    if not memory: return []
    cal = memory['calibration']
    rows = [[r['model'], batch_cell(r), fmt(r['forward'].get('model_mib'), '{:.1f}'),
             fmt(r['forward'].get('peak_mib'), '{:.1f}'), fmt(r['lsuv_init'].get('peak_mib'), '{:.1f}'),
             fmt(r['ratio'], '{:.2f}x'), '; '.join(r[op]['error'] for op in ('forward', 'lsuv_init') if 'error' in r[op])]
            for r in memory['models']]
    head = ['model', 'batch x input', 'weights+buffers (MiB)', 'no_grad forward peak (MiB)', 'lsuv_init peak (MiB)',
            'ratio', 'errors']
    return (['## Peak memory above the model and its batch', '', memory['method'], '',
             f"Calibration: a {cal.get('expected_mib')} MiB tensor measured {fmt(cal.get('peak_mib'), '{:.1f}')} MiB "
             f"({cal.get('method', cal.get('error'))}); torch threads {memory['threads']}. "
             f'Goal of the new engine: <= {MEMORY_GOAL:g}x (reported, not asserted).', '']
            + table(head, 'llrrrrl', rows) + [''])


def bench_notes(args, wall:float) -> list:
    return [f"tol {args.tol:g}; input: seeded `torch.randn` batch; each method on a deepcopy of the same seeded model; "
            f"wall time of the whole run {wall:.0f} s",
            f"fpe = method time / median no_grad forward time. ours: median of {args.repeats} runs interleaved with "
            f"the forward timings. 07a: course-v3 07a_lsuv loops (`lsuv_callback.layers.lsuv_07a`, order `{args.order_07a}`), "
            f"full forward per check, loop cap {args.max_iter_07a}. pypi: {args.pypi_why} (std_tol={args.pypi_tol or args.tol:g}, "
            f"do_orthonorm=False, max_attempts=10; it scales conv/linear outputs, std only, so it does not aim at our units' means)."
            + (f" Baselines abort after {args.max_07a_fpe} forwards" if args.max_07a_fpe else '')
            + (f" or {args.baseline_budget:g} s" if args.baseline_budget else '')
            + ' (then the fpe is a lower bound, `est` extrapolates over the units left).']


def write_outputs(out:dict, info:dict, args, out_dir:Path, tag:str):
    "Write results-<tag>.md/.json (and the depth plot); returns the Markdown and the targets"
    out_dir.mkdir(parents=True, exist_ok=True)
    res, depth, threads, mem = out['models'], out['depth'], out['threads'], out['memory']
    chk = targets(res, depth, threads, mem, args.tol)
    L = header(f"lsuv_callback benchmark ({'quick' if args.quick else 'full'}, {info['device']})", info,
               bench_notes(args, out['wall_s']))
    L += cost_section(res) + depth_section(depth, tag) + threads_section(threads, args.thread_repeats) + memory_section(mem)
    L += ['## Targets', ''] + table(['target', 'status', 'value'], 'lll', chk)
    md = '\n'.join(L) + '\n'
    (out_dir / f'results-{tag}.md').write_text(md)
    run_args = {k: v for k, v in vars(args).items() if k != 'specs'} | dict(models_run={k: list(v) for k, v in args.specs.items()})
    raw = dict(machine=info, args=run_args, wall_s=out['wall_s'], models=res, depth=[dict(depth=d, **r) for d, r in depth],
               threads=threads, memory=mem, checks=chk)
    (out_dir / f'results-{tag}.json').write_text(json.dumps(raw, indent=1, default=str))
    if depth: plot_depth(depth, out_dir / f'depth-{tag}.png', info)
    return md, chk


def plot_depth(depth_rows:list, path:Path, info:dict):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for m, mk in zip(METHODS, 'o^sd'):
        pts = [(d, r['methods'][m]) for d, r in depth_rows if m in r['methods'] and 'skipped' not in r['methods'][m]]
        if not pts: continue
        ls = '--' if any(x.get('aborted') for _, x in pts) else '-'
        a1.plot([d for d, _ in pts], [x['fpe'] for _, x in pts], ls, marker=mk, label=m + (' (lower bound)' if ls == '--' else ''))
        a2.plot([d for d, _ in pts], [x['time_s'] for _, x in pts], ls, marker=mk, label=m)
    a2.plot([d for d, _ in depth_rows], [r['fwd_s'] for _, r in depth_rows], ':', marker='x', color='gray', label='one forward')
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
