"""Slicehub: JupyterHub for a GPU supercomputing centre.

One import package, in rooms that say what varies (docs/architecture.md):

- `slicehub.common`: what the hub side and the notebook side both need, and nothing else
  imports from Slicehub: the slice catalogue, the `SLICEHUB_*` environment contract, the quota
  client, the clock, money.
- `slicehub.spawners`: the spawn form and its options, where a slice comes from (`local/`, the
  allocator on one machine; `slurm/`, a batch cluster), and the ledger hold both spawners use.
- `slicehub.quota`: the subsidy ledger and the hub-managed quota service.
- `slicehub.extensions`: the notebook side (the GPU kernel, the Jupyter server extension).

Importing any of them has no side effects.
"""

__version__ = "0.1.0"
