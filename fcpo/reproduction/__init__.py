"""Reproduction of the FCPO table (Ge et al., WSDM 2021, Table 2), the accuracy–fairness front and the
long-term fairness check: :mod:`~fcpo.reproduction.grid` (what to run, :func:`run_job`),
:mod:`~fcpo.reproduction.dispatch` (process pool or Ray) and :mod:`~fcpo.reproduction.report`
(rows, tables, checks, plots)."""
from fcpo.reproduction.dispatch import dispatch, run_grid
from fcpo.reproduction.grid import (LAGRANGIAN_ROWS, PAPER_ML1M, RANKER_METHODS, RL_METHODS, GridSpec, job_config,
                                    job_name, run_job)
from fcpo.reproduction.report import (aggregate, checks, label, long_term_rows, markdown_table, plot_long_term,
                                      plot_lorenz, plot_tradeoff, write_report)

__all__ = ["dispatch", "run_grid", "LAGRANGIAN_ROWS", "PAPER_ML1M", "RANKER_METHODS", "RL_METHODS", "GridSpec",
           "job_config", "job_name", "run_job", "aggregate", "checks", "label", "long_term_rows", "markdown_table",
           "plot_long_term", "plot_lorenz", "plot_tradeoff", "write_report"]
