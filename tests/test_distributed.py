"""LSUV under torch.distributed: 2 CPU processes (gloo, file:// rendezvous), each rank with a different batch. After
`lsuv_init` every parameter, buffer and float `sub` must agree across ranks to the bit, and be what a single process gets
from rank 0's batch. Runs are bounded by a timeout, so a hang fails the test instead of blocking CI.

fastai's own `learn.distrib_ctx()` cannot run here: `fastai.distributed` needs `accelerate` (not a dependency; without it
the module does not even import: `NameError: Accelerator`), and its `DistributedDL` broadcasts with `.cuda()` (NCCL only).
So the fastai test sets the process group up by hand and wraps the model in DDP at `DistributedTrainer`'s order."""
import sys, time
from pathlib import Path
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
import dist_worker
from lsuv_callback.core import lsuv_init
from lsuv_testutils import model_state

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason='needs torch.distributed with gloo')
WORLD = 2

def spawn(tmp, scenarios, timeout_s=60, pg_timeout_s=30):
    "Run `scenarios` on WORLD ranks; kill them and fail if they are not done in `timeout_s`"
    ctx = mp.start_processes(dist_worker.worker, args=(WORLD, str(tmp), scenarios, pg_timeout_s), nprocs=WORLD,
                             join=False, start_method='spawn')
    deadline = time.monotonic() + timeout_s
    while not ctx.join(timeout=0.5):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                if p.is_alive(): p.kill()
            pytest.fail(f'distributed run of {scenarios} did not finish in {timeout_s}s (hang?)')
    crashes = sorted(tmp.glob('crash-*.txt'))
    assert not crashes, '\n'.join(c.read_text() for c in crashes)
    return tmp

def load(tmp, name): return [torch.load(tmp/f'{name}-{r}.pt', weights_only=False) for r in range(WORLD)]

def differences(a, b):
    "Tensors and floats that are not bit-identical between two snapshots"
    out = [k for k in a['state'] if not torch.equal(a['state'][k], b['state'][k])]
    return out + [f'{n}.{k}' for (n, k), v in a['floats'].items() if b['floats'][(n, k)] != v]

@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    "One spawn for every scenario (process start-up dominates the cost); the fault scenario goes last"
    return spawn(tmp_path_factory.mktemp('dist'), ['core', 'ddp', 'fastai', 'fault'], timeout_s=60, pg_timeout_s=20)

def single_process(name, xb, **kwargs):
    model = dist_worker.models()['course' if name == 'ortho' else name]
    if name == 'ortho': torch.manual_seed(1000)
    lsuv_init(model, xb, **kwargs)
    sd, floats = model_state(model)
    return dict(state=sd, floats=floats)

@pytest.mark.parametrize('name', ['course', 'bn', 'ortho'])
def test_ranks_agree_to_the_bit(runs, name):
    r0, r1 = load(runs, name)
    assert r0['outcome'] == r1['outcome'] == 'ok', (r0['outcome'], r1['outcome'])
    assert r0['checksum'] != r1['checksum'], 'the ranks must have had different batches'
    assert differences(r0['before'], r0['after']), 'LSUV changed nothing'
    assert not differences(r0['after'], r1['after']), 'ranks disagree after LSUV'
    if name == 'course': assert any('sub' in k for _, k in r1['after']['floats']), 'the float subs were compared'
    if name == 'bn': assert any('running_var' in k for k in r1['after']['state'])
    # ... and what they agree on is rank 0's init: what one process makes of rank 0's batch
    ref = single_process(name, dist_worker.batch(0), **(dict(orthonormal=True) if name == 'ortho' else {}))
    assert not differences(ref, r1['after']), "the ranks' init is not rank 0's"

def test_every_rank_gets_rank0s_report(runs):
    r0, r1 = load(runs, 'bn')
    assert r1['report'].batch == r0['report'].batch and r0['report'].batch['checksum'] == pytest.approx(r0['checksum'])
    assert [u.std_after for u in r1['report'].units] == [u.std_after for u in r0['report'].units]

def test_buffers_unchanged_on_every_rank(runs):
    for r in load(runs, 'bn'):
        bufs = [k for k in r['before']['state'] if 'running' in k or 'num_batches' in k]
        assert bufs and all(torch.equal(r['before']['state'][k], r['after']['state'][k]) for k in bufs)

def test_ddp_wrapped_model_agrees_and_trains(runs):
    r0, r1 = load(runs, 'ddp')
    assert r0['outcome'] == r1['outcome'] == 'ok', (r0['outcome'], r1['outcome'])
    assert differences(r0['before'], r0['after']) and not differences(r0['after'], r1['after'])
    s0, s1 = load(runs, 'ddp-step')
    # running statistics are per rank in DDP (synced from rank 0 at the next forward); parameters must agree
    assert not [k for k in differences(s0['after'], s1['after']) if 'running' not in k], 'a DDP step left the ranks out of sync'

def test_fastai_callback_agrees_across_ranks(runs):
    r0, r1 = load(runs, 'fastai')
    assert r0['report'] is not None and r0['report'].ok
    assert r1['report'].batch == r0['report'].batch, 'every rank logs rank 0 report'
    assert not differences(r0['after'], r1['after']), 'ranks disagree right after LSUVCallback (before DDP syncs them)'
    s0, s1 = load(runs, 'fastai-step')
    assert not [k for k in differences(s0['after'], s1['after']) if 'running' not in k]
    assert differences(r0['after'], s0['after']), 'the fit did train a step'

def test_failure_on_one_rank_fails_every_rank_cleanly(runs):
    """Rank 1's batch holds a NaN. Rank 1 raises LSUVError; rank 0 must not hang in the broadcast waiting for it, nor
    carry on with weights no other rank has: every rank should raise LSUVError with its model unchanged."""
    files = [runs/f'fault-{r}.pt' for r in range(WORLD)]
    assert all(f.exists() for f in files), 'a rank died or hung inside lsuv_init'
    rs = load(runs, 'fault')
    assert rs[1]['outcome'].startswith('LSUVError') and 'non-finite' in rs[1]['outcome']
    for rank, r in enumerate(rs):
        assert r['outcome'].startswith('LSUVError'), f'rank {rank}: {r["outcome"]}'
        assert not differences(r['before'], r['after']), f'rank {rank} was left changed'
