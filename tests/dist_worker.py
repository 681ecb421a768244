"""What each rank of tests/test_distributed.py runs (a module of its own so that spawned processes import only this).

Every rank builds the same model from the same seed, draws a *different* batch (seeded by its rank), runs LSUV and saves
what it ended with (state dict, plain float attributes, report, batch checksum) to `tmp/<scenario>-<rank>.pt`."""
import os, sys, traceback, warnings
from datetime import timedelta
from pathlib import Path
import torch
import torch.distributed as dist
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))

def batch(rank, n=16, c=1, s=28):
    return torch.randn(n, c, s, s, generator=torch.Generator().manual_seed(100 + rank))

def models():
    "The models every scenario initialises: course float `sub`s, GeneralRelu buffer `sub`s, BatchNorm blocks"
    from lsuv_testutils import course_cnn
    from lsuv_callback.layers import ConvLayer
    torch.manual_seed(0)
    course = course_cnn(nfs=(4, 8, 8))
    bn = nn.Sequential(ConvLayer(1, 8, leak=0.1, sub=0.4, maxv=6.),
                       nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()),
                       nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(8)),
                       nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    return dict(course=course, bn=bn)

def snapshot(model):
    from lsuv_testutils import model_state
    sd, floats = model_state(model)
    return dict(state=sd, floats=floats)

def save(tmp, name, rank, **kw): torch.save(kw, Path(tmp)/f'{name}-{rank}.pt')

def run_lsuv(rank, tmp, name, model, xb, **kwargs):
    from lsuv_callback.core import lsuv_init
    before = snapshot(model)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            report = lsuv_init(model, xb, **kwargs)
        outcome = 'ok'
    except Exception as e:
        report, outcome = None, f'{type(e).__name__}: {e}'
    save(tmp, name, rank, outcome=outcome, report=report, before=before, after=snapshot(model),
         checksum=float(xb.double().sum()))
    return outcome

def scenario_core(rank, tmp):
    for name, model in models().items(): run_lsuv(rank, tmp, name, model, batch(rank))
    # orthonormal pre-init draws from each rank's own RNG: rank 0's draw must win everywhere
    model = models()['course']
    torch.manual_seed(1000 + rank)
    run_lsuv(rank, tmp, 'ortho', model, batch(rank), orthonormal=True)

def scenario_ddp(rank, tmp):
    "A model already wrapped in DDP, then trained for a step: LSUV must not trigger DDP's collectives"
    model = models()['bn']
    ddp = nn.parallel.DistributedDataParallel(model)
    run_lsuv(rank, tmp, 'ddp', ddp, batch(rank))
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    ddp(batch(rank)).square().mean().backward()
    opt.step()
    save(tmp, 'ddp-step', rank, after=snapshot(model))

def scenario_fastai(rank, tmp):
    """The callback in a fastai fit, with the process group set up by hand and the model wrapped in DDP by a callback that
    does what fastai's DistributedTrainer does (fastai's own needs `accelerate` and CUDA: see test_distributed.py)"""
    from fastai.basics import (Learner, Datasets, ItemGetter, Callback, CancelFitException, CrossEntropyLossFlat,
                               TrainEvalCallback)
    from lsuv_callback.callback import LSUVCallback
    from lsuv_callback.core import unwrap
    from lsuv_callback.layers import cnn_07a

    g = torch.Generator().manual_seed(200 + rank)  # each rank trains on its own shard
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

    torch.manual_seed(0)
    model = cnn_07a(nfs=(4, 8, 8), leak=0.1, sub=0.4, maxv=6.)
    learn = Learner(dls, model, loss_func=CrossEntropyLossFlat(), cbs=[LSUVCallback(show=False), AfterLSUV(), DDPWrap(), StopAfterOneBatch()])
    with learn.no_bar(), learn.no_logging(), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        learn.fit(1, 1e-2)
    save(tmp, 'fastai-step', rank, after=snapshot(unwrap(learn.model)))

def scenario_fault(rank, tmp):
    "Rank 1's batch holds a NaN: LSUV fails there. Every rank must fail cleanly (and none may hang)"
    from lsuv_testutils import course_cnn
    torch.manual_seed(0)
    model = course_cnn(nfs=(4, 8, 8))
    xb = batch(rank)
    if rank == 1: xb[0, 0, 0, 0] = float('nan')
    run_lsuv(rank, tmp, 'fault', model, xb)

def worker(rank, world, tmp, scenarios, timeout_s):
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    try:
        dist.init_process_group('gloo', init_method=f'file://{tmp}/pg', rank=rank, world_size=world,
                                timeout=timedelta(seconds=timeout_s))
        for s in scenarios: globals()[f'scenario_{s}'](rank, tmp)
        dist.barrier()
    except Exception:
        (Path(tmp)/f'crash-{rank}.txt').write_text(traceback.format_exc())
    finally:
        # A process that exits with its gloo group alive can abort in gloo's threads at exit
        # ("terminate called without an active exception"): always take the group down, failed or not
        if dist.is_initialized(): dist.destroy_process_group()
