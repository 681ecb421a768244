"README.md is written by hand (Quarto, which nbdev-readme needs, cannot be installed), so it must not drift from nbs/index.ipynb."
import json, re
from pathlib import Path

root = Path(__file__).parents[1]
readme = (root/'README.md').read_text()
# README's set-up section replaces the notebook's short install note: the fresh-machine commands belong only to README
readme_only = {'Install'}

def index_sections():
    "Each `## ` section of nbs/index.ipynb as its heading and its markdown cells (README shows the code cells between them)"
    cells = json.loads((root/'nbs/index.ipynb').read_text())['cells']
    sections, heading = {}, None
    for c in cells:
        if c['cell_type'] != 'markdown': continue
        for part in re.split(r'^(?=## )', ''.join(c['source']), flags=re.M):
            if part.startswith('## '): heading = part.splitlines()[0][3:]
            if heading not in readme_only and part.strip(): sections.setdefault(heading, []).append(part.strip())
    return sections

def test_index_sections_are_in_readme():
    sections = index_sections()
    assert {'Use', 'The MNIST demo', 'Benchmarks', 'Documentation'} <= set(sections)
    stale = [h for h, parts in sections.items() if not all(p in readme for p in parts)]
    assert not stale, f'README.md differs from nbs/index.ipynb in sections {stale}: copy the notebook text into README.md'

def test_index_code_is_in_readme():
    cells = json.loads((root/'nbs/index.ipynb').read_text())['cells']
    code = [''.join(c['source']) for c in cells if c['cell_type'] == 'code' and not ''.join(c['source']).startswith('assert')]
    assert code and all(c in readme for c in code), 'a code cell of nbs/index.ipynb is not shown in README.md'
