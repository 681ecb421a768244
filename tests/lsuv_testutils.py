"""Shared helpers for the robustness, distributed and property tests: the course's own layers (from
`lsuv_callback.layers`, re-exported here) in a small CNN, and model-state snapshots."""
import copy, math, warnings
import torch
from torch import nn
from lsuv_callback.core import lsuv_init, LSUVWarning
from lsuv_callback.layers import CourseGeneralRelu, CourseConvLayer, cnn_07a

def course_cnn(nfs=(4, 8, 8), c_in=1, n_out=3, extra=None, **kwargs):
    "A small 07a CNN of the course's own `CourseConvLayer`s; `extra` (a module) is inserted after the second layer"
    model = cnn_07a(nfs, c_in, n_out, layer=CourseConvLayer, leak=0.1, sub=0.4, maxv=6., **kwargs)
    if extra is not None: model.insert(2, extra)
    return model

def model_state(model):
    "Everything LSUV may touch: a copy of the state dict plus every float attribute of every module (course `sub`s)"
    sd = {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()}
    floats = {(n, a): v for n, m in model.named_modules() for a, v in vars(m).items()
              if isinstance(v, float) and not a.startswith('_')}
    return sd, floats

def changed(model, before):
    "Names of the tensors and float attributes of `model` that differ (bit for bit) from `before`"
    sd, floats = before
    now_sd, now_floats = model_state(model)
    out = [k for k in sd if k not in now_sd or sd[k].dtype != now_sd[k].dtype or not torch.equal(sd[k], now_sd[k])]
    out += [f'{n}.{a}' for (n, a), v in floats.items()
            if not (now_floats.get((n, a)) == v or (math.isnan(v) and math.isnan(now_floats.get((n, a), 0.))))]
    return out

def assert_unchanged(model, before):
    diff = changed(model, before)
    assert not diff, f'LSUV changed {diff} although it raised'

def hooks_of(model):
    "Every forward (pre-)hook left registered on any module of `model`"
    return {n: (dict(m._forward_hooks), dict(m._forward_pre_hooks)) for n, m in model.named_modules()
            if m._forward_hooks or m._forward_pre_hooks}

def run(model, xb, **kwargs):
    "`lsuv_init` with every warning recorded: returns the report and the LSUVWarning messages"
    with warnings.catch_warnings(record=True) as ws:
        warnings.simplefilter('always')
        report = lsuv_init(model, xb, **kwargs)
    return report, [str(w.message) for w in ws if issubclass(w.category, LSUVWarning)], ws

def oracle_stats(model, xb, names):
    """`{name: (mean, std)}` of each named module's first output in a fresh forward pass of a copy of `model` on `xb`, in
    the mode LSUV measures in (eval mode, BatchNorm and InstanceNorm in train mode), computed here in float64 with
    torch's own unbiased std: an oracle independent of the package's statistics and mode switching"""
    model = copy.deepcopy(model)
    model.eval()
    for m in model.modules():
        if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)): m.training = True
    mods, out = dict(model.named_modules()), {}
    def hook(name):
        def record(m, i, o):
            if name not in out: out[name] = (o.detach().cpu().double().mean().item(), o.detach().cpu().double().std().item()) # MPS has no float64
        return record
    handles = [mods[n].register_forward_hook(hook(n)) for n in names]
    with torch.no_grad(): model(**xb) if isinstance(xb, dict) else model(*xb) if isinstance(xb, tuple) else model(xb)
    for h in handles: h.remove()
    return out

from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

class RefusesFloat64(TorchFunctionMode):
    "Every torch call that makes a float64 tensor fails, as on Apple's MPS, which has no float64"
    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if any(isinstance(t, torch.Tensor) and t.dtype == torch.float64 for t in tree_flatten(out)[0]):
            raise TypeError(f'{getattr(func, "__name__", func)} made a float64 tensor, which MPS cannot hold')
        return out

def as_on_mps(monkeypatch):
    "The package's choice of the widest float, made as on MPS (float32), for the code run inside `RefusesFloat64`"
    import lsuv_callback.batch, lsuv_callback.telemetry, lsuv_callback.measure, lsuv_callback.distributed, lsuv_callback.fitter
    for mod in (lsuv_callback.batch, lsuv_callback.telemetry, lsuv_callback.measure, lsuv_callback.distributed, lsuv_callback.fitter): monkeypatch.setattr(mod, 'widest_float', lambda device: torch.float32)

def reads_of_the_device(f):
    "How often `f()` reads a tensor back to the host (`tolist`, `item`, `bool`, `float`, `int`): on a GPU each one waits for the device"
    from unittest import mock
    n, real = [0], {a: getattr(torch.Tensor, a) for a in ('tolist', 'item', '__bool__', '__float__', '__int__')}
    def counted(a): return lambda t, *args: n.__setitem__(0, n[0] + 1) or real[a](t, *args)
    with mock.patch.multiple(torch.Tensor, **{a: counted(a) for a in real}): f()
    return n[0]

def as_on_gpu(monkeypatch):
    "The fitter's choice made as on a GPU, where reading the device waits for it: the first correction replayed before the first read"
    import lsuv_callback.fitter
    monkeypatch.setattr(lsuv_callback.fitter, 'reads_wait', lambda device: True)
