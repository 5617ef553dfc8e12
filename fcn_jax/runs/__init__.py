"""Experiment runs: many training runs, reused or launched, and their reports.

- ``rundir``: :class:`RunDir`, one run's files, and the one rule for reusing a finished run.
- ``launch``: start a given command per run, as local processes (one accelerator each) or as
  a Slurm array.
- ``grid``: sweep grids (files, ``--set``) expanded × seeds into runs.
- ``sweep``: a sweep's plan on disk, its runs launched after the reuse rule.
- ``sweep_results``: a sweep's results.csv, results.png and table.
- ``compare``: the training-size policy comparison, its runs in this process.
- ``report``: the comparison's findings, report.md, compare.json and plots.
- ``stats``: mean ± std over seeds, their text, size order, machine info.
"""
