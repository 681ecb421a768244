"""Property tests: on random small architectures `lsuv_init` either meets every target it can reach, confirmed by a fresh
forward pass, or says exactly which units did not and why. It never hangs and never raises anything but LSUVError; and
where it meets every target, its weights are those of `lsuv_reference`, the plain algorithm."""
import copy, math, warnings

import torch
from torch import nn
from hypothesis import given, example, settings, HealthCheck, strategies as st
from lsuv_callback.core import lsuv_init, lsuv_reference, unit_stats, LSUVError, LSUVWarning
from lsuv_callback.layers import GeneralRelu
from lsuv_testutils import CourseGeneralRelu, model_state, changed, hooks_of

torch.set_num_threads(1)
ACTS = ['relu', 'relu_inplace', 'leaky', 'gelu', 'tanh', 'silu', 'grelu', 'course_grelu']

class Residual(nn.Module):
    def __init__(self, block): super().__init__(); self.block = block
    def forward(self, x): return x + self.block(x)

def make_act(a):
    name, leak, sub, maxv = a
    if name == 'relu': return nn.ReLU()
    if name == 'relu_inplace': return nn.ReLU(inplace=True)
    if name == 'leaky': return nn.LeakyReLU(leak or 0.1)
    if name == 'gelu': return nn.GELU()
    if name == 'tanh': return nn.Tanh()
    if name == 'silu': return nn.SiLU()
    if name == 'grelu': return GeneralRelu(leak, sub, maxv)
    return CourseGeneralRelu(leak, sub, maxv)

opt = lambda s: st.one_of(st.none(), s)
act_st = st.tuples(st.sampled_from(ACTS), opt(st.sampled_from([0.01, 0.1, 0.3])), opt(st.sampled_from([0., 0.2, 0.5])),
                   opt(st.sampled_from([0.5, 1., 6.])))
block_st = st.fixed_dictionaries(dict(width=st.integers(2, 16), act=act_st, bn=st.sampled_from([None, 'before', 'after']),
                                      residual=st.booleans()))
depth_st = st.integers(1, 6).flatmap(lambda n: st.lists(block_st, min_size=n, max_size=n))
arch_st = st.fixed_dictionaries(dict(conv=st.booleans(), blocks=depth_st,
                                     seed=st.integers(0, 2**16), tol=st.sampled_from([1e-3, 1e-4])))

def build(arch):
    "A Sequential of fastai ConvLayer-like blocks [weight, (BN), act, (BN)], some of them residual, then a linear head"
    torch.manual_seed(arch['seed'])
    conv = arch['conv']
    ni = c_in = 3
    layers = []
    for b in arch['blocks']:
        nf = ni if b['residual'] else b['width']
        w = nn.Conv2d(ni, nf, 3, padding=1, bias=b['bn'] is None) if conv else nn.Linear(ni, nf, bias=b['bn'] is None)
        bn = (nn.BatchNorm2d if conv else nn.BatchNorm1d)(nf)
        mods = [w, bn, make_act(b['act'])] if b['bn'] == 'before' else [w, make_act(b['act'])] + ([bn] if b['bn'] else [])
        block = nn.Sequential(*mods)
        layers.append(Residual(block) if b['residual'] else block)
        ni = nf
    head = [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(ni, 4)] if conv else [nn.Linear(ni, 4)]
    model = nn.Sequential(*layers, *head)
    g = torch.Generator().manual_seed(arch['seed'] + 1)
    xb = torch.randn(8, c_in, 6, 6, generator=g) if conv else torch.randn(24, c_in, generator=g)
    return model, xb

def blk(width, act, bn=None, residual=False): return dict(width=width, act=act, bn=bn, residual=residual)
# Found by a 300-example run: a GeneralRelu clamped at maxv below what std 1 needs. The joint mean/std step pushed `sub` so far
# that every activation sat at maxv: a working unit (std 0.38 / 0.50) turned into a constant, dead one.
CLAMPED_LINEAR = dict(conv=False, seed=10857, tol=1e-4, blocks=[blk(2, ('gelu', None, None, None), 'after'),
                                                                 blk(6, ('grelu', 0.3, 0.5, 0.5), residual=True)])
