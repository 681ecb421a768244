"""Timing, and the machine it runs on: wall time with the device synchronised, full-model forwards counted (and
budgeted), and method runs interleaved with forward timings so both see the same machine load."""
from __future__ import annotations
import copy, datetime, os, platform, time
from dataclasses import dataclass

import torch
from torch import nn


def sync(device):
    if device.type == 'cuda': torch.cuda.synchronize(device)


def timed(fn, device):
    "Wall time of `fn()` with the device synchronised on both sides; returns (seconds, result)"
    sync(device)
    t0 = time.perf_counter()
    res = fn()
    sync(device)
    return time.perf_counter() - t0, res


def call(model, xb):
    "`model` on batch `xb`: a tensor, a tuple of arguments or a dict of keyword arguments"
    if isinstance(xb, dict): return model(**xb)
    if isinstance(xb, tuple): return model(*xb)
    return model(xb)


class Budget(Exception): "A baseline ran past its forward or time budget"


class ForwardCounter:
    "Counts full-model forwards with a pre-hook on the root module; raises `Budget` past `max_calls` or `deadline`"
    def __init__(self, model, max_calls=None, deadline=None):
        self.n, self.max_calls, self.deadline = 0, max_calls, deadline
        self.handle = model.register_forward_pre_hook(self.pre)

    def pre(self, module, args):
        if self.max_calls is not None and self.n >= self.max_calls: raise Budget(f'{self.n} forwards')
        if self.deadline is not None and time.perf_counter() > self.deadline: raise Budget('time budget')
        self.n += 1

    def __enter__(self): return self
    def __exit__(self, *a): self.handle.remove()


def fresh_forward(base, xb, device) -> float:
    "Seconds of one `no_grad` forward of a fresh deepcopy of `base` (made outside the timing), as each method's run gets"
    # `base` itself never runs (a forward in train mode updates BatchNorm statistics). A forward of a copy that just
    # ran has its weights in the CPU's caches: on a small model it is 7-10% faster than the same forward on a fresh
    # copy, and fpe would be biased by that much against the methods
    m = copy.deepcopy(base)
    def run():
        with torch.no_grad(): call(m, xb)
    return timed(run, device)[0]


@dataclass
class Timed:
    "One timed run of a method: its seconds, the model copy it ran on, and what it returned"
    seconds: float
    model: nn.Module
    result: object


def interleaved(base, xb, methods:dict, device, repeats:int, per_round:int=2, warmup:int=2):
    """Time one `no_grad` forward of `base` against each of `methods` (name -> `fn(model)`), every forward and every
    run on its own deepcopy of `base` (made outside the timing): `per_round` forwards, then one run of each method,
    `repeats` times, then `per_round` forwards more. Returns the forward times and `{name: [Timed]}`"""
    def forward(): return fresh_forward(base, xb, device)
    for _ in range(warmup): forward()
    fwd, runs = [], {name: [] for name in methods}
    def forwards(): fwd.extend(forward() for _ in range(per_round))
    for _ in range(repeats):
        forwards()
        for name, fn in methods.items():
            m = copy.deepcopy(base)
            t, res = timed(lambda: fn(m), device)
            runs[name].append(Timed(t, m, res))
    forwards()
    return fwd, runs


def dist_version(dist:str) -> str:
    try:
        from importlib.metadata import version
        return version(dist)
    except Exception: return '?'


@dataclass
class Machine:
    "Where a run was made: CPU, cores, torch threads, GPU, load at the start, the versions of python, torch and libraries"
    cpu: str
    cores: int
    torch_threads: int
    python: str
    torch: str
    libs: dict[str, str]  # library -> version
    lsuv_callback: str
    platform: str
    device: str
    date: str
    load_avg: tuple[float, float, float] | None = None
    gpu: str | None = None
    cuda: str | None = None


def machine_info(device, libs=('torchvision',)) -> Machine:
    "CPU, cores, torch threads, load, GPU, and the versions of python, torch, `libs` and this package"
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f: cpu = next(l.split(':', 1)[1].strip() for l in f if l.startswith('model name'))
    except (OSError, StopIteration): pass
    info = Machine(cpu=cpu, cores=os.cpu_count(), torch_threads=torch.get_num_threads(), python=platform.python_version(),
                   torch=torch.__version__, libs={lib: dist_version(lib) for lib in libs},
                   lsuv_callback=dist_version('lsuv_callback'), platform=platform.platform(), device=str(device),
                   date=datetime.datetime.now().isoformat(timespec='seconds'))
    try: info.load_avg = os.getloadavg()
    except OSError: pass
    if device.type == 'cuda': info.gpu, info.cuda = torch.cuda.get_device_name(device), torch.version.cuda
    return info
