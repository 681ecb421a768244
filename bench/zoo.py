"""The benchmark's models: the course's CNNs (built from the package's `ConvLayer` or from the course's own
`CourseConvLayer`), a small hand-written transformer, and torchvision models built from their configs (random init, no
download). Each is a `Spec`: how to build it and the batch it runs on."""
from __future__ import annotations
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
import torch.nn.functional as F

from lsuv_callback.layers import ConvLayer, CourseConvLayer, cnn_07a

ACT = dict(leak=0.1, sub=0.4, maxv=6.)  # the activation 07a used
CNN07A = '07a CNN (5 ConvLayers + Linear), leak .1 sub .4 maxv 6'


@dataclass
class Spec:
    "A model of the benchmark: `build()` makes it; it runs on a seeded `torch.randn` batch of `batch` x `shape`"
    build: Callable
    shape: tuple
    batch: int
    desc: str
    spec_batch: int | None = None  # the batch the issue names, where a CPU run defaults to a smaller one

    def __post_init__(self): self.spec_batch = self.spec_batch or self.batch


@dataclass(kw_only=True)
class ModelRun:
    "A model as a section ran it: its name and description, the batch x input it ran on, the batch the issue names"
    model: str
    desc: str
    batch: int
    input: list[int]
    spec_batch: int

    @classmethod
    def of(cls, name:str, spec:Spec, **kwargs):
        "The run of model `name` of `spec`, with the fields of `cls` beyond `ModelRun`'s in `kwargs`"
        return cls(model=name, desc=spec.desc, batch=spec.batch, input=list(spec.shape), spec_batch=spec.spec_batch, **kwargs)


def make(spec:Spec, device, seed:int=0):
    "The model of `spec` with seeded weights, and its seeded input batch, on `device`"
    torch.manual_seed(seed)
    return spec.build().to(device), torch.randn(spec.batch, *spec.shape, device=device)


def plain_cnn(depth:int, c:int=64, c_in:int=3, n_out:int=10, layer=ConvLayer, stride:int=2, **kwargs) -> nn.Sequential:
    "`depth` 07a `layer`s (the first of stride `stride`, then stride 1), average pool and a linear head"
    convs = [layer(c_in, c, 3, stride=stride, **kwargs)] + [layer(c, c, 3, stride=1, **kwargs) for _ in range(depth - 1)]
    return nn.Sequential(*convs, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, n_out))


class Block(nn.Module):
    "Pre-LayerNorm transformer block with explicit q/k/v/out `nn.Linear`s (each called as a module) and an MLP"
    def __init__(self, d:int, heads:int, mlp:int=4):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.q, self.k, self.v, self.out = (nn.Linear(d, d) for _ in range(4))
        self.fc1, self.act, self.fc2 = nn.Linear(d, mlp * d), nn.GELU(), nn.Linear(mlp * d, d)

    def forward(self, x):
        b, t, d = x.shape
        y = self.ln1(x)
        q, k, v = (lin(y).view(b, t, self.heads, d // self.heads).transpose(1, 2) for lin in (self.q, self.k, self.v))
        a = F.scaled_dot_product_attention(q, k, v)
        x = x + self.out(a.transpose(1, 2).reshape(b, t, d))
        return x + self.fc2(self.act(self.fc1(self.ln2(x))))


class TinyTransformer(nn.Module):
    "Token features -> linear embedding + learned positions -> `n_layers` `Block`s -> LayerNorm -> mean pool -> head"
    def __init__(self, d_in:int=64, d:int=256, heads:int=4, n_layers:int=4, seq:int=128, n_out:int=10):
        super().__init__()
        self.embed = nn.Linear(d_in, d)
        self.pos = nn.Parameter(torch.randn(1, seq, d) * 0.02)
        self.blocks = nn.Sequential(*(Block(d, heads) for _ in range(n_layers)))
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, n_out)

    def forward(self, x): return self.head(self.ln(self.blocks(self.embed(x) + self.pos)).mean(1))


def torchvision_model(name:str, **kwargs) -> Callable:
    "A builder of torchvision's `name` with random weights (`weights=None`: nothing is downloaded)"
    def build():
        import torchvision
        return getattr(torchvision.models, name)(weights=None, **kwargs)
    return build


def transformer(d_in, d, heads, n_layers, seq, batch=16, spec_batch=None) -> Spec:
    return Spec(lambda: TinyTransformer(d_in, d, heads, n_layers, seq), (seq, d_in), batch,
                f'transformer, {n_layers} blocks, d {d}, {heads} heads, seq {seq}', spec_batch)


def depth_spec(depth:int, quick:bool, cpu:bool) -> Spec:
    "The plain CNN of the depth sweep; `plain50` is its depth 50, so the sweep can reuse it"
    return Spec(lambda: plain_cnn(depth, 64, **ACT), (3, 32, 32), 32 if quick else 64 if cpu else 256,
                f'plain CNN, {depth} 07a ConvLayers, 64 ch', spec_batch=None if quick else 256)


def zoo(quick:bool, cpu:bool) -> dict:
    """The main table's models, name -> `Spec`. Full sizes are the issue's; on a CPU the three heavy models default to a
    smaller batch (the table says which; `--batch name=N` overrides)"""
    cnn = lambda: cnn_07a(**ACT)
    if quick:
        return dict(cnn07a=Spec(cnn, (1, 28, 28), 128, CNN07A), plain50=depth_spec(50, quick, cpu),
                    resnet18=Spec(torchvision_model('resnet18'), (3, 64, 64), 8, 'torchvision resnet18'),
                    transformer=transformer(32, 64, 4, 2, 32))
    return dict(cnn07a=Spec(cnn, (1, 28, 28), 512, CNN07A), plain50=depth_spec(50, quick, cpu),
                resnet50=Spec(torchvision_model('resnet50'), (3, 224, 224), 8 if cpu else 64,
                              'torchvision resnet50, weights=None', spec_batch=64),
                transformer=transformer(64, 256, 4, 4, 128, 16 if cpu else 64, 64))


def deep_cnns(batch:int=32) -> dict:
    """The 30-layer course-style CNN (32 channels, stride 1, 16x16 input, batch 32) built two ways: an `nn.Sequential` of
    the package's `ConvLayer`s, and the same network of the course's `CourseConvLayer`, a user's own `nn.Module` layer"""
    def build(layer): return lambda: plain_cnn(30, 32, layer=layer, stride=1, **ACT)
    return {'deep30': Spec(build(ConvLayer), (3, 16, 16), batch, "30 ConvLayers (the package's, nn.Sequential), 32 ch", 32),
            'deep30-course': Spec(build(CourseConvLayer), (3, 16, 16), batch,
                                  "30 CourseConvLayers (a user's own nn.Module layer), 32 ch", 32)}


def thread_specs(quick:bool, cpu:bool) -> dict:
    "The models timed at each torch thread count: the deep CNN both ways (quick: batch 8), the main table's plain50 and resnet50"
    if quick: return deep_cnns(batch=8)
    main = zoo(quick, cpu)
    return deep_cnns() | {n: main[n] for n in ('plain50', 'resnet50')}


def memory_specs(quick:bool) -> dict:
    "The models of the memory section: batch 16 at 224 px (quick: the 07a CNN, which needs no torchvision to import)"
    if quick: return dict(cnn07a=Spec(lambda: cnn_07a(**ACT), (1, 28, 28), 128, CNN07A))
    return {n: Spec(torchvision_model(n), (3, 224, 224), 16, f'torchvision {n}, weights=None') for n in ('resnet50', 'vgg11_bn')}
