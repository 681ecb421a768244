"README.md is written by hand (Quarto, which nbdev-readme needs, cannot be installed), so it must not drift from nbs/index.ipynb."
import json, re
from pathlib import Path

root = Path(__file__).parents[1]
readme = (root/'README.md').read_text()
# README's set-up section replaces the notebook's short install note: the fresh-machine commands belong only to README
readme_only = {'Install'}

def index_sections():
    cells = json.loads((root/'nbs/index.ipynb').read_text())['cells']
    text = '\n\n'.join(''.join(c['source']) for c in cells if c['cell_type'] == 'markdown')
    for s in re.split(r'^(?=## )', text, flags=re.M)[1:]:
        heading = s.splitlines()[0][3:]
        if heading not in readme_only: yield heading, s.strip()

def test_index_sections_are_in_readme():
    sections = dict(index_sections())
    assert {'Use', 'The MNIST demo', 'Benchmarks', 'Documentation'} <= set(sections)
    stale = [h for h, s in sections.items() if s not in readme]
    assert not stale, f'README.md differs from nbs/index.ipynb in sections {stale}: copy the notebook text into README.md'

def test_index_code_is_in_readme():
    cells = json.loads((root/'nbs/index.ipynb').read_text())['cells']
    code = [''.join(c['source']) for c in cells if c['cell_type'] == 'code' and not ''.join(c['source']).startswith('assert')]
    assert code and all(c in readme for c in code), 'a code cell of nbs/index.ipynb is not shown in README.md'
