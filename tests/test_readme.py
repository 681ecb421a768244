"""README.md is written by hand (Quarto, which nbdev-readme needs, cannot be installed), so it must not drift from
nbs/index.ipynb; its links, and every notebook's, must lead somewhere; and its prose must not quote a table's numbers."""
import json, re
from pathlib import Path

root = Path(__file__).parents[1]
readme = (root/'README.md').read_text()
_link = re.compile(r'\]\(([^)\s]+)\)')

def _relative(target:str) -> bool: return not re.match(r'[a-z]+:|#', target)

def as_in_readme(text:str) -> str:
    "Text of nbs/index.ipynb with its relative links made relative to the repository's root, as README.md shows them"
    def fix(m):
        t = m.group(1)
        if not _relative(t): return m.group(0)
        return '](' + (t[len('../'):] if t.startswith('../') else 'nbs/' + t) + ')'
    return _link.sub(fix, text)

def index_sections():
    "Each `## ` section of nbs/index.ipynb as its heading and its markdown cells (README shows the code cells between them)"
    cells = json.loads((root/'nbs/index.ipynb').read_text())['cells']
    sections, heading = {}, None
    for c in cells:
        if c['cell_type'] != 'markdown': continue
        for part in re.split(r'^(?=## )', as_in_readme(''.join(c['source'])), flags=re.M):
            if part.startswith('## '): heading = part.splitlines()[0][3:]
            if part.strip(): sections.setdefault(heading, []).append(part.strip())
    return sections

def test_index_sections_are_in_readme():
    sections = index_sections()
    assert {'Install', 'Use', 'The MNIST demo', 'Benchmarks', 'Documentation', 'Citing'} <= set(sections)
    stale = [h for h, parts in sections.items() if not all(p in readme for p in parts)]
    assert not stale, f'README.md differs from nbs/index.ipynb in sections {stale}: copy the notebook text into README.md'

def test_index_code_is_in_readme():
    cells = json.loads((root/'nbs/index.ipynb').read_text())['cells']
    code = [''.join(c['source']) for c in cells if c['cell_type'] == 'code' and not ''.join(c['source']).startswith(('assert', '#| hide'))]
    assert len(code) >= 2 and all(c in readme for c in code), 'a code cell of nbs/index.ipynb is not shown in README.md'

def _markdown(path:Path) -> str:
    if path.suffix == '.md': return path.read_text()
    return '\n'.join(''.join(c['source']) for c in json.loads(path.read_text())['cells'] if c['cell_type'] == 'markdown')

def test_every_link_leads_somewhere_from_where_it_is_read():
    "README.md's links from the repository's root, each notebook's from nbs/"
    files = [root/'README.md', *sorted((root/'nbs').glob('*.ipynb'))]
    broken = [f'{f.name}: {t}' for f in files for t in _link.findall(_markdown(f))
              if _relative(t) and not (f.parent/t.split('#')[0]).exists()]
    assert not broken, broken

def _prose_and_tables(text:str) -> tuple[str, str]:
    "README's prose (without tables and code blocks) and its tables"
    text = re.sub(r'```.*?```', '', text, flags=re.S)
    lines = text.splitlines()
    return '\n'.join(l for l in lines if not l.startswith('|')), '\n'.join(l for l in lines if l.startswith('|'))

def test_prose_quotes_no_number_of_a_table():
    "A number measured into a table lives there only: prose that quoted it would go stale the day the table is rerun"
    prose, tables = _prose_and_tables(readme)
    numbers = set(re.findall(r'\d+\.\d+', tables))
    quoted = sorted(n for n in numbers if re.search(rf'(?<![\d.]){re.escape(n)}(?![\d])', prose))
    assert not quoted, f'README prose quotes numbers of its tables: {quoted}'
