"""Test-time compute: repeated sampling, coverage (unbiased pass@k) and majority vote.

    from moelab.ttc.metrics import pass_at_k, ttc_curves          # pure, no torch
    from moelab.ttc.sampling import sample_task, recompute_from_jsonl

``metrics`` is re-exported here; ``sampling`` (torch, the model) is imported from its module so that
importing this package stays light.
"""

from moelab.ttc.metrics import (
    QuestionSamples,
    curve_points,
    majority_correct,
    majority_winner,
    pass_at_k,
    ttc_curves,
)

__all__ = ["QuestionSamples", "curve_points", "majority_correct", "majority_winner", "pass_at_k", "ttc_curves"]
