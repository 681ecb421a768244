"pyproject.toml and settings.ini describe the same package: one truth, no drift."
import configparser, re, tomllib
from pathlib import Path

root = Path(__file__).parents[1]
pyproject = tomllib.loads((root/'pyproject.toml').read_text())
project = pyproject['project']
ini = configparser.ConfigParser()
ini.read(root/'settings.ini')
settings = ini['DEFAULT']

def package_version():
    "The version in `lsuv_callback/__init__.py`, read without importing the package"
    return re.search(r'^__version__\s*=\s*[\'"]([^\'"]+)', (root/'lsuv_callback/__init__.py').read_text(), re.M)[1]

def test_version_agrees():
    assert project['dynamic'] == ['version']
    assert pyproject['tool']['setuptools']['dynamic']['version'] == {'attr': 'lsuv_callback.__version__'}
    assert settings['version'] == package_version(), 'settings.ini version differs from lsuv_callback.__version__'

def test_metadata_agrees():
    assert settings['lib_name'] == project['name']
    assert settings['description'] == project['description']
    assert settings['license'] == project['license']
    assert project['requires-python'] == '>=' + settings['min_python']

def test_requirements_agree():
    assert settings['requirements'].split() == project['dependencies']
    assert settings['dev_requirements'].split() == project['optional-dependencies']['dev']

def test_paths_and_scripts_agree():
    nbdev = pyproject['tool']['nbdev']
    assert settings['lib_path'] == nbdev['lib_path'] and settings['nbs_path'] == nbdev['nbs_path']
    assert settings.getboolean('update_pyproject') is False and nbdev['update_pyproject'] is False
    name, target = settings['console_scripts'].split('=')
    assert project['scripts'] == {name: target}
