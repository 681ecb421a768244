#!/usr/bin/env python
"""What LSUV's collectives cost: `lsuv_init` on one process against two (gloo, CPU), each rank with its own batch.

fpe = LSUV time / one plain no_grad forward pass, both measured on the same process in one run (median of `--repeats`),
so the ratio holds across machines. With two ranks every measurement is one small all-reduce; the difference between the
two fpe figures is what those all-reduces cost (plus the ranks waiting for each other). Also reports how many messages a
run sent and what one all-reduce of that size costs alone.

Run: python -m bench.distributed [--models deep30,transformer] [--repeats 5] [--out bench/results]
"""
from __future__ import annotations
import argparse, copy, json, os, statistics, tempfile, time, warnings
from dataclasses import dataclass, asdict
from datetime import timedelta
from pathlib import Path
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lsuv_callback.core import lsuv_init
from lsuv_callback.distributed import Ranks
from .zoo import deep_cnns, transformer


@dataclass
class Timing:
    "One model on one process: the median forward and LSUV times (s), and the messages one LSUV run sent"
    fwd: float
    lsuv: float
    messages: int

    @property
    def fpe(self) -> float: return self.lsuv / self.fwd


@dataclass
class RankResult:
    "What one rank of the two measured: each model's `Timing`, and the median time of one all-reduce alone (s)"
    models: dict[str, Timing]
    message_s: float

    @classmethod
    def load(cls, path:Path):
        d = json.loads(path.read_text())
        return cls({n: Timing(**t) for n, t in d['models'].items()}, d['message_s'])


def build(name):
    "The model and a batch maker `(rank) -> batch` of one benchmark: the bench's 30-layer course CNN or a small transformer"
    spec = {'deep30': deep_cnns()['deep30'], 'transformer': transformer(64, 64, 4, 4, 64, batch=16)}[name]
    torch.manual_seed(0)
    return spec.build(), lambda r: torch.randn(spec.batch, *spec.shape, generator=torch.Generator().manual_seed(r))

def measure(name, rank, repeats) -> Timing:
    "Median forward time, median LSUV time, and the messages one LSUV run sends, on this process"
    model0, batch = build(name)
    xb = batch(rank)
    with torch.no_grad(): model0(xb)
    fwd, lsuv, sent = [], [], Counter()
    for _ in range(repeats):
        model = copy.deepcopy(model0)
        if dist.is_initialized(): dist.barrier()
        t = time.perf_counter()
        with torch.no_grad(): model(xb)
        fwd.append(time.perf_counter() - t)
        if dist.is_initialized(): dist.barrier()
        with sent, warnings.catch_warnings():
            warnings.simplefilter('ignore')
            t = time.perf_counter()
            lsuv_init(model, xb, telemetry=False)
            lsuv.append(time.perf_counter() - t)
    return Timing(statistics.median(fwd), statistics.median(lsuv), sent.count // repeats)

class Counter:
    "Counts the messages `Ranks` sends while it is entered"
    def __init__(self): self.count = 0
    def __enter__(self):
        self.orig = Ranks._send
        def send(ranks, msg):
            self.count += 1
            return self.orig(ranks, msg)
        Ranks._send = send
    def __exit__(self, *exc): Ranks._send = self.orig

def one_message_cost(repeats=200):
    "Median time of one all-reduce of a message's size (a tag, two codes, four values)"
    ts = []
    for _ in range(repeats):
        msg = torch.zeros(8, dtype=torch.float64)
        t = time.perf_counter()
        dist.all_reduce(msg)
        msg.tolist()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)

def worker(rank, world, tmp, names, repeats):
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=f'file://{tmp}/pg', rank=rank, world_size=world, timeout=timedelta(seconds=120))
    try:
        res = RankResult({n: measure(n, rank, repeats) for n in names}, one_message_cost())
        (Path(tmp)/f'rank{rank}.json').write_text(json.dumps(asdict(res)))
    finally: dist.destroy_process_group()

def two_ranks(names, repeats) -> list[RankResult]:
    with tempfile.TemporaryDirectory() as tmp:
        mp.start_processes(worker, args=(2, tmp, names, repeats), nprocs=2, start_method='spawn')
        return [RankResult.load(Path(tmp)/f'rank{r}.json') for r in range(2)]

def table(one:dict[str, Timing], two:list[RankResult], names) -> str:
    rows = ['| model | 1 rank: fwd (ms) | LSUV (ms) | fpe | 2 ranks: fwd (ms) | LSUV (ms) | fpe | messages per run | ratio |',
            '|---|---:|---:|---:|---:|---:|---:|---:|---:|']
    for n in names:
        a, b = one[n], two[0].models[n]
        rows.append(f"| {n} | {a.fwd*1e3:.1f} | {a.lsuv*1e3:.1f} | {a.fpe:.2f} | {b.fwd*1e3:.1f} | {b.lsuv*1e3:.1f} | "
                    f"{b.fpe:.2f} | {b.messages} | {b.fpe/a.fpe:.2f} |")
    return '\n'.join(rows)

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--models', default='deep30,transformer')
    p.add_argument('--repeats', type=int, default=5)
    p.add_argument('--out', default=None, help='folder to write distributed-cpu.md to')
    args = p.parse_args(argv)
    names = args.models.split(',')
    torch.set_num_threads(1)
    one = {n: measure(n, 0, args.repeats) for n in names}
    two = two_ranks(names, args.repeats)
    text = (f"# LSUV on 1 rank and on 2 (gloo, CPU)\n\n- command: `python -m bench.distributed --models {args.models} "
            f"--repeats {args.repeats}`\n- torch {torch.__version__}, {os.cpu_count()} cores, 1 thread per rank, each rank its own batch\n\n"
            f"{table(one, two, names)}\n\nOne all-reduce of a message alone: {two[0].message_s*1e6:.0f} us (median).\n")
    print(text)
    if args.out: (Path(args.out)/'distributed-cpu.md').write_text(text)

if __name__ == '__main__': main()
