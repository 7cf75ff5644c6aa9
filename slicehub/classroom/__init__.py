"""The classroom service (`python -m slicehub.classroom`, the hub's managed service
"classroom"): a class's servers pre-warmed before its window, the unclaimed stopped, and on
Slurm each window an advance reservation. See `slicehub.classroom.service`; the rules of
pre-warming and who pays are the quota service's (`slicehub.quota.prewarm`).

It talks to the quota service and the hub through their HTTP APIs only, and to Slurm through
the spawners' own Slurm code (`slicehub.spawners.slurm.reservation`)."""
