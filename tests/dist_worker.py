"""What each rank of tests/test_distributed.py runs (a module of its own, so that spawned processes import only this).

Every rank builds the same model from the same seed, draws a *different* batch (seeded by its rank, and from a
different distribution on each rank, as a data-parallel loader's shards can be), runs LSUV, and saves what it ended with
(the full state and float attributes, the report, its own batch, and each unit's sufficient statistics in a fresh
forward pass on its own batch) to `tmp/<scenario>-<rank>.pt`."""
import gc, os, sys, traceback, warnings
from datetime import timedelta
from pathlib import Path
import torch
import torch.distributed as dist
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))

def batch(rank, n=16, c=1, s=28):
    "Rank `rank`'s batch: other samples, and another mean and scale, on every rank"
    g = torch.Generator().manual_seed(100 + rank)
    return torch.randn(n, c, s, s, generator=g) * (1 + rank) + rank

def tokens(rank, n=8, t=12, d=32):
    g = torch.Generator().manual_seed(200 + rank)
    return torch.randn(n, t, d, generator=g) * (1 + rank)

class Block(nn.Module):
    "A small transformer block: attention from Linears, LayerNorm, GELU MLP"
    def __init__(self, d=32, h=4):
        super().__init__()
        self.h, self.ln1, self.ln2 = h, nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.o = nn.Linear(d, 3*d), nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, 4*d), nn.GELU(), nn.Linear(4*d, d))
    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.h, -1).permute(2, 0, 3, 1, 4)
        x = x + self.o(nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, d))
        return x + self.mlp(self.ln2(x))

def models(name):
    "The models the scenarios initialise, each built from seed 0"
    from lsuv_callback.layers import ConvLayer, CourseConvLayer
    torch.manual_seed(0)
    if name == 'course': return nn.Sequential(*[CourseConvLayer(ni, nf, 5 if i == 0 else 3, leak=0.1, sub=0.4, maxv=6.)
                                                for i, (ni, nf) in enumerate([(1, 4), (4, 8), (8, 8)])],
                                              nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    if name == 'bn': return nn.Sequential(ConvLayer(1, 8, leak=0.1, sub=0.4, maxv=6.),
                                          nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()),
                                          nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(8)),
                                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    if name == 'transformer': return nn.Sequential(nn.Linear(32, 32), Block(), Block(), nn.Linear(32, 4))
    if name == 'deep': return nn.Sequential(nn.Flatten(), nn.Linear(784, 16), *[nn.Sequential(nn.Linear(16, 16), nn.ReLU()) for _ in range(66)])
    raise KeyError(name)

def data(name, rank): return tokens(rank) if name == 'transformer' else batch(rank)

def snapshot(model):
    "Every tensor of the model in full (sharded ones gathered: a collective) and every float attribute"
    from torch.distributed.tensor import DTensor
    state = {k: (v.full_tensor() if isinstance(v, DTensor) else v).detach().clone() for k, v in model.state_dict().items()}
    floats = {(n, a): v for n, m in model.named_modules() for a, v in vars(m).items() if isinstance(v, float) and not a.startswith('_')}
    return dict(state=state, floats=floats)

def unit_sums(model, xb):
    "`{unit: [count, sum, sum of squares]}` of each unit's output in a fresh pass on this rank's batch, in LSUV's mode"
    from lsuv_callback.find import find_units
    from lsuv_callback.measure import measuring_mode, moments
    from lsuv_callback.single_pass import kept_buffers
    out, hooks = {}, []
    def record(name):
        def hook(m, i, o):
            if name not in out: out[name] = moments(o)
        return hook
    for u in find_units(model): hooks.append(u.module.register_forward_hook(record(u.name)))
    with torch.no_grad(), measuring_mode(model), kept_buffers(model, []): model(xb)
    for h in hooks: h.remove()
    return out

def save(tmp, name, rank, **kw): torch.save(kw, Path(tmp)/f'{name}-{rank}.pt')

def run_lsuv(rank, tmp, name, model, xb, shard=False, **kwargs):
    from lsuv_callback.core import lsuv_init
    before = snapshot(model)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            report = lsuv_init(model, xb, **kwargs)
        outcome = 'ok'
    except Exception as e:
        report, outcome = None, f'{type(e).__name__}: {e}'
    save(tmp, name, rank, outcome=outcome, report=report, before=before, after=snapshot(model), xb=xb,
         sums=unit_sums(model, xb) if outcome == 'ok' else None)
    return outcome

