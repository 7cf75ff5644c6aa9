"""The idle culler with Slicehub's arbiter: `jupyterhub-idle-culler`, run by the hub as the
managed service "culler" (`python -m slicehub.culler`), with `cull_arbiter_hook` set to
`slicehub.culler.arbiter.Arbiter`.

The culler does what it does well: every check it lists the hub's ready servers (never one
still pending, e.g. queued in Slurm) and stops those its arbiter says to stop. The arbiter
replaces its one weak signal, the hub's `last_activity` (which an open JupyterLab tab keeps
fresh forever, and a silent busy kernel never refreshes), with the server's own reading of its
kernels, terminals, browser, Dask work and GPU (`slicehub.extensions.activity`), and leaves the
decision to the quota service, which knows the session's project, policy, warning and money
(`slicehub.quota.idle`). See docs/parking.md.
"""
