"""Pure, vectorised recommendation metrics (numpy; no file I/O).

Conventions shared by every function
------------------------------------
**Recommendations** are an int array ``recommended`` of shape (n_users, K):
row u holds user u's item ids in rank order (column 0 = top). ``-1`` marks an
empty slot (a list shorter than K); empty slots are never hits, never
exposure, and never count as recommendations. ``k`` keeps the first ``k``
columns; ``k=None`` keeps all of them; a ``k`` larger than the list is allowed
(accuracy metrics then count the missing slots as misses).

**Relevance** is either a boolean matrix (n_users, n_items) or a ragged pair
``(indptr, items)`` in CSR layout (user u's relevant items are
``items[indptr[u]:indptr[u+1]]``); :func:`relevance_matrix` turns the pair into
the matrix. The relevant set is fixed for the call -- pass the test positives
as they were before the rollout (recall's denominator is their number).

**Per-user results**: functions that score users take ``reduce="mean"``
(a float: the mean over scored users) or ``reduce="none"`` (a float64 array,
one value per user, ``nan`` for a user that is not scored). Accuracy metrics
skip users without relevant items by default (``no_relevant="skip"``;
``"zero"`` scores them 0). A mean over zero scored users is ``nan``.

**Catalogue-level results** (Gini, coverage, DivRatio, ORRatio, MGU/DGU at
the default population level) are single floats. Exposure counts include
every item of the catalogue (``n_items``), zero-exposure items included. A
Gini index over all-zero exposure is defined as 0.

**Direction**: each docstring says whether higher or lower is better and
names its source; where sources disagree (three Gini conventions, F1 of
means vs mean of F1, MGU genre weighting) the variant is an explicit argument
or a separate function.

Modules
-------
``accuracy``   precision/recall/F1/NDCG/hit rate@K, MRR, :func:`relevance_matrix`.
``cutoffs``    the same accuracy metrics at many cut-offs (t * K, t = 1..L) in one pass.
``exposure``   exposure counts, Gini (FCPO, RecBole, Elliot), Lorenz curve,
               popularity rate, item coverage, tail percentage.
``diversity``  DivRatio, ORRatio, genre distributions, MGU@K, DGU@K (SPRec).
``candidates`` HR@1 and ValidRatio for candidate-list and text policies (S-DPO).
"""
from fcpo.metrics.accuracy import (
    f1_at_k,
    hit_rate_at_k,
    mrr,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
    relevance_matrix,
)
from fcpo.metrics.cutoffs import ACCURACY_METRICS, accuracy_at_cutoffs, accuracy_by_cutoff
from fcpo.metrics.candidates import hr_at_1, hr_at_1_text, text_choice, valid_ratio, valid_ratio_text
from fcpo.metrics.diversity import dgu_at_k, div_ratio, genre_distribution, mgu_at_k, or_ratio
from fcpo.metrics.exposure import (
    exposure_counts,
    gini_elliot_complement,
    gini_fcpo,
    gini_recbole,
    item_coverage,
    lorenz_curve,
    popularity_rate,
    tail_percentage,
)

__all__ = [
    # accuracy
    "relevance_matrix",
    "precision_at_k",
    "recall_at_k",
    "f1_at_k",
    "ndcg_at_k",
    "hit_rate_at_k",
    "mrr",
    # accuracy at many cut-offs
    "ACCURACY_METRICS",
    "accuracy_at_cutoffs",
    "accuracy_by_cutoff",
    # exposure
    "exposure_counts",
    "gini_fcpo",
    "gini_recbole",
    "gini_elliot_complement",
    "lorenz_curve",
    "popularity_rate",
    "item_coverage",
    "tail_percentage",
    # diversity
    "div_ratio",
    "or_ratio",
    "genre_distribution",
    "mgu_at_k",
    "dgu_at_k",
    # candidates
    "text_choice",
    "valid_ratio_text",
    "hr_at_1_text",
    "valid_ratio",
    "hr_at_1",
]

from fcpo.metrics.registry import METRICS, ListContext, list_metrics, register_metric, unregister_metric  # noqa: E402

__all__ += ["METRICS", "ListContext", "list_metrics", "register_metric", "unregister_metric"]
