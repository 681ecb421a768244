"""The fitting of one unit, pinned directly where the notebooks do not: the mode it measures in, each statistic judged
by its own tolerance through a whole `lsuv_init`, the report's histograms against a fresh pass, a batch of two samples,
a block with two norms at another target std, when a miss counts as converged, `unit_stats` of a module called twice, and
the orthonormal pre-init drawing each unit its own matrix, and how often a pass reads the device. (`mean_std` is tested in 00e_measure, an in-place activation
after a BatchNorm and a factor after the activation in 00_core, a batch under two samples in test_robustness.) The checks
are against `oracle_stats`, a fresh forward pass computed independently of the package, or `unit_stats`, the package's
own fresh pass."""
import copy
import pytest
import torch
from torch import nn
from lsuv_callback.core import lsuv_init, unit_stats
from lsuv_callback.measure import Targets
from lsuv_testutils import CourseGeneralRelu, assert_unchanged, model_state, oracle_stats, run, reads_of_the_device, as_on_gpu, changed
import lsuv_callback.fitter
from lsuv_callback.layers import ConvLayer
from lsuv_callback.find import find_units
from lsuv_callback.leave_alone import zero_init
from conftest import on

torch.set_num_threads(1)

def img(n=16, c=3, s=12, seed=0): return torch.randn(n, c, s, s, generator=torch.Generator().manual_seed(seed))

def off_target(report, model, xb):
    "`{unit: (|mean|, |std-1|)}` in a fresh pass; the mean only where the unit's mean is adjusted"
    fresh = oracle_stats(model, xb, [u.name for u in report.units])
    return {u.name: (abs(fresh[u.name][0]) if u.mean_adjusted else 0., abs(fresh[u.name][1] - 1)) for u in report.units}

# -------------------------------------------------------------------------------------------------------- measuring mode

def bn_dropout_cnn(seed=0):
    torch.manual_seed(seed)
    blk = lambda ni, nf: nn.Sequential(nn.Conv2d(ni, nf, 3, padding=1, bias=False), nn.BatchNorm2d(nf), nn.ReLU())
    return nn.Sequential(blk(3, 8), nn.Dropout(0.5), blk(8, 8), nn.Dropout2d(0.3), blk(8, 8),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.5), nn.Linear(8, 4))

def test_measured_in_the_documented_mode():
    """BatchNorm normalises with the batch's statistics and dropout is off, as in `oracle_stats`: measured with BatchNorm
    on its running statistics or with dropout on, the init would miss the targets in that fresh pass"""
    model, xb = bn_dropout_cnn(), img()
    report = lsuv_init(model, xb)
    assert report.ok
    errors = off_target(report, model, xb)
    assert max(max(e) for e in errors.values()) <= 1e-3, errors

# ------------------------------------------------------------------------------------------------------------ tolerances

def gelu_course_cnn(seed=0):
    "Units that need several corrections: GELU blocks (std only) and clamped GeneralRelu blocks (mean and std)"
    torch.manual_seed(seed)
    class Course(nn.Module):
        def __init__(self, ni, nf):
            super().__init__()
            self.conv, self.relu = nn.Conv2d(ni, nf, 3, padding=1), CourseGeneralRelu(leak=0.1, sub=0.4, maxv=3.)
        def forward(self, x): return self.relu(self.conv(x))
    return nn.Sequential(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.GELU()), Course(8, 8),
                         nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.GELU()), Course(8, 8),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))

@pytest.mark.parametrize('mean_tol,std_tol', [(0.2, 1e-5), (1e-5, 0.2)], ids=['tight-std', 'tight-mean'])
def test_each_statistic_is_judged_by_its_own_tolerance(mean_tol, std_tol, device):
    "`tol=(mean_tol, std_tol)`: a loose tolerance on one statistic must not loosen the other"
    model, xb = on(device, gelu_course_cnn()), on(device, img())
    report, warns, _ = run(model, xb, tol=(mean_tol, std_tol), max_iter=50)
    assert report.ok and not warns, warns
    assert (report.mean_tol, report.std_tol) == (mean_tol, std_tol)
    tight = 0 if mean_tol < std_tol else 1
    errors = off_target(report, model, xb)
    assert max(e[tight] for e in errors.values()) <= 2 * min(mean_tol, std_tol), errors
    assert all(e[1] <= std_tol * 1.01 and e[0] <= mean_tol * 1.01 for e in errors.values()), errors

