"Every notebook in nbs/ runs clean through nbdev's own test runner: the notebooks are the tests of record."
from pathlib import Path
import pytest
from nbdev.config import get_config
from nbdev.test import test_nb as run_notebook  # aliased so pytest does not collect it

cfg = get_config(Path(__file__).parents[1])
notebooks = sorted(p for p in cfg.path('nbs_path').glob('*.ipynb') if not p.name.startswith('_'))

def test_found_notebooks(): assert len(notebooks) >= 4, notebooks

@pytest.mark.parametrize('nb', notebooks, ids=[p.name for p in notebooks])
def test_notebook(nb):
    ok, secs = run_notebook(nb, skip_flags=cfg.tst_flags.split(), showerr=True)
    assert ok, f'{nb.name} failed (traceback above)'
