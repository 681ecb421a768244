"""Precision: how close each unit's output is to mean 0 and std 1 in a FRESH forward pass after initialisation (the
engine's `unit_stats`, in LSUV's measuring mode), whichever method initialised the model."""
from __future__ import annotations
from dataclasses import dataclass

from lsuv_callback.core import unit_stats, find_units


@dataclass
class Stats:
    "One unit's output in the fresh pass"
    mean: float
    std: float


@dataclass
class Precision:
    """Over the units a method should have set, in a fresh forward pass: the worst |mean| of the units whose mean is
    adjusted and of all, the worst |std-1|, the worst of both where they count, the units off the tolerance, the uncalled"""
    worst_mean_adj: float
    worst_mean_all: float
    worst_std: float
    worst_err: float
    n_off: int
    off_units: list[str]  # the first 20
    n_units: int
    n_uncalled: int
    fresh: dict[str, Stats]

    @property
    def within_tol(self) -> bool: return self.n_off == 0 and self.n_uncalled == 0

    def detail(self) -> str:
        return f"worst |mean| {self.worst_mean_adj:.1e}, worst |std-1| {self.worst_std:.1e}, {self.n_off} off"


def adjustable(report=None, model=None) -> dict[str, bool]:
    "Unit name -> is its mean adjusted: as `report` says, or (no report) where `find_units` gives the unit a shift knob"
    if report is not None: return {u.name: bool(u.mean_adjusted) for u in report.units}
    return {u.name: u.shift is not None for u in find_units(model)}


def precision(model, xb, adjust:dict[str, bool], tol:float) -> Precision:
    "The `Precision` of `model` over the units of `adjust` (name -> is its mean adjusted), each off when its error > `tol`"
    fresh = {n: Stats(m, s) for n, m, s in unit_stats(model, xb) if n in adjust}
    def err(n): return max(abs(fresh[n].std - 1), abs(fresh[n].mean) if adjust[n] else 0.)
    off = [n for n in fresh if err(n) > tol]
    return Precision(worst_mean_adj=max((abs(s.mean) for n, s in fresh.items() if adjust[n]), default=0.),
                     worst_mean_all=max((abs(s.mean) for s in fresh.values()), default=0.),
                     worst_std=max((abs(s.std - 1) for s in fresh.values()), default=0.),
                     worst_err=max(map(err, fresh), default=0.), n_off=len(off), off_units=off[:20],
                     n_units=len(adjust), n_uncalled=len(adjust) - len(fresh), fresh=fresh)
