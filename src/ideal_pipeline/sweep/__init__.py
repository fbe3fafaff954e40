"""Sweeps (seeds x budgets x victims x data sets x methods) on a Dask cluster: `ideal-sweep SPEC.yaml`.

Each trial is a real `kedro run` in a workspace of its own (a clone of the repository at the sweep's
commit, parameters written into conf/base as `dvc exp run -S` writes them), saved as a DVC experiment
and fetched into the repository, and merged into the run record: `dvc exp show` and
`python -m ideal_pipeline.reporting --dvc` see it. docs/sweeps.md has the spec, the clusters and the faults.

- `spec`: the YAML spec and the trials it expands to;
- `trial`: one trial, as the task a worker runs;
- `workspace`: a trial's workspace and the commands run in it;
- `cluster`: a running Dask cluster, or an embedded one on this machine;
- `driver`: submitting, watching and collecting the trials; `progress`: what it prints;
- `cli`: the command line.

Dask is imported only by `cluster` (and by the workers): the rest reads a spec without it.
"""
