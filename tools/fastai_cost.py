#!/usr/bin/env python
"""What installing fastai adds to an environment that has what `lsuv_init` needs (torch, fastcore, fastprogress, pandas,
matplotlib): the packages only fastai pulls in, and their size on disk. Run in an environment with fastai installed."""
import os, re
from importlib.metadata import distribution, PackageNotFoundError

def requires(name:str) -> list:
    "The packages `name` needs (its extras left out); none if it is not installed here"
    try: reqs = distribution(name).requires or []
    except PackageNotFoundError: return []
    return [re.split(r'[ ;<>=!~\[(]', r, maxsplit=1)[0].lower().replace('_', '-') for r in reqs if 'extra ==' not in r]

def closure(roots) -> set:
    seen, todo = set(), list(roots)
    while todo:
        if (n := todo.pop()) not in seen: seen.add(n); todo += requires(n)
    return seen

def size(name:str) -> int:
    try: files = distribution(name).files or []
    except PackageNotFoundError: return 0
    return sum(os.path.getsize(p) for f in files if os.path.isfile(p := f.locate()))

if __name__ == '__main__':
    extra = closure(['fastai']) - closure(['torch', 'fastcore', 'fastprogress', 'pandas', 'matplotlib'])
    sizes = sorted(((size(n), n) for n in extra), reverse=True)
    print(f'fastai adds {len(extra)} packages, {sum(s for s, _ in sizes)/2**20:.0f} MiB:',
          ', '.join(f'{n} {s/2**20:.0f}' for s, n in sizes if s >= 2**20))
