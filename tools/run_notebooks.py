#!/usr/bin/env python
"""Run the documentation notebooks top to bottom and save them with their outputs (no Jupyter or Quarto needed).

Cells marked `#| notest` (the demo's full results) are not run and keep the outputs they have. Each notebook runs in
nbs/, as a reader would run it, in a process of its own: a figure one notebook leaves open is never shown by the next. Outside Jupyter, fastprogress draws its bars with carriage returns: the saved text is
what a terminal shows at the end (the final table, not every redraw). `nbdev-clean` then strips metadata noise.
Usage: python tools/run_notebooks.py [names...]"""
import json, re, subprocess, sys
from pathlib import Path
from nbdev.clean import nbdev_clean
from nbdev.config import get_config
from nbdev.test import test_nb

def as_terminal_shows(text:str) -> str:
    "Each line as a terminal leaves it after its carriage returns, without the lines that were only progress bars"
    lines = [line.split('\r')[-1].rstrip() for line in text.split('\n')]
    return '\n'.join(l for l in lines if l.strip() and not re.match(r'^\s*(█|Epoch \d+/\d+ :)', l)) + ('\n' if text.endswith('\n') else '')

def settle_progress_bars(path):
    nb = json.loads(path.read_text())
    for c in nb['cells']:
        for o in c.get('outputs', []):
            if o.get('output_type') == 'stream' and any('\r' in t for t in o['text']):
                o['text'] = as_terminal_shows(''.join(o['text'])).splitlines(True)
        c['outputs'] = [o for o in c.get('outputs', []) if not (o.get('output_type') == 'stream' and not ''.join(o['text']).strip())]
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + '\n')

def main(names):
    cfg = get_config()
    nbs = sorted(p for p in cfg.path('nbs_path').glob('*.ipynb') if not p.name.startswith('_'))
    chosen = [p for p in nbs if not names or p.stem in names or p.name in names]
    failed = [p.name for p in chosen if subprocess.run([sys.executable, __file__, '--one', str(p)]).returncode]
    # In-process, so the tool works with the environment's python alone (no activated venv putting nbdev-clean on PATH)
    nbdev_clean()
    if failed: sys.exit(f'failed: {failed}')

def run_one(path:Path):
    "Run and save one notebook, in this process"
    ok = test_nb(path, skip_flags=get_config().tst_flags.split(), save=True, do_print=True)[0]
    if ok: settle_progress_bars(path)
    sys.exit(0 if ok else 1)

if __name__ == '__main__':
    if sys.argv[1:2] == ['--one']: run_one(Path(sys.argv[2]))
    else: main(sys.argv[1:])
