"""Slicehub's notebook-side extensions.

- `extensions.kernel`: the IPython extension of the "Python 3 (GPU: CuPy + Dask-CUDA)" kernel:
  a Dask cluster and an array module bound to the slice (docs/kernels.md), built from
  `slice_env` (what the slice is), `gpu` (what CUDA shows), `cluster_plan` (what to start, how
  the memory is shared) and `session` (memory, time and money left; `%slicehub`).

The single-user side imports only these modules, `quota.clock`, `quota.money` and
`spawners.catalogue` (standard library only), so the single-user image installs the slicehub
package without the hub's dependencies.
"""
