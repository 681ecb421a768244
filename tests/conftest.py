"""`device`: the devices the engine's tests run on, the CPU always, CUDA and Apple's MPS where this machine has them (CI
has neither: their variants are skipped there, and `pytest -k "cuda or nccl"` runs them on a GPU machine)."""
import pytest
import torch

DEVICES = ['cpu',
           pytest.param('cuda', marks=pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')),
           pytest.param('mps', marks=pytest.mark.skipif(not torch.backends.mps.is_available(), reason='needs an Apple MPS device'))]

@pytest.fixture(params=DEVICES)
def device(request): return request.param

def on(device, x):
    "A model, a tensor, or a dict of tensors (a batch of keyword arguments) on `device`"
    return {k: v.to(device) for k, v in x.items()} if isinstance(x, dict) else x.to(device)