def fully_sharded(model):
    "FSDP2: every child with parameters sharded, then the model"
    from torch.distributed.fsdp import fully_shard
    for m in model.children():
        if any(True for _ in m.parameters()): fully_shard(m)
    return fully_shard(model)

def scenario_plain(rank, tmp):
    "LSUV on the bare models, each rank with its own batch"
    for name in ('course', 'bn', 'transformer'): run_lsuv(rank, tmp, name, models(name), data(name, rank))
    torch.manual_seed(1000 + rank) # the orthonormal draw must be rank 0's everywhere
    run_lsuv(rank, tmp, 'ortho', models('course'), batch(rank), orthonormal=True)

def scenario_ddp(rank, tmp):
    "A model wrapped in DDP, then trained for a step: LSUV must not trigger DDP's collectives, and the ranks stay in sync"
    model = models('bn')
    ddp = nn.parallel.DistributedDataParallel(model)
    run_lsuv(rank, tmp, 'ddp', ddp, batch(rank))
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    ddp(batch(rank)).square().mean().backward()
    opt.step()
    save(tmp, 'ddp-step', rank, after=snapshot(model))

def scenario_fsdp(rank, tmp):
    "FSDP2 (`fully_shard`) on a CNN and a transformer, an orthonormal pre-init of sharded weights, and a stack deeper than the replay horizon"
    for name in ('course', 'transformer', 'deep'): run_lsuv(rank, tmp, f'fsdp-{name}', fully_sharded(models(name)), data(name, rank))
    torch.manual_seed(1000 + rank)
    run_lsuv(rank, tmp, 'fsdp-ortho', fully_sharded(models('course')), batch(rank), orthonormal=True)

def scenario_fastai(rank, tmp):
    """The callback in a fastai fit, with the process group set up by hand and the model wrapped in DDP by a callback that
    does what fastai's DistributedTrainer does (fastai's own needs `accelerate` and CUDA: see test_distributed.py). The
    models are built from different seeds on the two ranks, as they are when a script seeds nothing: DDP would copy
    rank 0's weights at its wrap, and the callback does that first"""
    from fastai.basics import Learner, Datasets, ItemGetter, Callback, CancelFitException, CrossEntropyLossFlat, TrainEvalCallback
    from lsuv_callback.callback import LSUVCallback
    from lsuv_callback.find import unwrap
    from lsuv_callback.layers import cnn_07a

    g = torch.Generator().manual_seed(300 + rank)  # each rank trains on its own shard
    n = 48
    x, y = torch.randn(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)
    dsets = Datasets([(x[i], y[i]) for i in range(n)], tfms=[[ItemGetter(0)], [ItemGetter(1)]], splits=[range(32), range(32, n)])
    dls = dsets.dataloaders(bs=16, device='cpu', num_workers=0)

    class AfterLSUV(Callback):
        order = LSUVCallback.order + 1
        def before_fit(self):
            save(tmp, 'fastai', rank, outcome='ok', report=self.learn.lsuv_report, after=snapshot(unwrap(self.learn.model)))
    class DDPWrap(Callback):
        order = 11  # fastai's DistributedTrainer.order
        def before_fit(self): self.learn.model = nn.parallel.DistributedDataParallel(self.learn.model)
        def after_fit(self): self.learn.model = self.learn.model.module
    class StopAfterOneBatch(Callback):
        order = TrainEvalCallback.order + 50
        def after_batch(self):
            if self.training: raise CancelFitException()

    torch.manual_seed(rank)
    model = cnn_07a(nfs=(4, 8, 8), leak=0.1, sub=0.4, maxv=6.)
    learn = Learner(dls, model, loss_func=CrossEntropyLossFlat(), cbs=[LSUVCallback(show=False), AfterLSUV(), DDPWrap(), StopAfterOneBatch()])
    with learn.no_bar(), learn.no_logging(), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        learn.fit(1, 1e-2)
    save(tmp, 'fastai-step', rank, after=snapshot(unwrap(learn.model)))

