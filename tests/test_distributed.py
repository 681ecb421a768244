"""LSUV under torch.distributed: 2 CPU processes (gloo, file:// rendezvous), each rank with a batch of its own (other
samples from another distribution). `lsuv_init` sums every measurement's statistics over the ranks, so after it every
rank has the same weights to the bit (with no broadcast), every unit meets its targets over the union of the ranks'
batches, and the init is what one process makes of the two batches together. A failure on one rank fails every rank,
with every model unchanged. Runs are bounded by a timeout, so a hang fails the test instead of blocking CI.

fastai's own `learn.distrib_ctx()` cannot run here: `fastai.distributed` needs `accelerate` (not a dependency; without it
the module does not even import: `NameError: Accelerator`), and its `DistributedDL` broadcasts with `.cuda()` (NCCL only).
So the fastai test sets the process group up by hand and wraps the model in DDP at `DistributedTrainer`'s order."""
import math, sys, time
from pathlib import Path
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).parent))
import dist_worker
from lsuv_callback.core import lsuv_init
from lsuv_callback.measure import mean_var

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason='needs torch.distributed with gloo')
WORLD = 2

def spawn(tmp, scenarios, timeout_s=90, pg_timeout_s=30, backend='gloo'):
    "Run `scenarios` on WORLD ranks; kill them and fail if they are not done in `timeout_s`"
    ctx = mp.start_processes(dist_worker.worker, args=(WORLD, str(tmp), scenarios, pg_timeout_s, backend), nprocs=WORLD,
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

@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    "One spawn for every scenario (process start-up dominates the cost); the faults go last"
    return spawn(tmp_path_factory.mktemp('dist'), ['plain', 'ddp', 'fsdp', 'fastai', 'loads', 'fault'], timeout_s=150, pg_timeout_s=30)

def load(tmp, name): return [torch.load(tmp/f'{name}-{r}.pt', weights_only=False) for r in range(WORLD)]

def differences(a, b):
    "Tensors and floats that are not bit-identical between two snapshots"
    out = [k for k in a['state'] if not torch.equal(a['state'][k], b['state'][k])]
    return out + [f'{n}.{k}' for (n, k), v in a['floats'].items() if b['floats'][(n, k)] != v]

def assert_ranks_agree(rs):
    assert [r['outcome'] for r in rs] == ['ok'] * WORLD, [r['outcome'] for r in rs]
    assert not torch.equal(rs[0]['xb'], rs[1]['xb']), 'the ranks must have had different batches'
    assert differences(rs[0]['before'], rs[0]['after']), 'LSUV changed nothing'
    assert not differences(rs[0]['after'], rs[1]['after']), 'ranks disagree after LSUV'

def assert_targets_met_over_every_batch(rs, tol=1e-3):
    "Each unit's statistics in a fresh pass, summed over the ranks' batches, meet the targets the report says it met"
    report = rs[0]['report']
    for u in report.units:
        n, s1, s2 = (sum(r['sums'][u.name][i] for r in rs) for i in range(3))
        mean, var = mean_var(n, s1, s2)
        assert abs(math.sqrt(var) - 1) <= tol and (not u.mean_adjusted or abs(mean) <= tol), (u.name, mean, math.sqrt(var))

def single_process(name, rs, **kwargs):
    "What one process makes of the ranks' batches together"
    model = dist_worker.models(name)
    lsuv_init(model, torch.cat([r['xb'] for r in rs]), **kwargs)
    return dist_worker.snapshot(model)

def assert_close(a, b, rtol=1e-4):
    for k in a['state']:
        x, y = a['state'][k], b['state'][k]
        assert torch.allclose(x.double(), y.double(), rtol=rtol, atol=rtol * float(y.abs().max())), k
    for key, v in a['floats'].items(): assert v == pytest.approx(b['floats'][key], rel=rtol), key

@pytest.mark.parametrize('name', ['course', 'bn', 'transformer', 'ortho'])
def test_ranks_agree_to_the_bit_and_meet_the_targets_over_every_batch(runs, name):
    rs = load(runs, name)
    assert_ranks_agree(rs)
    assert_targets_met_over_every_batch(rs)
    assert rs[0]['report'].world_size == WORLD and rs[0]['report'].ok
    if name == 'course': assert any('sub' in k for _, k in rs[1]['after']['floats']), 'the float subs were compared'
    if name == 'bn': assert any('running_var' in k for k in rs[1]['after']['state'])

@pytest.mark.parametrize('name', ['course', 'transformer'])
def test_the_init_is_what_one_process_makes_of_both_batches(runs, name):
    "Without batch norms (which normalise each rank's batch on its own), the ranks' init equals the single-process one"
    rs = load(runs, name)
    assert_close(rs[0]['after'], single_process(name, rs))

def test_every_rank_reports_the_same_statistics(runs):
    rs = load(runs, 'bn')
    r0, r1 = (r['report'] for r in rs)
    assert [(u.mean_after, u.std_after, u.iters) for u in r0.units] == [(u.mean_after, u.std_after, u.iters) for u in r1.units]
    assert r0.to_df(hist=True).hist_after.tolist() == r1.to_df(hist=True).hist_after.tolist(), 'telemetry is summed too'

def test_buffers_unchanged_on_every_rank(runs):
    for r in load(runs, 'bn'):
        bufs = [k for k in r['before']['state'] if 'running' in k or 'num_batches' in k]
        assert bufs and all(torch.equal(r['before']['state'][k], r['after']['state'][k]) for k in bufs)

def test_ddp_wrapped_model_agrees_and_trains(runs):
    rs = load(runs, 'ddp')
    assert_ranks_agree(rs)
    assert_targets_met_over_every_batch(rs)
    s0, s1 = load(runs, 'ddp-step')
    # running statistics are per rank in DDP (synced from rank 0 at the next forward); parameters must agree
    assert not [k for k in differences(s0['after'], s1['after']) if 'running' not in k], 'a DDP step left the ranks out of sync'

@pytest.mark.parametrize('name', ['course', 'transformer', 'deep', 'ortho'])
def test_fsdp_sharded_models_agree_and_meet_the_targets(runs, name):
    rs = load(runs, f'fsdp-{name}')
    assert_ranks_agree(rs)
    assert_targets_met_over_every_batch(rs)
    if name == 'deep': assert {u.recompute for u in rs[0]['report'].units} == {'rerun', 'replay'}, 'units re-run under FSDP too'
    if name != 'ortho': assert_close(rs[0]['after'], single_process(name, rs))
    else: assert_close(rs[0]['after'], load(runs, 'ortho')[0]['after']), 'sharded, the orthonormal init is the unsharded one'

def test_fastai_callback_agrees_across_ranks(runs):
    r0, r1 = load(runs, 'fastai')
    assert r0['report'] is not None and r0['report'].ok and r0['report'].world_size == WORLD
    assert not differences(r0['after'], r1['after']), 'ranks disagree right after LSUVCallback (before DDP syncs them)'
    s0, s1 = load(runs, 'fastai-step')
    assert not [k for k in differences(s0['after'], s1['after']) if 'running' not in k]
    assert differences(r0['after'], s0['after']), 'the fit did train a step'

@pytest.mark.parametrize('name,says', [('nan', 'non-finite activations on rank 1'), ('fsdp-nan', 'non-finite activations on rank 1'),
                                       ('raise', 'rank 1: LSUV: the model'), ('batch', 'rank 1: LSUV: the batch has 1 sample'),
                                       ('step', 'different orders or numbers'), ('weights', 'weights differ across ranks'),
                                       ('device', 'sends tensors from cuda only: move the model')])
def test_a_failure_on_one_rank_fails_every_rank_cleanly(runs, name, says):
    """Rank 1 fails (a NaN in its batch, an exception in its forward, a batch of one, a unit it never calls, weights of
    its own, a CPU model under a group that sends CUDA tensors only): no rank may hang or carry on with weights the other has not; every rank raises the same LSUVError, which
    says why, with its model unchanged"""
    files = [runs/f'fault-{name}-{r}.pt' for r in range(WORLD)]
    assert all(f.exists() for f in files), 'a rank died or hung inside lsuv_init'
    rs = load(runs, f'fault-{name}')
    for rank, r in enumerate(rs):
        assert r['outcome'].startswith('LSUVError') and says in r['outcome'], f'rank {rank}: {r["outcome"]}'
        assert not differences(r['before'], r['after']), f'rank {rank} was left changed'
    assert rs[0]['outcome'] == rs[1]['outcome']

def test_weights_loaded_on_rank_0_only_are_kept_on_every_rank(runs):
    "The trainer callbacks' decision (`why_keep`, then `lsuv_init` with `keep_loaded`) is the same on every rank"
    whole = load(runs, 'loads-whole')
    assert [r['report'] for r in whole] == [None] * WORLD and all('loaded with `load_state_dict`' in r['why'] for r in whole)
    body = load(runs, 'loads-body')
    assert [r['why'] for r in body] == [''] * WORLD
    assert [[u.name for u in r['report'].units] for r in body] == [['5']] * WORLD
    assert [r['report'].left_alone for r in body] == [{'loaded': ['0', '1', '2']}] * WORLD
    assert not differences(body[0]['after'], body[1]['after'])

@pytest.mark.skipif(not (dist.is_nccl_available() and torch.cuda.device_count() >= WORLD), reason=f'needs NCCL and {WORLD} CUDA devices')
def test_under_nccl_messages_go_through_each_ranks_gpu(tmp_path):
    "NCCL sends CUDA tensors only, from each rank's own GPU: the messages, the gathered errors and the weight copy use the model's"
    spawn(tmp_path, ['nccl'], timeout_s=300, pg_timeout_s=60, backend='nccl')
    for name in ('nccl-course', 'nccl-bn', 'nccl-ddp'): assert_ranks_agree(load(tmp_path, name))
    rs = load(tmp_path, 'fault-nccl-nan')
    assert all(r['outcome'].startswith('LSUVError') and 'non-finite activations on rank 1' in r['outcome'] for r in rs)
    c0, c1 = load(tmp_path, 'nccl-copy')
    assert not differences(c0['after'], c1['after']), "rank 0's weights and buffers on every rank"
