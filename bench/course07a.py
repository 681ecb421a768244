"""The fastai course-v3 07a LSUV loop: the reference the benchmark compares `lsuv_init` against.

07a_lsuv initialises each `ConvLayer` in turn, a hook on it recording its output's mean and std, with a full forward
pass of the model for every check:

    def lsuv_module(m, xb):
        h = Hook(m, append_stat)
        while mdl(xb) is not None and abs(h.mean)  > 1e-3: m.bias -= h.mean
        while mdl(xb) is not None and abs(h.std-1) > 1e-3: m.weight.data /= h.std
        h.remove()
        return h.mean,h.std

    for m in mods: print(lsuv_module(m, xb))

`lsuv_07a` is that loop with four additions for models the course never ran it on:

- each loop stops after `max_iter` adjustments, or when the statistic is not a usable number (07a would spin forever
  where the mean cannot reach 0, such as a bias shifted before a ReLU), and the record says so;
- `knobs(m)` gives the weight to divide and the function that moves the mean, for units without the course's `weight` and
  `bias` (`course_knobs`, the default, is the course's; either may be `None` to skip its loop);
- `order='std-first'` runs the std loop first;
- one `UnitRecord` per unit: the full forwards it took, the adjustments of each loop, which loops were capped, the final
  mean and std, and whether it was called at all. Records are appended to `recs` as they start, so a caller that stops
  the loop midway (a forward pre-hook that raises, say) keeps what was done.

It runs without gradients, as only the statistics are needed. On the lesson's CNN each `ConvLayer` ends at std 1, the
last thing its loops set, and its mean is off again, since scaling the weights moves it: the weakness of the course's
order that `lsuv_init` fixes. With `order='std-first'` the mean is set last and both end within the tolerance.
"""
from __future__ import annotations
import math
from dataclasses import dataclass, field

import torch

from lsuv_callback.layers import ConvLayer, CourseConvLayer


def find_modules(m, cond) -> list:
    "`m`'s modules for which `cond` holds, outermost first (not searched inside): the course's `find_modules`"
    if cond(m): return [m]
    return sum([find_modules(o, cond) for o in m.children()], [])


def course_knobs(m):
    "07a's knobs: `m.weight`, divided by the std, and `m.bias`, lowered by the mean (a `ConvLayer`'s bias is its `-sub`)"
    def shift(mean): m.bias -= mean
    return m.weight, shift


@dataclass
class UnitRecord:
    "One unit's run of the 07a loop: its full forwards, the adjustments of each loop, the loops capped, the final statistics"
    name: str | None
    done: bool = False  # both loops ended (a caller that interrupts the run leaves it False)
    forwards: int = 0
    mean_steps: int = 0
    std_steps: int = 0
    capped: list[str] = field(default_factory=list)  # the loops stopped at `max_iter` or on an unusable statistic
    called: bool = True  # the last forward called the unit
    mean: float | None = None
    std: float | None = None


def _mean_std(outp) -> dict:
    "07a's `append_stat`: the mean and std of a module's output (of its first element, for a tuple)"
    d = (outp[0] if isinstance(outp, (tuple, list)) else outp).data
    return dict(mean=d.mean().item(), std=d.std().item())


def lsuv_module(model, m, xb, tol=1e-3, max_iter=50, order='course', knobs=course_knobs, rec:UnitRecord|None=None):
    "07a's `lsuv_module`: shift `m`'s output to mean 0, then scale it to std 1, checking each with a forward of `model`"
    weight, shift = knobs(m)
    rec = UnitRecord(None) if rec is None else rec
    h = {}
    def forward():
        "07a's `mdl(xb) is not None`: one full forward; false when it did not call `m`"
        h.clear(); model(xb)
        rec.forwards += 1; rec.called = bool(h)
        return rec.called
    def mean_loop():
        while shift is not None and forward() and abs(h['mean']) > tol:
            if rec.mean_steps >= max_iter or not math.isfinite(h['mean']):
                rec.capped.append('mean'); return
            rec.mean_steps += 1
            shift(h['mean'])
    def std_loop():
        while weight is not None and forward() and abs(h['std']-1) > tol:
            if rec.std_steps >= max_iter or not 0 < h['std'] < math.inf:
                rec.capped.append('std'); return
            rec.std_steps += 1
            weight.data /= h['std']
    hook = m.register_forward_hook(lambda mod, inp, outp: h.update(_mean_std(outp)))
    try:
        for loop in ((mean_loop, std_loop) if order == 'course' else (std_loop, mean_loop)): loop()
    finally: hook.remove()
    rec.mean, rec.std = h.get('mean'), h.get('std')
    return rec.mean, rec.std


def lsuv_07a(model, xb, mods=None, tol=1e-3, max_iter=50, order='course', knobs=course_knobs, recs=None) -> list[UnitRecord]:
    "fastai course-v3 07a LSUV: `lsuv_module` on each of `mods` (default: the `ConvLayer`s) in turn; a record per unit"
    if mods is None: mods = find_modules(model, lambda o: isinstance(o, (ConvLayer, CourseConvLayer)))
    names = {id(m): n for n, m in model.named_modules()}
    recs = [] if recs is None else recs
    with torch.no_grad():
        for m in mods:
            rec = UnitRecord(names.get(id(m)))
            recs.append(rec)
            lsuv_module(model, m, xb, tol, max_iter, order, knobs, rec)
            rec.done = True
    return recs
