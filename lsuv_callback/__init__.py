"""LSUV initialisation (Mishkin & Matas 2015) for PyTorch, `lsuv_init`, and for fastai, `LSUVCallback`.

Written by hand, as nbdev leaves it: the version, and the names most people need. `lsuv_callback.all` has the public API."""
__version__ = "0.1.0"

from .core import lsuv_init, unit_stats
from .trainers import lsuv_done, mark_lsuv_done
from .errors import LSUVError, LSUVNothingToInit, LSUVWarning
from .find import find_units
from .report import LSUVReport, UnitReport

_from_callback = {'LSUVCallback', 'draw_batches'}

def __getattr__(name):
    # The callback needs fastai, which takes seconds to import: plain PyTorch users never pay for it
    if name in _from_callback:
        from . import callback
        return getattr(callback, name)
    raise AttributeError(f"module 'lsuv_callback' has no attribute {name!r}")
