"The package is exactly what `nbdev-export` makes of the notebooks: nobody edits lsuv_callback/ by hand."
import filecmp, shutil, subprocess, sys
from pathlib import Path

root = Path(__file__).parents[1]

def _py_files(d): return sorted(p.relative_to(d) for p in d.rglob('*.py') if '__pycache__' not in p.parts)

def test_export_in_sync(tmp_path):
    for f in ('pyproject.toml', 'settings.ini', 'README.md'): shutil.copy(root/f, tmp_path/f)
    shutil.copytree(root/'nbs', tmp_path/'nbs')
    # Only __init__.py (it holds the version) is carried over, so a stale module that no notebook exports shows up too
    (tmp_path/'lsuv_callback').mkdir()
    shutil.copy(root/'lsuv_callback/__init__.py', tmp_path/'lsuv_callback/__init__.py')
    exporter = Path(sys.executable).with_name('nbdev-export')
    subprocess.run([str(exporter)], cwd=tmp_path, check=True, capture_output=True)
    ours, exported = root/'lsuv_callback', tmp_path/'lsuv_callback'
    assert _py_files(ours) == _py_files(exported), 'nbdev-export adds or removes modules: run nbdev-export and commit'
    differ = [str(f) for f in _py_files(ours) if not filecmp.cmp(ours/f, exported/f, shallow=False)]
    assert not differ, f'lsuv_callback/ is out of sync with nbs/ in {differ}: run nbdev-export and commit'