CLAMPED_CONV = dict(conv=True, seed=300, tol=1e-3, blocks=[
    blk(16, ('relu', None, 0., None), 'after'), blk(14, ('relu', 0.3, 0., 0.5)), blk(11, ('gelu', 0.1, None, None), 'before'),
    blk(4, ('grelu', None, 0.5, 1.), 'before', True), blk(9, ('leaky', None, None, 0.5), 'before', True),
    blk(14, ('relu', 0.3, 0., 0.5))])

@settings(max_examples=35, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(arch=arch_st)
@example(arch=CLAMPED_LINEAR)
@example(arch=CLAMPED_CONV)
def test_lsuv_meets_its_targets_or_says_which_units_did_not(arch):
    model, xb = build(arch)
    tol = arch['tol']
    before, modes = model_state(model), {n: m.training for n, m in model.named_modules()}
    with warnings.catch_warnings(record=True) as ws:
        warnings.simplefilter('always')
        try: report = lsuv_init(model, xb, tol=tol)
        except LSUVError:
            assert not changed(model, before), 'LSUVError but the model was changed'
            return
    assert not hooks_of(model) and {n: m.training for n, m in model.named_modules()} == modes
    sd, floats = model_state(model)
    assert all(v.isfinite().all() for v in sd.values() if v.is_floating_point()) and all(map(math.isfinite, floats.values()))
    warned = ' '.join(str(w.message) for w in ws if issubclass(w.category, LSUVWarning))
    assert report.ok == all(u.converged for u in report.units)
    assert [u.calls for u in report.units] == [1] * len(report.units), 'every unit runs once in these models'
    fresh = {n: (m, s) for n, m, s in unit_stats(model, xb)}
    assert set(fresh) == {u.name for u in report.units}
    for u in report.units:
        if not u.converged:
            assert u.note, f'unit {u.name} did not converge and the report does not say why'
            assert f"'{u.name}'" in warned, f'no warning for unit {u.name}'
            # never worse than it started: |std-1| (+|mean| where the mean is adjusted) may not grow
            err = lambda m, s: report.targets.error(m, s, u.mean_adjusted)
            assert err(u.mean_after, u.std_after) <= err(u.mean_before, u.std_before) + 1e-6, \
                f'unit {u.name} was left further from its targets: {u.mean_before, u.std_before} -> {u.mean_after, u.std_after}'
            continue
        m, s = fresh[u.name]
        # the loop's own measurement meets the tolerance ...
        assert report.targets.met(u.mean_after, u.std_after, u.mean_adjusted), (u.name, u.mean_after, u.std_after)
        # ... and so does a fresh forward pass with the final weights (float32 noise allowed: 1% of tol)
        assert report.targets.met(m, s, u.mean_adjusted, margin=1.01), (u.name, 'fresh', (m, s), 'report', (u.mean_after, u.std_after))
        assert abs(s - u.std_after) <= 1e-4 and abs(m - u.mean_after) <= 1e-4, (u.name, (m, s), (u.mean_after, u.std_after))

@settings(max_examples=15, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(arch=arch_st)
def test_where_lsuv_init_meets_every_target_plain_lsuv_finds_the_same_weights(arch):
    """`lsuv_reference` (00_core) is the algorithm stated plainly; in float64 at a tolerance far below float32's, the fixed
    point each unit reaches does not depend on the path, so the engine's weights are the reference's to a relative 1e-6"""
    model, xb = build(arch)
    model, xb = model.double(), xb.double()
    twin = copy.deepcopy(model)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', LSUVWarning) # what these random models miss is checked in the test above
        report = lsuv_init(model, xb, tol=1e-10, max_iter=100)
        if not report.ok: return # a unit it leaves as it was, which the reference moves: nothing to compare
        lsuv_reference(twin, xb, tol=1e-10, max_iter=100)
    ref = twin.state_dict()
    for k, v in model.state_dict().items():
        if v.is_floating_point(): torch.testing.assert_close(v, ref[k], rtol=1e-6, atol=1e-9, msg=k)
    floats, ref_floats = model_state(model)[1], model_state(twin)[1] # the course's `GeneralRelu` keeps `sub` as a float
    assert all(math.isclose(v, ref_floats[k], rel_tol=1e-6, abs_tol=1e-12) for k, v in floats.items()), (floats, ref_floats)
