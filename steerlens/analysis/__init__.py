"""Looking at a vector on prompts, without steering: which layer separates, where it fires, how strong it is.

:func:`separation_report` ranks layers by how well held-out pairs separate along each layer's
direction (what steering there does is measured by :func:`steerlens.evaluation.layer_report`);
:func:`token_projections` (and :func:`projections_html`) show the projection of every token; :func:`residual_norms` and :func:`relative_vector` put multipliers in units of
the residual stream's typical norm. :func:`probe_report` fits linear probes per layer
(difference of means, LDA, logistic) and scores them on held-out pairs.
"""

from steerlens.analysis.layer_report import separation_report
from steerlens.analysis.norms import relative_vector, residual_norms
from steerlens.analysis.probes import probe_report
from steerlens.analysis.projections import projections_html, token_projections
from steerlens.analysis.separation import best_threshold, roc_auc

__all__ = [
    "best_threshold",
    "probe_report",
    "projections_html",
    "relative_vector",
    "residual_norms",
    "roc_auc",
    "separation_report",
    "token_projections",
]