def scenario_loads(rank, tmp):
    """A checkpoint loaded on rank 0 only, then DDP, as scripts often do: every rank must decide alike what to keep (a
    rank that went on alone would wait for the others forever). Loaded whole: every rank leaves the model as it is;
    the body loaded: every rank initialises the head only"""
    from lsuv_callback.trainers import why_keep, lsuv_options, trainer_lsuv
    options = lsuv_options('test', {})
    for name, part in (('loads-whole', lambda m: m), ('loads-body', lambda m: m[:3])):
        model = models('course')
        if rank == 0: part(model).load_state_dict(part(models('course')).state_dict())
        ddp = nn.parallel.DistributedDataParallel(model)
        why = why_keep(ddp, options)
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            report = None if why else trainer_lsuv(ddp, batch(rank), options)
        save(tmp, name, rank, why=why, report=report, after=snapshot(model))

class FailsOnRank1(nn.Module):
    "A layer that raises on rank 1 only, after the units before it have been corrected"
    def forward(self, x):
        if dist.get_rank() == 1: raise RuntimeError('injected on rank 1')
        return x

class SkipsOnRank1(nn.Module):
    "Control flow that depends on the rank: rank 1 never calls the unit inside"
    def __init__(self): super().__init__(); self.lin = nn.Linear(784, 16)
    def forward(self, x): return x[:, :16] if dist.get_rank() == 1 else self.lin(x)

def scenario_fault(rank, tmp):
    "Failures on one rank: every rank must fail cleanly, with its model unchanged (and none may hang)"
    xb = batch(rank)
    if rank == 1: xb[0, 0, 0, 0] = float('nan')
    run_lsuv(rank, tmp, 'fault-nan', models('course'), xb)
    run_lsuv(rank, tmp, 'fault-fsdp-nan', fully_sharded(models('course')), xb)
    model = models('course')
    model.insert(2, FailsOnRank1())
    run_lsuv(rank, tmp, 'fault-raise', model, batch(rank))
    run_lsuv(rank, tmp, 'fault-batch', models('course'), batch(rank)[:1 if rank == 1 else 16]) # one sample: refused on rank 1
    run_lsuv(rank, tmp, 'fault-step', nn.Sequential(nn.Flatten(), SkipsOnRank1(), nn.Linear(16, 4)), batch(rank))
    torch.manual_seed(rank) # weights that differ across ranks: the same corrections would keep them different
    run_lsuv(rank, tmp, 'fault-weights', nn.Sequential(nn.Flatten(), nn.Linear(784, 8)), batch(rank))
    from unittest import mock
    with mock.patch('lsuv_callback.distributed.group_devices', lambda: {'cuda'}): # as under NCCL: a CPU model is refused
        run_lsuv(rank, tmp, 'fault-device', models('course'), batch(rank))

def scenario_nccl(rank, tmp):
    """On one GPU per rank under NCCL, with no `torch.cuda.set_device` (the current device is cuda:0 on both ranks): the
    plain and DDP runs agree, a NaN on rank 1 fails both ranks cleanly, and the callback's weight copy broadcasts"""
    from lsuv_callback.distributed import copy_rank0_weights
    device = torch.device('cuda', rank)
    for name in ('course', 'bn'): run_lsuv(rank, tmp, f'nccl-{name}', models(name).to(device), batch(rank).to(device))
    run_lsuv(rank, tmp, 'nccl-ddp', nn.parallel.DistributedDataParallel(models('bn').to(device), device_ids=[rank]), batch(rank).to(device))
    xb = batch(rank).to(device)
    if rank == 1: xb[0, 0, 0, 0] = float('nan')
    run_lsuv(rank, tmp, 'fault-nccl-nan', models('course').to(device), xb)
    torch.manual_seed(rank)
    model = models('bn').to(device)
    copy_rank0_weights(model)
    save(tmp, 'nccl-copy', rank, after=snapshot(model))

def worker(rank, world, tmp, scenarios, timeout_s, backend='gloo'):
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    try:
        dist.init_process_group(backend, init_method=f'file://{tmp}/pg', rank=rank, world_size=world,
                                timeout=timedelta(seconds=timeout_s))
        for s in scenarios: globals()[f'scenario_{s}'](rank, tmp)
        dist.barrier()
    except Exception:
        (Path(tmp)/f'crash-{rank}.txt').write_text(traceback.format_exc())
    finally:
        # A process that exits with its gloo group alive can abort in gloo's threads at exit
        # ("terminate called without an active exception"): always take the group down, failed or not, and first free
        # the DDP and FSDP models of the scenarios, which hold it in reference cycles that would otherwise go at exit
        gc.collect()
        if dist.is_initialized(): dist.destroy_process_group()
