#!/usr/bin/env python
"""LSUV on the stock models people bring: torchvision, timm and Hugging Face transformers models built from their configs
(random init, nothing downloaded), each at batch 8, default `lsuv_init` settings, on one device.

For each model this measures, in one run, with the main bench's helpers (timing.py, methods.py, precision.py):
- `fpe`: `lsuv_init` time over one plain `torch.no_grad()` forward of the model as built (median of `--repeats` runs
  interleaved with the forwards, so both see the same load, and more runs for a fast model; each run and each forward
  on a fresh copy of the model);
- units found, converged, and the distinct `LSUVWarning`s it gave;
- `worst err`: the worst |std-1| (and |mean| where the unit's mean is adjusted) over the converged units, in a FRESH
  forward pass with the final weights, in LSUV's measuring mode (`unit_stats`);
- `repeatable`: the runs, on copies of the same model without reseeding, give bit-identical weights.

Writes `stock-<device>.md` and `.json` to `--out` (default bench/results), with a header saying how it was run.
Run: python -m bench.stock [--device cpu] [--models a,b | all] [--out DIR]
"""
from __future__ import annotations
import argparse, json, math, statistics, sys, time
from dataclasses import dataclass, asdict
from pathlib import Path

import torch

from .zoo import torchvision_model
from .timing import Machine, fresh_forward, interleaved, machine_info
from .methods import run_ours
from .precision import precision
from .render import header, table

BATCH, PX, TOKENS = 8, 64, 32


def images(px=PX): return torch.randn(BATCH, 3, px, px)


def tv(name, px=PX, **kwargs):
    return lambda: (torchvision_model(name, **kwargs)(), images(px))


def timm_model(name, px=PX, **kwargs):
    def build():
        import timm
        return timm.create_model(name, pretrained=False, **kwargs), images(px)
    return build


def hf(config, model, inputs='ids', **kwargs):
    def build():
        import transformers
        cfg = getattr(transformers, config)(**kwargs)
        if inputs == 'pixels': return getattr(transformers, model)(cfg), dict(pixel_values=images(cfg.image_size))
        ids = torch.randint(0, cfg.vocab_size, (BATCH, TOKENS), generator=torch.Generator().manual_seed(0))
        return getattr(transformers, model)(cfg), dict(input_ids=ids)
    return build


TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, vocab_size=1000)
GPT2 = dict(n_embd=64, n_layer=2, n_head=4, vocab_size=1000, n_positions=64, bos_token_id=0, eos_token_id=0)
ZOO = {
    'tv/resnet18': tv('resnet18'),
    'tv/vgg11_bn': tv('vgg11_bn'),
    'tv/mobilenet_v3_small': tv('mobilenet_v3_small'),
    'tv/efficientnet_b0': tv('efficientnet_b0'),
    'tv/convnext_tiny': tv('convnext_tiny'),
    'tv/swin_t': tv('swin_t'),
    'tv/densenet121': tv('densenet121'),
    'tv/googlenet': tv('googlenet', aux_logits=True, init_weights=True),
    'tv/vit_b_16': tv('vit_b_16', px=224),
    'timm/nfnet_l0': timm_model('nfnet_l0'),
    'timm/ghostnet_050': timm_model('ghostnet_050'),
    'timm/efficientnet_b0': timm_model('efficientnet_b0'),
    'timm/convnext_atto': timm_model('convnext_atto'),
    'timm/regnetx_002': timm_model('regnetx_002'),
    'timm/mobilevit_xxs': timm_model('mobilevit_xxs'),
    'timm/vit_tiny_patch16_224': timm_model('vit_tiny_patch16_224', px=224),
    'hf/bert': hf('BertConfig', 'BertModel', **TINY),
    'hf/gpt2': hf('GPT2Config', 'GPT2Model', **GPT2),
    'hf/gpt2-cls': hf('GPT2Config', 'GPT2ForSequenceClassification', **GPT2, pad_token_id=0),
    'hf/t5-encoder': hf('T5Config', 'T5EncoderModel', d_model=64, d_ff=128, d_kv=16, num_layers=2, num_heads=4,
                        vocab_size=1000),
    'hf/distilbert': hf('DistilBertConfig', 'DistilBertModel', dim=64, n_layers=2, n_heads=4, hidden_dim=128,
                        vocab_size=1000),
    'hf/llama': hf('LlamaConfig', 'LlamaModel', **TINY, num_key_value_heads=2, max_position_embeddings=64),
    'hf/vit': hf('ViTConfig', 'ViTModel', inputs='pixels', **{**TINY, 'image_size': 32, 'patch_size': 8}),
}
SLOW = ('tv/vit_b_16',)  # a minute on its own on 2 CPU cores: only with `--models all` or by name
LIBS = {'tv': 'torchvision', 'timm': 'timm', 'hf': 'transformers'}


MIN_SECONDS, MAX_REPEATS = 1., 40 # 5 runs of a model that takes milliseconds measure mostly the machine's noise


def repeats_for(model, xb, device, repeats:int) -> int:
    "At least `repeats`, and as many as take about `MIN_SECONDS` of lsuv_init (some 3 forwards each), at most `MAX_REPEATS`"
    fresh_forward(model, xb, device) # warms up the kernels, so the second forward is a typical one
    return max(repeats, min(MAX_REPEATS, math.ceil(MIN_SECONDS / (3 * fresh_forward(model, xb, device)))))