# ------------------------------------------------------------------------------------------------------------- telemetry

def test_report_histograms_are_those_of_a_fresh_pass():
    """Each unit's 'after' histogram and near-zero fraction are those of its output in a fresh pass with the final weights:
    for lone layers (corrected by prediction) and for a block (corrected by replay). Every output has at most 4096 values,
    so the report's sample is the whole output"""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64),
                          nn.Sequential(nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU()), nn.Linear(32, 8))
    xb = torch.randn(32, 16) * 3 + 1
    report = lsuv_init(model, xb)
    assert report.ok and {u.recompute for u in report.units} == {'replay'}
    mods, outs = dict(model.named_modules()), {}
    def keep(name): return lambda m, i, o: outs.update({name: o.double().flatten()}) # returns None: the output stays
    handles = [mods[u.name].register_forward_hook(keep(u.name)) for u in report.units]
    model.eval()
    model[3][1].train()
    with torch.no_grad(): model(xb)
    for h in handles: h.remove()
    for u in report.units:
        o, bins = outs[u.name], len(u.hist_after)
        lo, width = report.target_mean - report.hist_span, 2 * report.hist_span / bins
        hist = torch.bincount(((o - lo) / width).floor().clamp(0, bins - 1).long(), minlength=bins).tolist()
        assert sum(abs(a - b) for a, b in zip(hist, u.hist_after)) <= 2, (u.name, hist, u.hist_after)
        assert u.near_zero_after == pytest.approx((o.abs() < 0.05).double().mean().item(), abs=1.5 / len(o)), u.name

# ------------------------------------------------------------------------------------------------------------ batch size

def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8))

def test_a_batch_of_two_samples_is_enough(device):
    "Two samples are enough for an unbiased std: the init runs and meets the targets"
    model, xb = on(device, mlp()), on(device, torch.randn(2, 16, generator=torch.Generator().manual_seed(0)))
    report = lsuv_init(model, xb)
    assert report.ok and all(u.converged for u in report.units)
    assert max(max(e) for e in off_target(report, model, xb).values()) <= 1e-3

# --------------------------------------------------------------------------------------------------------- block targets

def two_norm_cnn(seed=0):
    "Blocks with a norm after the activation: the last norm sets the block's output, the first is normalised away by it"
    torch.manual_seed(seed)
    blk = lambda ni, nf: nn.Sequential(nn.Conv2d(ni, nf, 3, padding=1, bias=False), nn.BatchNorm2d(nf), nn.ReLU(),
                                       nn.BatchNorm2d(nf))
    return nn.Sequential(blk(3, 8), blk(8, 8), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))

def test_block_with_two_norms_reaches_any_target_std(device):
    """`[Conv, BatchNorm, ReLU, BatchNorm]` at `target_std=2`: only the last norm's weight moves the block's std (at the
    default target of 1 a block fitted through its first norm would look converged, as the last norm outputs std 1 anyway)"""
    model, xb = on(device, two_norm_cnn()), on(device, img())
    report, warns, _ = run(model, xb, target_std=2.)
    assert report.ok and not warns, warns
    assert all(u.converged for u in report.units)
    fresh = {n: (m, s) for n, m, s in unit_stats(model, xb)}
    assert set(fresh) == {u.name for u in report.units}
    for u in report.units:
        m, s = fresh[u.name]
        assert report.targets.met(m, s, u.mean_adjusted), (u.name, m, s)

# ------------------------------------------------------------------------------------------------------ not converged

