"""Models that do more than call their layers in a chain: forward hooks and pre-hooks of the user's, an autocast region,
modules shared by two blocks, a layer that gets no samples, pruned weights. LSUV moves the knobs only once its forward
pass is over, so each of these is a way the pass could see other values than the model computes afterwards. Each test
checks the promise that matters: every unit the report calls converged meets its targets in a fresh forward pass (an
fp64 oracle, independent of the package), and whatever LSUV leaves alone is left exactly as it was."""
import warnings
import pytest
import torch
import torch.nn.utils.prune as prune
from torch import nn
from lsuv_callback.core import lsuv_init
from lsuv_callback.layers import CourseGeneralRelu, GeneralRelu
from lsuv_testutils import oracle_stats, run, model_state, changed
from conftest import on

torch.set_num_threads(1)

def assert_converged_units_meet_their_targets(report, model, xb, tol=1e-3):
    fresh = oracle_stats(model, xb, [u.name for u in report.units])
    off = {u.name: fresh[u.name] for u in report.units if u.converged and
           (abs(fresh[u.name][1] - 1) > tol or (u.mean_adjusted and abs(fresh[u.name][0]) > tol))}
    assert not off, f'units reported converged miss their targets in a fresh pass: {off}'

def deep_mlp(n=70, d=16, seed=0):
    "More units than the replay horizon: the first ones are re-run"
    torch.manual_seed(seed)
    return nn.Sequential(*[nn.Linear(d, d) for _ in range(n)])

def test_under_autocast_the_units_are_measured_and_re_run_at_their_own_precision():
    "An autocast region caches low-precision copies of the weights: a weight moved in place must not go unseen"
    model, x = deep_mlp(), torch.randn(128, 16, generator=torch.Generator().manual_seed(1))
    with torch.autocast('cpu', dtype=torch.bfloat16):
        report, ws, _ = run(model, x)
        with torch.no_grad(): y = model[0](x)
    assert report.ok and not ws, ws
    assert_converged_units_meet_their_targets(report, model, x)
    assert abs(y.float().std().item() - 1) < 2e-2, 'a forward in the same autocast region computes with the new weights'

def test_a_users_pre_hook_applies_once_when_a_unit_is_re_run():
    model, x = deep_mlp(), torch.randn(64, 16, generator=torch.Generator().manual_seed(1))
    model[0].register_forward_pre_hook(lambda m, args: (args[0] + 1,))
    report, ws, _ = run(model, x)
    assert report.ok and report.units[0].recompute == 'rerun'
    assert_converged_units_meet_their_targets(report, model, x)

class SkipThroughAHook(nn.Module):
    "A skip connection taken by a forward hook that keeps a block's output (as fastai's `hook_outputs` does in a U-Net)"
    def __init__(self):
        super().__init__()
        self.b1 = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.b2 = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Conv2d(16, 4, 1)
        self.b1.register_forward_hook(self.keep)
    def keep(self, m, i, o): self.kept = o
    def forward(self, x): return self.head(torch.cat([self.b2(self.b1(x)), self.kept], 1))

class TwiceThroughAHook(nn.Module):
    "A lone layer called twice, a hook keeping its output of each call"
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(8, 8), nn.Linear(16, 8)
        self.a.register_forward_hook(self.keep)
    def keep(self, m, i, o): self.kept = o
    def forward(self, x): return self.b(torch.cat([self.a(self.a(x)), self.kept], 1))

@pytest.mark.parametrize('make,shape', [(SkipThroughAHook, (16, 3, 8, 8)), (TwiceThroughAHook, (64, 8))], ids=['block', 'called-twice'])
def test_a_hook_that_keeps_a_units_output_sees_it_corrected(make, shape, device):
    torch.manual_seed(0)
    model, x = on(device, make()), on(device, torch.randn(*shape, generator=torch.Generator().manual_seed(1)))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        report = lsuv_init(model, x)
    assert report.ok
    assert_converged_units_meet_their_targets(report, model, x)

def test_a_users_hook_that_changes_a_layers_output_is_not_taken_for_a_linear_layer(device):
    "A ReLU applied by a forward hook: the layer's mean can no longer be moved by its bias, and the report must say so"
    torch.manual_seed(0)
    model, x = on(device, nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8))), on(device, torch.randn(64, 8))
    model[0].register_forward_hook(lambda m, i, o: torch.relu(o))
    report, ws, _ = run(model, x)
    assert report.units[0].recompute == 'rerun'
    assert_converged_units_meet_their_targets(report, model, x)

@pytest.mark.parametrize('act', [lambda: CourseGeneralRelu(0.1, 0.4), lambda: GeneralRelu(0.1, 0.4)], ids=['float-sub', 'buffer-sub'])
def test_an_activation_shared_by_two_blocks_is_left_alone(act):
    "Its `sub` is a knob of both blocks: moving it for one would change the other, which the pass ran unchanged"
    torch.manual_seed(0)
    a = act()
    model = nn.Sequential(nn.Sequential(nn.Conv2d(3, 4, 3), a), nn.Sequential(nn.Conv2d(4, 4, 3), a),
                          nn.Flatten(), nn.Linear(4*4*4, 3))
    x = torch.randn(16, 3, 8, 8)
    before = model_state(model)
    report, ws, _ = run(model, x)
    assert [u.name for u in report.units] == ['3'] and any('share their weights' in w for w in ws), ws
    assert not [k for k in changed(model, before) if not k.startswith('3.')], 'the shared blocks were changed'
    assert_converged_units_meet_their_targets(report, model, x)

def test_a_unit_that_gets_no_samples_is_left_alone_with_a_note():
    "An expert of a mixture that no token reaches: its output is empty, there is nothing to measure"
    class MoE(nn.Module):
        def __init__(self): super().__init__(); self.experts = nn.ModuleList([nn.Linear(8, 8) for _ in range(2)])
        def forward(self, x):
            out = torch.zeros_like(x)
            out[:] = self.experts[0](x)
            self.experts[1](x[:0])
            return out
    torch.manual_seed(0)
    model = MoE()
    before = model_state(model.experts[1])
    report, ws, _ = run(model, torch.randn(32, 8))
    unit = {u.name: u for u in report.units}['experts.1']
    assert not unit.converged and 'empty' in unit.note and any("'experts.1'" in w for w in ws)
    assert not changed(model.experts[1], before)

def test_a_pruned_layer_is_scaled_through_its_original_weight():
    torch.manual_seed(0)
    model, x = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)), torch.randn(64, 8)
    prune.l1_unstructured(model[0], "weight", 0.5)
    mask = model[0].weight_mask.clone()
    report, ws, _ = run(model, x)
    assert report.ok and not ws, ws
    assert torch.equal(model[0].weight_mask, mask) and torch.equal(model[0].weight == 0, mask == 0), 'the pruning is kept'
    assert_converged_units_meet_their_targets(report, model, x)
