"""LSUV on the models people bring: stock torchvision, timm and transformers models (built from configs, no download), and
a small look-alike of each pattern in them that once broke LSUV. Each must come out exact (every converged unit within
tol in a fresh pass, in LSUV's measuring mode), deterministic (copies give bit-identical weights, with no seeding) and
quiet (one warning per cause, naming its units)."""
import copy
import pytest
import torch
from torch import nn
import torch.nn.functional as F
from lsuv_callback.core import find_units
from lsuv_testutils import oracle_stats, model_state, changed, run
from conftest import on

torch.set_num_threads(1)

def img(n=8, c=3, s=32, seed=0): return torch.randn(n, c, s, s, generator=torch.Generator().manual_seed(seed))
def ids(n=4, seq=16, vocab=1000): return dict(input_ids=torch.randint(0, vocab, (n, seq), generator=torch.Generator().manual_seed(0)))

def check(model, xb, device='cpu', **kwargs):
    """`lsuv_init` on two copies of `model`, on `device`: the same weights to the bit and the same warnings, and every
    converged unit at its targets in a fresh pass; returns the report and the LSUV warnings"""
    model, xb = on(device, model), on(device, xb)
    twin = copy.deepcopy(model)
    report, warns, _ = run(model, xb, **kwargs)
    assert run(twin, xb, **kwargs)[1] == warns, 'two runs on copies of the model warned differently'
    if device == 'cpu': assert not changed(twin, model_state(model)), 'two runs on copies of the model gave different weights'
    else: # to the bit only under `torch.use_deterministic_algorithms(True)` on a GPU
        for (k, a), b in zip(twin.state_dict().items(), model.state_dict().values()): torch.testing.assert_close(a, b, msg=k)
    fresh = oracle_stats(model, xb, [u.name for u in report.units if u.converged])
    for u in report.units:
        if not u.converged: continue
        m, s = fresh[u.name]
        assert report.targets.met(m, s, u.mean_adjusted, margin=1.01), (u.name, m, s) # 1% for a fresh pass's rounding
    return report, warns

# ------------------------------------------------------------------------------------------------------ look-alikes

class SelfDropout(nn.Module):
    "Dropout written in `forward`, as transformers' attention and timm's heads do: no module to switch off"
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(16, 32), nn.Linear(32, 32), nn.Linear(32, 4)
    def forward(self, x):
        x = F.dropout(F.gelu(self.a(x)), 0.5, training=self.training)
        x = self.b(x) if not self.training else F.dropout(self.b(x), 0.3)
        return self.c(F.gelu(x))

def test_dropout_in_forward_is_off_and_the_init_deterministic(device):
    torch.manual_seed(0)
    report, warns = check(SelfDropout().train(), torch.randn(64, 16), device=device)
    assert report.ok and not warns, warns

class Conv1D(nn.Module):
    "transformers' Conv1D: a linear layer whose weight is stored transposed, (in, out)"
    def __init__(self, nx, nf):
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.randn(nx, nf) * 0.02), nn.Parameter(torch.zeros(nf))
    def forward(self, x): return torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight).reshape(*x.shape[:-1], -1)

def test_a_linear_look_alike_is_a_unit_by_rule(device):
    torch.manual_seed(0)
    model = nn.Sequential(Conv1D(16, 32), nn.GELU(), Conv1D(32, 8), nn.Embedding(4, 4).requires_grad_(False) and nn.Identity())
    assert [u.name for u in find_units(model)] == ['0', '2']
    report, warns = check(model, torch.randn(64, 16), device=device)
    assert report.ok and not warns, warns

def test_embeddings_and_norms_are_not_units():
    model = nn.Sequential(nn.Embedding(10, 8), nn.LayerNorm(8), nn.Linear(8, 8))
    assert [u.name for u in find_units(model)] == ['2']

class StdConv(nn.Conv2d):
    "A weight-standardised conv, as timm's StdConv2d; with `gain`, its scale lives there (timm's ScaledStdConv2d)"
    def __init__(self, *args, gain=False, gain_init=1., **kwargs):
        super().__init__(*args, **kwargs)
        self.gain = nn.Parameter(torch.full((self.out_channels, 1, 1, 1), gain_init)) if gain else None
    def forward(self, x):
        # a negligible eps: with timm's 1e-6, a weight scaled down 100x is no longer standardised, and scaling works again
        w = F.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None, training=True, momentum=0.,
                         eps=1e-20).reshape_as(self.weight)
        if self.gain is not None: w = w * self.gain
        return F.conv2d(x, w, self.bias, self.stride, self.padding)

def std_cnn(gain, gain_init=1.):
    torch.manual_seed(0)
    return nn.Sequential(StdConv(3, 8, 3, padding=1, gain=gain), nn.ReLU(), StdConv(8, 8, 3, padding=1, gain=gain),
                         nn.ReLU(), StdConv(8, 8, 3, padding=1, gain=gain, gain_init=gain_init))

def test_a_weight_standardised_conv_is_scaled_through_its_gain(device):
    report, warns = check(std_cnn(gain=True), img(), device=device)
    assert report.ok and not warns, warns
    assert all('gain' in u.knobs for u in report.units)