def gelu_unit(seed=0):
    "One `[Conv, GELU]` unit (std only): one correction of its weight, 1/std, lands 0.072 off std 1, as GELU is not linear"
    torch.manual_seed(seed)
    return nn.Sequential(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.GELU()), nn.AdaptiveAvgPool2d(1), nn.Flatten())

def test_a_miss_within_twice_the_tolerance_is_not_converged():
    """Corrections stopped by `max_iter=1` between `tol` and `2*tol` off the target: not converged, and the unit left
    exactly as it was (the miss is checked first, on a copy corrected by hand as the one correction does)"""
    model, xb, tol = gelu_unit(), img(), 0.05
    s0 = oracle_stats(model, xb, ['0'])['0'][1]
    by_hand = copy.deepcopy(model)
    with torch.no_grad():
        for p in by_hand[0][0].parameters(): p.mul_(1 / s0)
    miss = abs(oracle_stats(by_hand, xb, ['0'])['0'][1] - 1)
    assert tol < miss <= 2 * tol, miss
    before = model_state(model)
    report, warns, _ = run(model, xb, tol=tol, max_iter=1)
    u, = report.units
    assert not report.ok and not u.converged and 'not converged' in u.note, u.note
    assert any('did not reach their targets' in w for w in warns), warns
    assert_unchanged(model, before)

# ------------------------------------------------------------------------------------------------------- shared calls

class CalledTwice(nn.Module):
    "One linear layer applied twice in a row: a unit with two calls, fitted on the first"
    def __init__(self, n=8):
        super().__init__()
        self.lin = nn.Linear(n, n)
    def forward(self, x): return self.lin(torch.relu(self.lin(x)))

def test_unit_stats_reports_the_first_call(device):
    """`unit_stats` of a module called twice are those of its first call, the one LSUV fits: after the init they are
    the targets, while the second call's output is far from them"""
    torch.manual_seed(0)
    model, xb = on(device, CalledTwice()), on(device, torch.randn(32, 8, generator=torch.Generator().manual_seed(0)) * 2 + 1)
    report, _, _ = run(model, xb)
    assert report.ok and report.units[0].calls == 2
    (name, m, s), = unit_stats(model, xb)
    assert name == 'lin' and Targets().met(m, s), (m, s)
    assert (m, s) == pytest.approx(oracle_stats(model, xb, ['lin'])['lin'], abs=1e-5)
    with torch.no_grad(): second = model(xb)
    assert abs(second.mean().item()) > 0.1 and abs(second.std().item() - 1) > 0.1, 'the calls tell apart'

# ---------------------------------------------------------------------------------------------------------- orthonormal

def test_orthonormal_start_draws_each_unit_its_own_matrix(device):
    """`orthonormal=True` draws an orthonormal weight per unit, each its own, also for units of the same shape: LSUV
    only scales them, so each weight is orthogonal up to a factor, and no two point the same way"""
    torch.manual_seed(0)
    model = on(device, nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 16)))
    report = lsuv_init(model, on(device, torch.randn(64, 16, generator=torch.Generator().manual_seed(0))), orthonormal=True)
    assert report.ok
    ws = [m.weight.detach().cpu().double() for m in model if isinstance(m, nn.Linear)]
    qs = [w / w.norm() * 4 for w in ws] # an orthonormal 16x16 matrix has norm 4
    for q in qs: torch.testing.assert_close(q @ q.T, torch.eye(16, dtype=q.dtype), atol=1e-5, rtol=0)
    for i in range(len(qs)):
        for j in range(i):
            assert abs((qs[i] * qs[j]).sum().item()) / 16 < 0.5, (i, j, 'the same matrix drawn twice')

# --------------------------------------------------------------------------------------------------- TF32 on the GPU

