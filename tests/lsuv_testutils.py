"Shared helpers for the robustness, distributed and property tests: course-style layers and model-state snapshots."
import copy, math, warnings
import torch
from torch import nn
import torch.nn.functional as F
from lsuv_callback.core import lsuv_init, LSUVWarning

class CourseGeneralRelu(nn.Module):
    "fastai course-v3's own GeneralRelu: `sub` and `maxv` are plain floats and the ops are in place"
    def __init__(self, leak=None, sub=None, maxv=None):
        super().__init__()
        self.leak, self.sub, self.maxv = leak, sub, maxv
    def forward(self, x):
        x = F.leaky_relu(x, self.leak) if self.leak is not None else F.relu(x)
        if self.sub is not None: x.sub_(self.sub)
        if self.maxv is not None: x.clamp_max_(self.maxv)
        return x

class CourseConvLayer(nn.Module):
    "fastai course-v3 07a ConvLayer built on the course's float-`sub` GeneralRelu"
    def __init__(self, ni, nf, ks=3, stride=2, sub=0., **kwargs):
        super().__init__()
        self.conv = nn.Conv2d(ni, nf, ks, padding=ks//2, stride=stride, bias=True)
        self.relu = CourseGeneralRelu(sub=sub, **kwargs)
    def forward(self, x): return self.relu(self.conv(x))

def course_cnn(nfs=(4, 8, 8), c_in=1, n_out=3, extra=None, **kwargs):
    "A small 07a-style CNN of `CourseConvLayer`s; `extra` (a module) is inserted after the second layer"
    nfs = [c_in, *nfs]
    layers = [CourseConvLayer(nfs[i], nfs[i+1], 5 if i == 0 else 3, leak=0.1, sub=0.4, maxv=6., **kwargs)
              for i in range(len(nfs)-1)]
    if extra is not None: layers.insert(2, extra)
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(nfs[-1], n_out))

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
            if name not in out: out[name] = (o.double().mean().item(), o.double().std().item())
        return record
    handles = [mods[n].register_forward_hook(hook(n)) for n in names]
    with torch.no_grad(): model(**xb) if isinstance(xb, dict) else model(*xb) if isinstance(xb, tuple) else model(xb)
    for h in handles: h.remove()
    return out
