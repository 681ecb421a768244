#!/usr/bin/env python
"""LSUV on the stock models people bring: torchvision, timm and Hugging Face transformers models built from their configs
(random init, no download), each at a small batch on one device.

For each model this measures, in one run:
- `fpe`: `lsuv_init` time over one plain forward pass of the same model in the mode LSUV measures in (median of
  `--repeats`, interleaved so both see the same load);
- units found, converged, and the distinct `LSUVWarning`s it gave;
- `worst err`: the worst |std-1| (and |mean| where the unit's mean is adjusted) over the converged units, in a FRESH
  forward pass with the final weights, in LSUV's measuring mode;
- `repeatable`: two runs on copies of the model, without seeding, give bit-identical weights.

Writes `stock-<device>.md` and `.json` to `--out`. Run: python bench/stock.py [--device cpu] [--models a,b] [--out DIR]
"""
from __future__ import annotations
import argparse, copy, json, statistics, sys, time, warnings
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from bench import timed, call, machine_info
from lsuv_callback.core import lsuv_init, unit_stats, measuring_mode, LSUVWarning


def tv(name, px=64, **kw):
    def build():
        import torchvision
        return getattr(torchvision.models, name)(weights=None, **kw), torch.randn(8, 3, px, px)
    return build

def timm_model(name, px=64, **kw):
    def build():
        import timm
        return timm.create_model(name, pretrained=False, **kw), torch.randn(8, 3, px, px)
    return build

def tokens(vocab=1000, n=8, seq=32): return torch.randint(0, vocab, (n, seq), generator=torch.Generator().manual_seed(0))

def hf(config, model, inputs='ids', **kw):
    def build():
        import transformers
        cfg = getattr(transformers, config)(**kw)
        m = getattr(transformers, model)(cfg)
        if inputs == 'ids': return m, dict(input_ids=tokens(cfg.vocab_size))
        return m, dict(pixel_values=torch.randn(8, 3, cfg.image_size, cfg.image_size))
    return build

TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, vocab_size=1000)
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
    'hf/gpt2': hf('GPT2Config', 'GPT2Model', n_embd=64, n_layer=2, n_head=4, vocab_size=1000, n_positions=64,
                  bos_token_id=0, eos_token_id=0),
    'hf/gpt2-cls': hf('GPT2Config', 'GPT2ForSequenceClassification', n_embd=64, n_layer=2, n_head=4, vocab_size=1000,
                      n_positions=64, bos_token_id=0, eos_token_id=0, pad_token_id=0),
    'hf/t5-encoder': hf('T5Config', 'T5EncoderModel', d_model=64, d_ff=128, d_kv=16, num_layers=2, num_heads=4,
                        vocab_size=1000),
    'hf/distilbert': hf('DistilBertConfig', 'DistilBertModel', dim=64, n_layers=2, n_heads=4, hidden_dim=128,
                        vocab_size=1000),
    'hf/llama': hf('LlamaConfig', 'LlamaModel', **TINY, num_key_value_heads=2, max_position_embeddings=64),
    'hf/vit': hf('ViTConfig', 'ViTModel', inputs='pixels', **{**TINY, 'image_size': 32, 'patch_size': 8}),
}


def worst_error(report, model, xb):
    "Worst |std-1| (and |mean| where adjusted) over the converged units, in a fresh pass in LSUV's measuring mode"
    fresh = {n: (m, s) for n, m, s in unit_stats(model, xb)}
    errs = [max(abs(fresh[u.name][1] - report.target_std), abs(fresh[u.name][0] - report.target_mean) if u.mean_adjusted else 0.)
            for u in report.units if u.converged and u.name in fresh]
    return max(errs, default=0.)


def forward_time(model, xb, device):
    with torch.no_grad(), measuring_mode(model): return timed(lambda: call(model, xb), device)[0]


def bench_one(name, build, device, repeats):
    torch.manual_seed(0)
    model, xb = build()
    model = model.to(device)
    xb = {k: v.to(device) for k, v in xb.items()} if isinstance(xb, dict) else xb.to(device)
    copies = [copy.deepcopy(model) for _ in range(repeats)]  # before any forward: BatchNorm updates its running stats
    forward_time(model, xb, device)  # warm-up
    fwd, ours, runs = [], [], []
    for m in copies:
        fwd.append(forward_time(model, xb, device))
        with warnings.catch_warnings(record=True) as ws:
            warnings.simplefilter('always')
            t, report = timed(lambda: lsuv_init(m, xb), device)
        ours.append(t)
        runs.append((m, report, sorted({str(w.message) for w in ws if issubclass(w.category, LSUVWarning)})))
    m, report, warns = runs[0]
    repeatable = all(torch.equal(p, q) for r in runs[1:] for p, q in zip(m.state_dict().values(), r[0].state_dict().values()))
    return dict(model=name, params_m=sum(p.numel() for p in model.parameters()) / 1e6,
                fpe=statistics.median(ours) / statistics.median(fwd), fwd_s=statistics.median(fwd),
                units=len(report.units), converged=sum(u.converged for u in report.units),
                warnings=warns, worst_err=worst_error(report, m, xb), repeatable=repeatable,
                tol=(report.mean_tol, report.std_tol))


def table(rows, info):
    L = [f"# LSUV on stock models ({info['device']}, torch {info['torch']}, {info.get('gpu', info['cpu'])})", '',
         'Random init from configs, batch 8 (64 px images; 224 px for the ViTs; 32 tokens), default settings.', '',
         '| model | params (M) | fpe | units | converged | warnings | fresh-pass worst err | repeatable |',
         '|---|---:|---:|---:|---:|---:|---:|---|']
    for r in rows:
        if 'error' in r:
            L.append(f"| {r['model']} | | | | | | error: {r['error']} | |")
            continue
        L.append(f"| {r['model']} | {r['params_m']:.1f} | {r['fpe']:.2f} | {r['units']} | {r['converged']} | "
                 f"{len(r['warnings'])} | {r['worst_err']:.1e} | {'yes' if r['repeatable'] else 'NO'} |")
    warned = [(r['model'], w) for r in rows for w in r.get('warnings', [])]
    if warned: L += ['', '## Warnings', ''] + [f'- {m}: {w}' for m, w in warned]
    return '\n'.join(L) + '\n'


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--device', default='cpu')
    p.add_argument('--models', default=None, help=f'comma list (default: all): {",".join(ZOO)}')
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--out', default=str(Path(__file__).parent / 'results'))
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == 'cpu': torch.set_num_threads(args.threads)
    names = args.models.split(',') if args.models else list(ZOO)
    unknown = [n for n in names if n not in ZOO]
    if unknown: sys.exit(f'stock: unknown models {unknown}; choose from {list(ZOO)}')
    info, rows = machine_info(device), []
    for n in names:
        t = time.perf_counter()
        try: r = bench_one(n, ZOO[n], device, args.repeats)
        except Exception as e: r = dict(model=n, error=f'{type(e).__name__}: {str(e)[:200]}')
        rows.append(r)
        print(f'{n}: {time.perf_counter() - t:.1f}s', {k: v for k, v in r.items() if k != 'warnings'},
              f"{len(r.get('warnings', []))} warnings", flush=True)
    md = table(rows, info)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f'stock-{device.type}.md').write_text(md)
    (out / f'stock-{device.type}.json').write_text(json.dumps(dict(machine=info, models=rows), indent=1, default=str))
    print('\n' + md)
    return 0


if __name__ == '__main__':
    sys.exit(main())
