"""Reproduction of the FCPO table (Ge et al., WSDM 2021, Table 2), the accuracy–fairness front and the
long-term fairness check: :mod:`~fcpo.reproduction.grid` (what to run, :func:`run_job`),
:mod:`~fcpo.reproduction.dispatch` (process pool or Ray) and :mod:`~fcpo.reproduction.report`
(rows, tables, checks, plots)."""
from fcpo.reproduction.dispatch import GridRun, JobFailure, default_out, dispatch, grid_digest, run_grid
from fcpo.reproduction.grid import (CONSTRAINED_METHODS, FRONT_ALPHAS, FRONT_ITERATIONS, FRONT_METHODS,
                                    FRONT_OVERRIDES, JOB_COST_ML100K, LAGRANGIAN_ROWS, PAPER_ML1M, PRESETS,
                                    RANKER_METHODS, RL_METHODS, GridSpec, job_config, job_name, job_seconds, run_job)
from fcpo.reproduction.report import (aggregate, checks, constraint_view, front_checks, front_long_term_rows,
                                      front_markdown, front_rows, label, long_term_rows, markdown_table, plot_front,
                                      plot_front_long_term, plot_long_term, plot_lorenz, plot_tradeoff,
                                      write_front_report, write_report)

__all__ = ["GridRun", "JobFailure", "default_out", "grid_digest", "dispatch", "run_grid", "CONSTRAINED_METHODS", "FRONT_ALPHAS", "FRONT_ITERATIONS", "FRONT_METHODS",
           "FRONT_OVERRIDES", "JOB_COST_ML100K", "LAGRANGIAN_ROWS", "PAPER_ML1M", "PRESETS", "RANKER_METHODS",
           "RL_METHODS", "GridSpec", "job_config", "job_name", "job_seconds", "run_job", "aggregate", "checks",
           "constraint_view", "front_checks", "front_long_term_rows", "front_markdown", "front_rows", "label",
           "long_term_rows", "markdown_table", "plot_front", "plot_front_long_term", "plot_long_term", "plot_lorenz",
           "plot_tradeoff", "write_front_report", "write_report"]
