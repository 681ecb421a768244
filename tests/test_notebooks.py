"""Every notebook in nbs/ runs clean through nbdev's own test runner (the notebooks are the tests of record), and is saved
with the outputs of its examples (the notebooks are the documentation: a reader must see what each example shows)."""
import json, re, shutil
from pathlib import Path
import pytest
from nbdev.config import get_config
from nbdev.test import test_nb as run_notebook  # aliased so pytest does not collect it

cfg = get_config(Path(__file__).parents[1])
notebooks = sorted(p for p in cfg.path('nbs_path').glob('*.ipynb') if not p.name.startswith('_'))

def test_found_notebooks(): assert len(notebooks) >= 4, notebooks

def with_output(nb:Path) -> set:
    "Ids of the code cells of `nb` that have outputs"
    return {c['id'] for c in json.loads(nb.read_text())['cells'] if c['cell_type'] == 'code' and c.get('outputs')}

@pytest.mark.parametrize('nb', notebooks, ids=[p.name for p in notebooks])
def test_notebook_runs_and_is_saved_with_its_outputs(nb, tmp_path):
    "Run a copy (files it writes stay out of nbs/); every cell that shows something when run must show it as saved"
    copy = shutil.copy(nb, tmp_path/nb.name)
    ok, secs = run_notebook(copy, skip_flags=cfg.tst_flags.split(), showerr=True, save=True)
    assert ok, f'{nb.name} failed (traceback above)'
    lost = with_output(copy) - with_output(nb)
    assert not lost, f'{nb.name}: cells {sorted(lost)} show something but are saved without it: run tools/run_notebooks.py'

@pytest.mark.parametrize('nb', notebooks, ids=[p.name for p in notebooks])
def test_saved_outputs_show_no_machine_paths(nb):
    outputs = json.dumps([c.get('outputs', []) for c in json.loads(nb.read_text())['cells']])
    assert not any(p in outputs for p in ('/work/', '/tmp/', '/home/', '/root/')), f'{nb.name}: an output shows a machine path'

# what draws a figure in these notebooks: a report's `plot`/`plot_hist`, the demo's `plot_results`, `lr_find`, pyplot
_draws = re.compile(r'plot\w*\(|lr_find\(|plt\.\w+\(|\.show\w*\(|imshow\(')

@pytest.mark.parametrize('nb', notebooks, ids=[p.name for p in notebooks])
def test_no_cell_shows_a_figure_it_did_not_draw(nb):
    "A figure left open by an earlier cell or notebook, shown again by a later one, is a figure the reader cannot explain"
    for c in json.loads(nb.read_text())['cells']:
        if c['cell_type'] != 'code': continue
        shown = sum('image/png' in o.get('data', {}) for o in c.get('outputs', []))
        drawn = len(_draws.findall(''.join(c['source'])))
        assert shown <= drawn, f"{nb.name}: cell {c['id']} shows {shown} figures but draws {drawn}: run tools/run_notebooks.py"
