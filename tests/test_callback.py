"""`LSUVCallback` behaviours a fastai user depends on, tested against the exported package (01_callback shows the same
as documentation): when LSUV runs and when it must not, what batch it sees, and that drawing that batch changes nothing
about the training that follows."""
import tempfile, warnings
import pytest
import torch
import torch.utils.data as tud
from torch import nn
from fastai.basics import (Learner, Datasets, DataLoader, DataLoaders, ItemGetter, Callback, CrossEntropyLossFlat,
                           set_seed)
from lsuv_callback.callback import LSUVCallback, draw_batches
from lsuv_callback.core import lsuv_done, lsuv_init, LSUVWarning
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

def test_validate_and_get_preds_before_fit_leave_the_model_alone():
    learn = learner()
    before = params(learn)
    with learn.no_bar(): learn.validate(); learn.get_preds()
    assert_same(params(learn), before)
    assert not lsuv_done(learn.model)

def test_second_fit_does_not_rerun_lsuv():
    "LSUV on a model that has trained would move its weights again: the second fit (lr 0) must not change anything"
    learn = learner()
    fit(learn)
    first = learn.lsuv_report
    trained = params(learn)
    fit(learn, lr=0.)
    assert learn.lsuv_report is first
    assert_same(params(learn), trained)

def test_the_init_is_lsuv_init_on_the_first_training_batch():
    learn = learner()
    xb, = draw_batches(learn.dls.train)
    reference = course_cnn()
    lsuv_init(reference, xb)
    fit(learn, lr=0.)
    assert_same(params(learn), list(reference.parameters()))

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
    "Same seed, same shuffled order and the same random numbers after the fit, with the callback or without"
    order_with, rng_with = first_epoch(True)
    order_without, rng_without = first_epoch(False)
    assert torch.equal(order_with, order_without)
    assert torch.equal(rng_with, rng_without)

def test_draw_batches_restores_a_torch_loaders_rng():
    "A shuffled torch DataLoader draws from the global RNG"
    dl = tud.DataLoader(tud.TensorDataset(torch.randn(32, 3), torch.arange(32)), batch_size=8, shuffle=True)
    torch.manual_seed(0)
    draw_batches(dl)
    after = torch.randn(3)
    torch.manual_seed(0)
    assert torch.equal(after, torch.randn(3))

class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.head = nn.Linear(3, 8), nn.Linear(2, 8), nn.Linear(8, 4)
    def forward(self, x, z): return self.head(torch.relu(self.a(x) + self.b(z)))

def test_target_of_a_tensordataset_loader_is_not_an_input():
    "A plain fastai DataLoader over a TensorDataset has no `n_inp`: the last tensor is the target, as `Learner` splits it"
    ds = tud.TensorDataset(torch.randn(32, 3), torch.randn(32, 2), torch.randint(0, 4, (32,)))
    dls = DataLoaders(DataLoader(ds, bs=8), DataLoader(ds, bs=8))
    torch.manual_seed(0)
    learn = Learner(dls, TwoInputs(), loss_func=CrossEntropyLossFlat(), cbs=LSUVCallback(show=False))
    fit(learn)
    assert learn.lsuv_report.batch['shapes'] == [(8, 3), (8, 2)]

def test_n_batches_pools_that_many_batches():
    learn = learner(n_batches=2)
    xbs = draw_batches(learn.dls.train, 2)
    reference = course_cnn()
    lsuv_init(reference, torch.cat([xb for xb, in xbs]))
    fit(learn, lr=0.)
    assert learn.lsuv_report.batch['shapes'] == [(32, 1, 28, 28)]
    assert_same(params(learn), list(reference.parameters()))

def trained_state():
    learn = learner(seed=5)
    fit(learn)
    return learn.model.state_dict(), params(learn)

def test_weights_loaded_with_load_state_dict_are_kept():
    state, loaded = trained_state()
    learn = learner(seed=1)
    learn.model.load_state_dict(state)
    fit(learn, lr=0.)
    assert_same(params(learn), loaded)

def test_weights_loaded_with_learn_load_are_kept_when_the_callback_joins_at_fit():
    learn = learner(seed=5)
    fit(learn)
    learn.save('trained')
    loaded = params(learn)
    learn2 = learner(cbs=[], seed=2)
    learn2.path = learn.path
    learn2.load('trained')
    fit(learn2, lr=0., cbs=LSUVCallback(show=False))
    assert_same(params(learn2), loaded)

def collab(**kwargs):
    import numpy as np, pandas as pd
    from fastai.collab import CollabDataLoaders, collab_learner
    rng = np.random.default_rng(0)
    ratings = pd.DataFrame(dict(user=rng.integers(0, 20, 200), item=rng.integers(0, 30, 200), rating=rng.uniform(0, 5, 200)))
    return collab_learner(CollabDataLoaders.from_df(ratings, bs=32, seed=0), n_factors=8, y_range=(0, 5.5),
                          cbs=LSUVCallback(show=False, **kwargs))

def test_a_model_with_nothing_to_initialise_trains_with_one_warning():
    "fastai's default collab_learner (embeddings only): the fit goes on from the model's own init"
    from lsuv_callback.core import LSUVWarning
    learn = collab()
    with learn.no_bar(), learn.no_logging(), warnings.catch_warnings(record=True) as ws:
        warnings.simplefilter('always')
        learn.fit(2, 1e-2)
    msgs = [str(w.message) for w in ws if issubclass(w.category, LSUVWarning)]
    assert len(msgs) == 1 and 'no unit found' in msgs[0], msgs
    assert len(learn.recorder.values) == 2, 'both epochs trained'

def test_units_named_in_modules_must_be_initialised():
    from lsuv_callback.core import LSUVError
    learn = collab(modules=lambda m: False)
    with pytest.raises(LSUVError, match='no unit found'): fit(learn)

def test_lsuv_report_is_there_before_any_fit():
    "`learn.lsuv_report` and `learn.lsuv_stats` exist from the start (None), and hold the report once LSUV ran"
    learn = learner()
    assert learn.lsuv_report is None and learn.lsuv_stats is None
    fit(learn)
    assert learn.lsuv_report.ok and len(learn.lsuv_stats) == len(learn.lsuv_report.units)

def test_the_report_lr_find_could_not_log_is_logged_at_the_next_fit():
    "lr_find switches logging off while LSUV runs inside it: the report is logged when the next fit starts, once"
    learn = learner(cbs=[LSUVCallback()])
    logged = []
    learn.logger = logged.append
    with learn.no_bar(), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        learn.lr_find(num_it=4, show_plot=False)
        assert learn.lsuv_report is not None and not any('LSUV:' in str(l) for l in logged)
        learn.fit(1, 0.)
        learn.fit(1, 0.)
    assert [l for l in logged if str(l).startswith('LSUV:')] == [str(learn.lsuv_report)]

def test_the_public_api_imports_from_the_package_and_from_all():
    import lsuv_callback
    from lsuv_callback import lsuv_init as top_init, LSUVCallback as top_cb
    assert top_init is lsuv_init and top_cb is LSUVCallback
    ns = {}
    exec('from lsuv_callback.all import *', ns)
    assert {'lsuv_init', 'LSUVCallback', 'LSUVReport', 'unit_stats', 'cnn_07a', 'find_units'} <= set(ns)
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
    assert f"{len(report.left_alone['frozen'])} left alone (frozen)" in report.summary()
    assert [u.name for u in report.units] == ['1.4', '1.8'] # the head's two linear layers
    for p, q in zip(body, learn.model[0].parameters()): assert torch.equal(p, q)
