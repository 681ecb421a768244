"""Peak memory of `lsuv_init` against one plain `torch.no_grad()` forward pass, above the model's own footprint.

Each measurement runs in a fresh Python process (`python -m bench.memory --child MODEL OP`), so nothing one leaves in
the allocator or in torch's caches reaches another. On a CPU that process builds the model and its batch, runs the
operation once on 2 samples (unmeasured: it loads the kernels' code and fills torch's and oneDNN's one-time caches),
resets the kernel's peak-RSS counter (`echo 5 > /proc/self/clear_refs`), reads its RSS (`VmRSS` in /proc/self/status),
runs the operation once on the whole batch and reads the peak RSS (`VmHWM`): the peak above the footprint is the
difference. glibc runs with a fixed mmap threshold (`MALLOC_MMAP_THRESHOLD_=131072`), so every buffer of 128 KiB or more
is mapped on its own and unmapped when freed, and RSS follows the live tensors rather than what the allocator keeps
cached (with glibc's default, dynamic threshold the memory the warm-up freed stays cached and is reused: a small resnet18
forward then reads 0.3 MiB). A calibration process allocates a tensor of known size the same way. Where the peak cannot
be reset (no /proc), it is `ru_maxrss` minus the RSS before the operation, without the warm-up: it then also counts
first-call costs and any higher peak while the model was built, so it can only overstate. On CUDA the same processes
use the caching allocator's own count instead: `max_memory_allocated` minus `memory_allocated` before the operation.
"""
from __future__ import annotations
import argparse, copy, gc, json, os, resource, subprocess, sys, time, warnings
from dataclasses import dataclass, asdict
from pathlib import Path

from .zoo import ModelRun, make, memory_specs

MIB = 2 ** 20
CALIBRATION_MIB = 256
MMAP_THRESHOLD = 128 * 1024
OPS = ('forward', 'lsuv_init')


@dataclass
class Measure:
    "One fresh process's measurement: the peak above the footprint and how it was read, or the error the process ended with"
    model: str
    op: str
    peak_mib: float | None = None
    method: str | None = None
    error: str | None = None
    seconds: float | None = None
    base_mib: float | None = None  # the footprint the peak is above
    model_mib: float | None = None  # the model's weights and buffers
    batch_mib: float | None = None
    expected_mib: float | None = None  # the calibration's: the size of the tensor it allocates


@dataclass(kw_only=True)
class MemoryRow(ModelRun):
    "One model's no_grad forward and lsuv_init, each measured in a fresh process, and the ratio of their peaks"
    forward: Measure
    lsuv_init: Measure
    ratio: float | None


@dataclass
class MemoryResult:
    "The memory section: how peaks are measured, the calibration, the torch threads, a row per model"
    method: str
    calibration: Measure
    threads: int
    models: list[MemoryRow]


def _proc_status(key:str) -> int:
    "A size in bytes from /proc/self/status (VmRSS, VmHWM)"
    with open('/proc/self/status') as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ':'))


class RssMeter:
    "This process's resident memory: `reset()` makes the current RSS the base, `peak()` is the peak RSS above it"
    def __init__(self):
        try:
            with open('/proc/self/clear_refs', 'w') as f: f.write('5')
            self.method = 'VmHWM after clear_refs'
        except OSError: self.method = 'ru_maxrss'

    def reset(self):
        gc.collect()
        if self.method != 'ru_maxrss':
            with open('/proc/self/clear_refs', 'w') as f: f.write('5')
            self.base = _proc_status('VmRSS')
        else: self.base = _rss_now()

    def peak(self) -> int:
        if self.method == 'ru_maxrss': return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - self.base
        return _proc_status('VmHWM') - self.base


def _rss_now() -> int:
    try: return _proc_status('VmRSS')
    except OSError: return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # no /proc: the peak so far


