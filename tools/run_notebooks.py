#!/usr/bin/env python
"""Run the documentation notebooks top to bottom and save them with their outputs (no Jupyter or Quarto needed).

Cells marked `#| notest` (the demo's full results) are not run and keep the outputs they have. Each notebook runs in
nbs/, as a reader would run it; `nbdev-clean` then strips metadata noise. Usage: python tools/run_notebooks.py [names...]"""
import subprocess, sys
from pathlib import Path
from nbdev.config import get_config
from nbdev.test import test_nb

def main(names):
    cfg = get_config()
    nbs = sorted(p for p in cfg.path('nbs_path').glob('*.ipynb') if not p.name.startswith('_'))
    chosen = [p for p in nbs if not names or p.stem in names or p.name in names]
    failed = [p.name for p in chosen if not test_nb(p, skip_flags=cfg.tst_flags.split(), save=True, do_print=True)[0]]
    subprocess.run(['nbdev-clean'], check=True)
    if failed: sys.exit(f'failed: {failed}')

if __name__ == '__main__': main(sys.argv[1:])
