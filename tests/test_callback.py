"""`LSUVCallback` behaviours a fastai user depends on that 01_callback does not test, against the exported package: a
whole fit with the callback keeps the epoch order and the global RNG, a two-input model fits from a plain `DataLoader`,
`n_batches` pools exactly those batches, `load_state_dict` on `learn.model` keeps the loaded weights, a model with
nothing to initialise still trains every epoch, the report `lr_find` could not log is logged once, the hand-written
package `__init__`, and `vision_learner`'s frozen body. What 01_callback documents (once per model, the init is
`lsuv_init`'s, `draw_batches`, `learn.load`, the report, `modules=`) is tested there only."""
import tempfile, warnings
import pytest
import torch
import torch.utils.data as tud
from torch import nn
from fastai.basics import (Learner, Datasets, DataLoader, DataLoaders, ItemGetter, Callback, CrossEntropyLossFlat,
                           set_seed)
from lsuv_callback.callback import LSUVCallback, draw_batches
from lsuv_callback.core import lsuv_init, LSUVWarning
from lsuv_callback.layers import cnn_07a

torch.set_num_threads(1)

def synth_dls(n=96, bs=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)
    dsets = Datasets([(x[i], y[i]) for i in range(n)], tfms=[[ItemGetter(0)], [ItemGetter(1)]],
                     splits=[range(n*3//4), range(n*3//4, n)])
    return dsets.dataloaders(bs=bs, device='cpu', num_workers=0)

def course_cnn(seed=0):
    torch.manual_seed(seed)
    return cnn_07a(nfs=(4, 8, 8), leak=0.1, sub=0.4, maxv=6.)

def learner(cbs='lsuv', seed=0, dls=None, **kwargs):
    cbs = [LSUVCallback(show=False, **kwargs)] if cbs == 'lsuv' else cbs
    return Learner(dls or synth_dls(), course_cnn(seed), loss_func=CrossEntropyLossFlat(), cbs=cbs, path=tempfile.mkdtemp())

def params(learn): return [p.detach().clone() for p in learn.model.parameters()]

def fit(learn, n=1, lr=1e-2, **kwargs):
    with learn.no_bar(), learn.no_logging(), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        learn.fit(n, lr, **kwargs)

def assert_same(a, b):
    assert len(a) == len(b) and all(torch.equal(p, q) for p, q in zip(a, b))

class RecordTargets(Callback):
    def before_fit(self): self.seen = []
    def after_batch(self):
        if self.training: self.seen.append(self.learn.yb[0].clone())

def first_epoch(with_lsuv):
    rec = RecordTargets()
    set_seed(1)  # before the DataLoaders: each seeds its own shuffling generator from the global RNG
    learn = learner(cbs=[rec] + ([LSUVCallback(show=False)] if with_lsuv else []))
    fit(learn, lr=0.)
    return torch.cat(rec.seen), torch.randn(3)

def test_drawing_the_batch_changes_neither_the_epoch_order_nor_the_global_rng():
    """Same seed, same shuffled order and the same random numbers after the fit, with the callback or without
    (01_callback checks `draw_batches` on its own; this is a whole fit, the draw inside `before_fit`)"""
    order_with, rng_with = first_epoch(True)
    order_without, rng_without = first_epoch(False)
    assert torch.equal(order_with, order_without)
    assert torch.equal(rng_with, rng_without)

class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.head = nn.Linear(3, 8), nn.Linear(2, 8), nn.Linear(8, 4)
    def forward(self, x, z): return self.head(torch.relu(self.a(x) + self.b(z)))

def test_target_of_a_tensordataset_loader_is_not_an_input():
    """A plain fastai DataLoader over a TensorDataset has no `n_inp`: the last tensor is the target, as `Learner` splits it
    (01_callback checks `draw_batches`' split; here a model that takes both inputs is fitted through the callback)"""
    ds = tud.TensorDataset(torch.randn(32, 3), torch.randn(32, 2), torch.randint(0, 4, (32,)))
    dls = DataLoaders(DataLoader(ds, bs=8), DataLoader(ds, bs=8))
    torch.manual_seed(0)
    learn = Learner(dls, TwoInputs(), loss_func=CrossEntropyLossFlat(), cbs=LSUVCallback(show=False))
    fit(learn)
    assert learn.lsuv_report.batch['shapes'] == [(8, 3), (8, 2)]

def test_n_batches_pools_that_many_batches():
    "The callback's init is `lsuv_init` on its batches, pooled, bit for bit (01_callback checks one batch, to 1e-6)"
    learn = learner(n_batches=2)
    xbs = draw_batches(learn.dls.train, 2)
    reference = course_cnn()
    lsuv_init(reference, torch.cat([xb for xb, in xbs]))
    fit(learn, lr=0.)
    assert_same(params(learn), list(reference.parameters()))

def trained_state():
    learn = learner(seed=5)
    fit(learn)
    return learn.model.state_dict(), params(learn)

def test_weights_loaded_with_load_state_dict_are_kept():
    "Loaded into `learn.model` by torch's own `load_state_dict` once the Learner exists (01_callback: before it, and by `learn.load`)"
    state, loaded = trained_state()
    learn = learner(seed=1)
    learn.model.load_state_dict(state)
    fit(learn, lr=0.)
    assert_same(params(learn), loaded)

def collab():
    import numpy as np, pandas as pd
    from fastai.collab import CollabDataLoaders, collab_learner
    rng = np.random.default_rng(0)
    ratings = pd.DataFrame(dict(user=rng.integers(0, 20, 200), item=rng.integers(0, 30, 200), rating=rng.uniform(0, 5, 200)))
    return collab_learner(CollabDataLoaders.from_df(ratings, bs=32, seed=0), n_factors=8, y_range=(0, 5.5),
                          cbs=LSUVCallback(show=False))

def test_a_model_with_nothing_to_initialise_trains_every_epoch():
    "fastai's default collab_learner (embeddings only): 01_callback checks its one warning; the fit must go on, not stop quietly"
    learn = collab()
    fit(learn, 2)
    assert len(learn.recorder.values) == 2, 'both epochs trained'

def test_the_report_lr_find_could_not_log_is_logged_once():
    "01_callback shows it logged when the fit after `lr_find` starts; it is logged there only, neither before nor again"
    learn = learner(cbs=[LSUVCallback()])
    logged = []
    learn.logger = logged.append
    with learn.no_bar(), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        learn.lr_find(num_it=4, show_plot=False)
        learn.fit(1, 0.)
        learn.fit(1, 0.)
    assert [l for l in logged if str(l).startswith('LSUV:')] == [str(learn.lsuv_report)]

def test_the_package_gives_lsuv_init_and_refuses_other_names():
    "The hand-written `lsuv_callback/__init__.py` (04_all tests `lsuv_callback.all` and the lazy `LSUVCallback`)"
    import lsuv_callback
    assert lsuv_callback.lsuv_init is lsuv_init
    with pytest.raises(AttributeError, match='no attribute'): lsuv_callback.not_a_name

def test_a_frozen_pretrained_body_is_reported_not_warned():
    "vision_learner freezes its body: LSUV leaves it alone as expected, says so in the report, and warns about nothing"
    from fastai.vision.learner import vision_learner
    from torchvision.models import resnet18
    set_seed(0)
    learn = vision_learner(synth_dls(), resnet18, n_in=1, n_out=10, pretrained=False, loss_func=CrossEntropyLossFlat(),
                           cbs=LSUVCallback(show=False), path=tempfile.mkdtemp())
    learn.freeze()
    body = [p.detach().clone() for p in learn.model[0].parameters()]
    with learn.no_bar(), learn.no_logging(), warnings.catch_warnings(record=True) as ws:
        warnings.simplefilter('always')
        learn.fit(1, 0.)
    assert not [w for w in ws if issubclass(w.category, LSUVWarning)], [str(w.message) for w in ws]
    report = learn.lsuv_report
    assert report.ok and len(report.left_alone['frozen']) == 20, report.left_alone
    assert "20 left alone (frozen: ['0.0', '0.4.0.conv1', '0.4.0.conv2'," in report.summary(), report.summary()
    assert [u.name for u in report.units] == ['1.4', '1.8'] # the head's two linear layers
    for p, q in zip(body, learn.model[0].parameters()): assert torch.equal(p, q)

def test_the_callback_makes_no_float64_where_the_device_has_none(monkeypatch):
    "fastai picks MPS on a Mac: the callback's LSUV (its batch drawn, the model initialised) refuses float64 as MPS would"
    from lsuv_testutils import RefusesFloat64, as_on_mps
    as_on_mps(monkeypatch)
    learn = learner()
    with learn.no_bar(), RefusesFloat64(): report = learn.lsuv(show=False)
    assert report.ok and report.units[0].hist_after is not None