@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
@pytest.mark.parametrize('tf32', [True, False], ids=['cuda-tf32', 'cuda-fp32'])
def test_a_deep_stack_without_norms_meets_its_targets_in_a_fresh_pass_with_tf32_on_and_off(tf32):
    "Replays hand on outputs rounded as the real op rounds: with TF32 the horizon is shorter, and a fresh pass still agrees"
    flags = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        torch.manual_seed(0)
        model = nn.Sequential(ConvLayer(3, 16, stride=1, leak=0.1, sub=0.4, maxv=6.),
                              *[ConvLayer(16, 16, stride=1, leak=0.1, sub=0.4, maxv=6.) for _ in range(49)]).cuda()
        xb = img(64, 3, 32).cuda()
        report, _, _ = run(model, xb)
        assert report.ok
        for name, m, s in unit_stats(model, xb): assert Targets().met(m, s), (name, m, s)
    finally: torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags

# ------------------------------------------------------------------------------------------------------------ host reads

def reads_per_unit(model, xb):
    reads = reads_of_the_device(lambda: run(model, xb, telemetry=False))
    return reads / len(find_units(model))

def test_host_reads_per_unit(device, monkeypatch):
    "On a GPU every read of the device makes the host wait for it: one per unit that one correction fits, two where a clamp needs two"
    as_on_gpu(monkeypatch) # counted on the CPU too, as a GPU would be read
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(32, 64), *[nn.Sequential(nn.Linear(64, 64), nn.ReLU()) for _ in range(49)], nn.Linear(64, 10))
    assert reads_per_unit(on(device, mlp), on(device, torch.randn(256, 32))) <= 1.1
    cnn = nn.Sequential(*[ConvLayer(3 if i == 0 else 16, 16, stride=1) for i in range(30)])
    assert reads_per_unit(on(device, cnn), on(device, torch.randn(32, 3, 16, 16))) <= 1.2
    clamped = nn.Sequential(*[ConvLayer(3 if i == 0 else 16, 16, stride=1, leak=0.1, sub=0.4, maxv=6.) for i in range(30)])
    assert reads_per_unit(on(device, clamped), on(device, torch.randn(32, 3, 16, 16))) <= 2 # a clamp bends the shift: more need two

def course_mix(seed=0):
    "Units with a float `sub`, a bias that shifts the mean, a clamp, a BatchNorm, a lone linear layer"
    torch.manual_seed(seed)
    return nn.Sequential(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU()), nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), CourseGeneralRelu(0.1, 0.4, 6.)),
                         nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU()),
                         ConvLayer(8, 8, stride=1, leak=0.1, sub=0.4, maxv=6.), nn.Flatten(), nn.Linear(8*12*12, 10))

@pytest.mark.parametrize('build', [course_mix, lambda: nn.Sequential(*[nn.Sequential(nn.Linear(16, 16), nn.GELU()) for _ in range(8)])])
def test_the_first_correction_replayed_before_the_read_gives_the_same_weights(build, device, monkeypatch):
    "The GPU's way (the first correction aimed and replayed on the device, then read) and the CPU's give the same weights to the bit"
    model = on(device, build())
    xb = on(device, img() if isinstance(model[0], nn.Sequential) and isinstance(model[0][0], nn.Conv2d) else torch.randn(64, 16))
    direct, guessed = copy.deepcopy(model), copy.deepcopy(model)
    monkeypatch.setattr(lsuv_callback.fitter, 'reads_wait', lambda device: False)
    r1 = lsuv_init(direct, xb)
    as_on_gpu(monkeypatch)
    r2 = lsuv_init(guessed, xb)
    assert r1.ok and [(u.iters, u.mean_after, u.std_after) for u in r1.units] == [(u.iters, u.mean_after, u.std_after) for u in r2.units]
    assert not changed(guessed, model_state(direct))

def test_zero_init_checks_read_the_device_once(device):
    "One strided look at every large weight of every unit together, and one more whole read of those that look zero"
    mlp50 = on(device, nn.Sequential(*[nn.Linear(128, 256) if i % 2 else nn.Linear(256, 128) for i in range(50)]))
    assert reads_of_the_device(lambda: zero_init(mlp50, find_units(mlp50))) == 1
    nn.init.zeros_(mlp50[7].weight)
    assert reads_of_the_device(lambda: zero_init(mlp50, find_units(mlp50))) == 2
