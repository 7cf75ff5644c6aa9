"""Slices as Slurm jobs: the site file's [slurm] table, argv-only commands and their parsers, the
client that runs them, the job, the form's free counts from sinfo, the reconcile against sacct,
batchspawner's API guard, and SlurmSliceSpawner."""