@dataclass
class StockResult:
    "`lsuv_init` on one stock model: its cost in fpe, its units, its warnings, its fresh-pass error, its repeatability"
    model: str
    runs: int
    params_m: float
    fwd_s: float
    fpe: float
    units: int
    converged: int
    warnings: list[str]  # distinct
    worst_err: float
    repeatable: bool


@dataclass
class StockFailure:
    "A stock model the table could not build or run, and the error"
    model: str
    error: str


def bench_one(name:str, build, device, repeats:int) -> StockResult:
    "fpe, units, warnings, fresh-pass worst error and repeatability of `lsuv_init` on one stock model"
    torch.manual_seed(0)
    model, xb = build()
    model = model.to(device)
    xb = {k: v.to(device) for k, v in xb.items()} if isinstance(xb, dict) else xb.to(device)
    repeats = repeats_for(model, xb, device, repeats)
    fwd, runs = interleaved(model, xb, {'ours': lambda m: run_ours(m, xb)}, device, repeats)
    first, *rest = runs['ours']
    report, m = first.result.report, first.model
    converged = {u.name: bool(u.mean_adjusted) for u in report.units if u.converged}
    states = [r.model.state_dict() for r in rest]
    return StockResult(model=name, runs=repeats, params_m=sum(p.numel() for p in model.parameters()) / 1e6,
                       fwd_s=statistics.median(fwd), fpe=statistics.median(r.seconds for r in runs['ours']) / statistics.median(fwd),
                       units=len(report.units), converged=len(converged), warnings=sorted(set(first.result.warnings)),
                       worst_err=precision(m, xb, converged, 1e-3).worst_err,
                       repeatable=all(torch.equal(p, s[k]) for s in states for k, p in m.state_dict().items()))


def render(rows:list[StockResult | StockFailure], info:Machine, args) -> str:
    notes = [f'random init from configs (nothing downloaded), batch {BATCH}: images {PX} px (224 px for the ViTs), '
             f'token models {TOKENS} tokens; `lsuv_init(model, xb)` with its default settings',
             f'fpe = median lsuv_init time / median plain `torch.no_grad()` forward of the model as built (train mode), '
             f'at least {args.repeats} runs interleaved with forwards (a fast model more: about {MIN_SECONDS:g} s of lsuv_init, '
             f'at most {MAX_REPEATS}), every run and every forward on a fresh copy of the model; worst err: fresh pass in '
             f'LSUV\'s measuring mode (`unit_stats`), converged units; repeatable: all the runs give bit-identical weights']
    head = ['model', 'params (M)', 'fwd (ms)', 'runs', 'fpe', 'units', 'converged', 'warnings', 'fresh-pass worst err', 'repeatable']
    cells = [[r.model, '', '', '', '', '', '', '', f"error: {r.error}", ''] if isinstance(r, StockFailure) else
             [r.model, f"{r.params_m:.1f}", f"{r.fwd_s*1e3:.1f}", r.runs, f"{r.fpe:.2f}", r.units, r.converged,
              len(r.warnings), f"{r.worst_err:.1e}", 'yes' if r.repeatable else 'NO'] for r in rows]
    warned = [f'- {r.model}: {w}' for r in rows if isinstance(r, StockResult) for w in r.warnings]
    L = header(f"LSUV on stock models ({info.device})", info, notes) + table(head, 'lrrrrrrrrl', cells)
    return '\n'.join(L + (['', '## Warnings', ''] + warned if warned else [])) + '\n'


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--device', default='cpu')
    p.add_argument('--models', default=None, help=f'comma list, or "all" (default: all but {", ".join(SLOW)}): {",".join(ZOO)}')
    p.add_argument('--repeats', type=int, default=5)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--out', default=str(Path(__file__).parent / 'results'))
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == 'cpu': torch.set_num_threads(args.threads)
    names = [n for n in ZOO if n not in SLOW] if args.models is None else list(ZOO) if args.models == 'all' else args.models.split(',')
    unknown = [n for n in names if n not in ZOO]
    if unknown: sys.exit(f'stock: unknown models {unknown}; choose from {list(ZOO)}')
    info, rows = machine_info(device, libs=[LIBS[lib] for lib in dict.fromkeys(n.split('/')[0] for n in names)]), []
    for n in names:
        t = time.perf_counter()
        try: r = bench_one(n, ZOO[n], device, args.repeats)
        except Exception as e: r = StockFailure(n, f'{type(e).__name__}: {str(e)[:200]}')
        rows.append(r)
        warned = r.warnings if isinstance(r, StockResult) else []
        print(f'{n}: {time.perf_counter() - t:.1f}s', {k: v for k, v in asdict(r).items() if k != 'warnings'},
              f"{len(warned)} warnings", flush=True)
    md, out = render(rows, info, args), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f'stock-{device.type}.md').write_text(md)
    (out / f'stock-{device.type}.json').write_text(json.dumps(dict(machine=asdict(info), models=[asdict(r) for r in rows]),
                                                             indent=1, default=str))
    print('\n' + md)
    return 0


if __name__ == '__main__':
    sys.exit(main())