class CudaMeter:
    "The CUDA caching allocator's count of live tensor bytes: `peak()` is its peak above the count at `reset()`"
    method = 'max_memory_allocated'

    def __init__(self, device): self.device = device

    def reset(self):
        import torch
        gc.collect()
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        self.base = torch.cuda.memory_allocated(self.device)

    def peak(self) -> int:
        import torch
        torch.cuda.synchronize(self.device)
        return torch.cuda.max_memory_allocated(self.device) - self.base


def run_op(op:str, model, xb):
    "One plain `no_grad` forward, or `lsuv_init` with its warnings silenced"
    import torch
    from lsuv_callback.core import lsuv_init
    if op == 'forward':
        with torch.no_grad(): return model(xb)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return lsuv_init(model, xb)


def child(name:str, op:str, quick:bool, device:str, threads:int) -> Measure:
    "Measure `op` on model `name` in this (fresh) process; `name` 'calibration' allocates a tensor of known size instead"
    import torch
    torch.set_num_threads(threads)
    dev = torch.device(device)
    meter = CudaMeter(dev) if dev.type == 'cuda' else RssMeter()
    if name == 'calibration':
        meter.reset()
        x = torch.ones(CALIBRATION_MIB * MIB // 4, device=dev)
        return Measure(name, op, peak_mib=meter.peak() / MIB, method=meter.method, expected_mib=CALIBRATION_MIB)
    model, xb = make(memory_specs(quick)[name], dev)
    if meter.method != 'ru_maxrss':  # warm-up on a copy (lsuv_init changes the model), then every copy freed
        run_op(op, copy.deepcopy(model) if op == 'lsuv_init' else model, xb[:2])
    meter.reset()
    t0 = time.perf_counter()
    run_op(op, model, xb)
    peak = meter.peak()
    return Measure(name, op, peak_mib=peak / MIB, method=meter.method, seconds=time.perf_counter() - t0,
                   base_mib=meter.base / MIB, model_mib=sum(t.numel() * t.element_size() for t in model.state_dict().values()) / MIB,
                   batch_mib=xb.numel() * xb.element_size() / MIB)


def measure(name:str, op:str, quick:bool, device:str, threads:int) -> Measure:
    "Run `child` in a fresh process, glibc's mmap threshold fixed; its result, or the error it ended with"
    cmd = [sys.executable, '-m', __spec__.name, '--child', name, op, '--device', device, '--threads', str(threads)] + (['--quick'] if quick else [])
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(MMAP_THRESHOLD))
    # run from the folder that holds the `bench` package, so the child imports it wherever this run started
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=Path(__file__).parents[1])
    if r.returncode: return Measure(name, op, error=(r.stderr.strip().splitlines() or ['?'])[-1][:300])
    return Measure(**json.loads(r.stdout.strip().splitlines()[-1]))


def memory_section(names:list, quick:bool, device:str, threads:int) -> MemoryResult:
    "The calibration, then for each model its forward's and lsuv_init's peaks above the footprint, and their ratio"
    specs, rows = memory_specs(quick), []
    cal = measure('calibration', 'alloc', quick, device, threads)
    print(f"   calibration: {CALIBRATION_MIB} MiB tensor reads {cal.peak_mib if cal.peak_mib is not None else float('nan'):.1f} MiB", flush=True)
    for n in names:
        f, l = (measure(n, op, quick, device, threads) for op in OPS)
        ratio = l.peak_mib / f.peak_mib if f.peak_mib and l.peak_mib is not None else None
        rows.append(MemoryRow.of(n, specs[n], forward=f, lsuv_init=l, ratio=ratio))
        print(f"   {n}: forward +{f.peak_mib or float('nan'):.0f} MiB, lsuv_init +{l.peak_mib or float('nan'):.0f} MiB"
              + (f", {ratio:.2f}x" if ratio else ''), flush=True)
    return MemoryResult(method=__doc__.split('\n\n', 1)[1].strip(), calibration=cal, threads=threads, models=rows)


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--child', nargs=2, metavar=('MODEL', 'OP'), required=True)
    p.add_argument('--device', default='cpu')
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--quick', action='store_true')
    a = p.parse_args()
    print(json.dumps(asdict(child(*a.child, a.quick, a.device, a.threads))))
