"""Benchmarks of `lsuv_callback`'s `lsuv_init`, run from the repository's root:

- `python -m bench`: cost, precision, depth, torch threads and memory against the LSUV methods it replaces (`__main__.py`);
- `python -m bench.stock`: stock torchvision, timm and Hugging Face models (`stock.py`);
- `python -m bench.distributed`: one process against two (`distributed.py`).

Each writes its tables to bench/results. Nothing is imported here: a fresh measuring process (`python -m bench.memory`)
imports this package first."""