def test_a_scale_that_cannot_move_the_output_is_named_and_the_unit_left_exactly_as_it_was(device):
    model = on(device, std_cnn(gain=False))
    before = model_state(model)
    report, warns = check(model, img(), device=device)
    assert not report.failed[0].converged and len(report.failed) == 3
    assert len(warns) == 1 and 'does not change its output' in warns[0] and 'saturat' not in warns[0], warns
    assert not changed(model, before), 'a unit that failed must be left exactly as it was'

def test_a_zero_scale_of_any_name_is_a_zero_init_on_purpose(device):
    model = std_cnn(gain=True, gain_init=0.)
    report, warns = check(model, img(), device=device)
    assert [u.name for u in report.units] == ['0', '2'] and report.ok
    assert len(warns) == 1 and "['4']" in warns[0] and 'zero-initialised' in warns[0], warns
    assert not model[4].gain.any()

class FunctionalAttention(nn.Module):
    "Projections whose weights the parent uses through F.linear, as torchvision's swin attention does"
    def __init__(self, d=16):
        super().__init__()
        self.qkv, self.proj = nn.Linear(d, 3*d), nn.Linear(d, d)
    def forward(self, x):
        q, k, v = F.linear(x, self.qkv.weight, self.qkv.bias).chunk(3, -1)
        return F.linear(F.scaled_dot_product_attention(q, k, v), self.proj.weight, self.proj.bias)

def test_weights_used_through_f_linear_give_one_warning(device):
    torch.manual_seed(0)
    model = nn.Sequential(*[FunctionalAttention() for _ in range(3)], nn.Linear(16, 4))
    report, warns = check(model, torch.randn(4, 10, 16), device=device)
    assert len(warns) == 1 and 'not called' in warns[0] and all(f"'{i}.qkv'" in warns[0] for i in range(3)), warns
    assert [u.name for u in report.units if u.converged] == ['3']

# ------------------------------------------------------------------------------------------------------- stock models

def hf(config, model, **kw):
    transformers = pytest.importorskip('transformers')
    torch.manual_seed(0)
    return getattr(transformers, model)(getattr(transformers, config)(**kw))

TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, vocab_size=1000)

def test_bert_is_exact_deterministic_and_quiet(device):
    "BERT's attention drops out in its forward (`dropout=0.0 if not self.training else p`)"
    report, warns = check(hf('BertConfig', 'BertModel', **TINY).train(), ids(), device=device)
    assert report.ok and not warns and len(report.units) == 13, (warns, len(report.units))

@pytest.mark.parametrize('head', ['GPT2Model', 'GPT2ForSequenceClassification'])
def test_gpt2s_conv1d_layers_are_found(head, device):
    cfg = dict(n_embd=64, n_layer=2, n_head=4, vocab_size=1000, n_positions=64, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    report, warns = check(hf('GPT2Config', head, **cfg).train(), ids(), device=device)
    names = [u.name for u in report.units]
    assert report.ok and not warns, warns
    assert sum('c_attn' in n or 'c_proj' in n or 'c_fc' in n for n in names) == 8, names

def timm_model(name, **kw):
    timm = pytest.importorskip('timm')
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, **kw)

def test_timm_ghostnet_with_functional_dropout_in_its_head(device):
    report, warns = check(timm_model('ghostnet_050', drop_rate=0.5).train(), img(), device=device)
    assert report.ok and not warns, warns

def test_timm_nfnet_is_scaled_through_its_gains_with_one_warning_per_cause(device):
    report, warns = check(timm_model('nfnet_l0').train(), img(n=4), device=device)
    assert len(warns) == 2, warns
    assert any('zero-initialised' in w and 'conv3' in w for w in warns)
    assert any('input is constant' in w for w in warns)
    assert sum(u.converged for u in report.units) >= 40
    assert not any('saturat' in u.note for u in report.units)

def test_torchvision_googlenet_aux_heads_are_one_line(device):
    torchvision = pytest.importorskip('torchvision')
    torch.manual_seed(0)
    model = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=True).train()
    report, warns = check(model, img(n=4, s=64), device=device)
    assert len(warns) == 1 and 'aux1.fc1' in warns[0] and 'not called' in warns[0], warns
    assert all(u.converged for u in report.units if not u.name.startswith('aux'))

def test_bf16_default_tolerance():
    from lsuv_callback.layers import cnn_07a
    torch.manual_seed(0)
    model = cnn_07a(leak=0.1, sub=0.4, maxv=6.).to(torch.bfloat16)
    report, warns, _ = run(model, torch.randn(64, 1, 28, 28))
    assert report.ok and not warns and report.std_tol == 2**-7, (warns, report.std_tol)
    torch.manual_seed(0)
    model = cnn_07a(leak=0.1, sub=0.4, maxv=6.).to(torch.bfloat16)
    report, warns, _ = run(model, torch.randn(64, 1, 28, 28), tol=1e-3)
    assert warns and all('finer than torch.bfloat16' in w and 'saturat' not in w for w in warns), warns
