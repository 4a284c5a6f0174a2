"""Pure solvers for trust-region policy updates: CG, Fisher-vector products, CPO/TRPO, line search.

Nothing here knows about recommendation; see Achiam et al. (2017),
"Constrained Policy Optimization", sec. 6 and appendix 10.2.
"""
from fcpo.solvers.config import CPOConfig
from fcpo.solvers.conjugate_gradient import CGResult, conjugate_gradient
from fcpo.solvers.cpo import (
    CASE_FEASIBLE_BOUNDARY,
    CASE_INFEASIBLE_RECOVERABLE,
    CASE_INFEASIBLE_RECOVERY,
    CASE_INFEASIBLE_ZERO_COST_GRAD,
    CASE_TRPO,
    CASE_TRPO_ALL_FEASIBLE,
    CASE_TRPO_INACTIVE,
    CASE_TRPO_ZERO_COST_GRAD,
    CPO_CASES,
    FEASIBLE_CASES,
    Constraints,
    StepResult,
    UpdateResult,
    cpo_step,
    cpo_update,
    process_advantages,
    solve_cpo_dual,
    trpo_step,
    trpo_update,
)
from fcpo.solvers.fisher import fisher_vector_product, flat_grad, flat_params, set_flat_params
from fcpo.solvers.line_search import LineSearchResult, LineSearchTrial, backtracking_line_search

__all__ = [
    "CPOConfig",
    "CGResult",
    "conjugate_gradient",
    "fisher_vector_product",
    "flat_grad",
    "flat_params",
    "set_flat_params",
    "Constraints",
    "StepResult",
    "UpdateResult",
    "cpo_step",
    "trpo_step",
    "cpo_update",
    "trpo_update",
    "solve_cpo_dual",
    "process_advantages",
    "LineSearchResult",
    "LineSearchTrial",
    "backtracking_line_search",
    "CASE_TRPO",
    "CASE_TRPO_ZERO_COST_GRAD",
    "CASE_TRPO_ALL_FEASIBLE",
    "CASE_TRPO_INACTIVE",
    "CASE_FEASIBLE_BOUNDARY",
    "CASE_INFEASIBLE_RECOVERABLE",
    "CASE_INFEASIBLE_RECOVERY",
    "CASE_INFEASIBLE_ZERO_COST_GRAD",
    "CPO_CASES",
    "FEASIBLE_CASES",
]
