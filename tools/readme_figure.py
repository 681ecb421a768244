#!/usr/bin/env python
"""Draw images/lsuv_deep20.png, the README's picture: the std and mean of each layer's output of the demo's 20-layer CNN
on a batch of the course's MNIST, in a fresh forward pass, after PyTorch's default init, 07a's kaiming init, and LSUV.

Uses only the public API. Usage: python tools/readme_figure.py [out.png]"""
import sys, warnings
from pathlib import Path
import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator
import torch
from lsuv_callback import lsuv_init, unit_stats
from lsuv_callback.mnist import load_mnist, normalize_to
from lsuv_callback.demo import demo_model, init_kaiming, INIT_STYLES

def stats(init, xb):
    torch.manual_seed(0)
    model = demo_model('deep')
    if init == 'kaiming': init_kaiming(model)
    if init == 'lsuv':
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            lsuv_init(model, xb)
    return unit_stats(model, xb)

def main(out='images/lsuv_deep20.png'):
    x_train, _, x_valid, _ = load_mnist()
    xb = normalize_to(x_train, x_valid)[0][:512]
    fig, axs = plt.subplots(1, 2, figsize=(10, 3.6))
    for init in ('default', 'kaiming', 'lsuv'):
        st = stats(init, xb)
        style = INIT_STYLES[init]
        for ax, i in zip(axs, (2, 1)): ax.plot(range(len(st)), [s[i] for s in st], label=init, **style)
    for ax, what, target in zip(axs, ('std', 'mean'), (1, 0)):
        ax.axhline(target, ls='--', c='grey', lw=1)
        ax.set(title=f"{what} of each layer's output, fresh forward pass", xlabel='layer (in forward order)')
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axs[0].set_yscale('log')
    axs[0].legend()
    fig.suptitle("The demo's 20-layer CNN on MNIST: with the default and kaiming inits the signal shrinks and sinks\n"
                 "layer by layer; LSUV puts every layer at mean 0, std 1", fontsize=10)
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, bbox_inches='tight') # every title and label inside the canvas
    print(f'wrote {out}')

if __name__ == '__main__': main(*sys.argv[1:])
