"""Slicehub's notebook-side extensions.

- `slicehub.extensions.kernel`: the IPython extension of the "Python 3 (GPU: CuPy + Dask-CUDA)"
  kernel:
  a Dask cluster and an array module bound to the slice (docs/kernels.md), built from
  `slice_env` (what the slice is), `gpu` (what CUDA shows), `cluster_plan` (what to start, how
  the memory is shared) and `session` (memory, time and money left; `%slicehub`); the cluster
  starts on a thread while the first cells run (`background`), and each worker ignores the
  SIGINT meant for a cell (`worker_preload`).
- `slicehub.extensions.server`: the Jupyter server extension behind the JupyterLab status bar
  (docs/notebook-ui.md), and the activity reading idle parking decides on (`activity`, with the
  kernels' Dask heartbeats from `heartbeat` and the GPU signal from `gpu_signal`).
- `slicehub.extensions.warm_kernel`: the server's kernel manager, with one warm kernel started
  ahead on a pre-warmed class server (`SLICEHUB_PREWARM=1`) and handed to the first notebook.

The single-user side imports only these modules, `slicehub.common.clock`, `slicehub.common.money`,
`slicehub.common.catalogue` (standard library only) and `slicehub.common.quota_client` (tornado and
jupyterhub, both in the single-user pins), so the single-user image installs the slicehub
package without the hub's dependencies.
"""
