"""Loss terms as pure functions of tensors, so models stay networks and the epoch loop stays generic."""

from __future__ import annotations

import torch


def mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error: the rating-prediction objective every MF variant in the literature uses."""
    return torch.mean((pred.float() - target.float()) ** 2)


def batch_l2(*params: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the squared L2 norm of the rows a batch touched.

    Penalising only the gathered rows (not the whole table) is the classic SGD-MF regulariser: a
    popular movie is regularised once per rating it appears in, a rare one rarely, so the penalty scales
    with how much evidence each row has seen. Each argument is a (batch, ...) tensor of gathered rows.
    """
    total = params[0].new_zeros(())
    for p in params:
        total = total + p.float().pow(2).reshape(p.shape[0], -1).sum(dim=1).mean()
    return total


def gravity(U: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """Mean over all N x M (row of U, row of V) pairs of the squared dot product, without the N x M matrix.

    ``sum_ij <U_i, V_j>^2 = ||U V^T||_F^2 = trace((U^T U)(V^T V))``: two (d x d) Gram matrices, so the cost
    is O((N + M) d^2) and the memory O(d^2). Both Grams are symmetric, so the trace of their product is the
    sum of their element-wise product.
    """
    u = U if U.dtype == torch.float64 else U.float()
    v = V if V.dtype == torch.float64 else V.float()
    return ((u.T @ u) * (v.T @ v)).sum() / (u.shape[0] * v.shape[0])


def softmax_cross_entropy(
    logits: torch.Tensor,
    target_rows: torch.Tensor,
    target_items: torch.Tensor,
    exclude_rows: torch.Tensor | None = None,
    exclude_items: torch.Tensor | None = None,
    target_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Full-softmax cross-entropy of several targets per row, averaged over all targets.

    ``logits`` is (rows, n_items); target ``k`` is item ``target_items[k]`` of row ``target_rows[k]``. The
    (row, item) pairs in ``exclude_*`` (the items a row's input already holds) are removed from that
    row's softmax, so the model is trained to rank exactly what evaluation ranks: the unseen items.
    ``target_weights`` turns the mean into a weighted mean (e.g. ``1 / targets of the row`` so every row
    counts the same whatever its number of targets).
    """
    logits = logits.float()
    if exclude_rows is not None and exclude_items is not None and exclude_rows.numel():
        logits = logits.index_put((exclude_rows, exclude_items), logits.new_tensor(float("-inf")))
    log_p = torch.log_softmax(logits, dim=1)
    return _weighted_mean(-log_p[target_rows, target_items], target_weights)


def _weighted_mean(values: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    if weights is None:
        return values.mean()
    return (values * weights).sum() / weights.sum().clamp(min=1e-12)


def sampled_softmax_cross_entropy(
    target_rows: torch.Tensor,
    pos_logits: torch.Tensor,
    log_q_pos: torch.Tensor,
    neg_logits: torch.Tensor,
    log_q_neg: torch.Tensor,
    neg_mask: torch.Tensor | None = None,
    target_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sampled softmax with the log-Q correction (Bengio & Senecal; Yi et al., RecSys 2019).

    Each target competes against negatives drawn (shared by the batch) with probabilities ``q``; logits
    become ``s - log q`` so the sampled loss estimates the full softmax's. ``pos_logits`` is (targets,),
    ``neg_logits`` (rows, negatives) for the batch rows that ``target_rows`` index; ``log_q_*`` are the log
    sampling probabilities times the number of draws. ``neg_mask`` (rows, negatives) drops negatives
    from a row's softmax (its own targets and inputs: "accidental hits"). The negatives' log-sum-exp is
    computed once per row, so the cost is O(rows x negatives + targets), not targets x negatives.
    """
    pos = pos_logits.float() - log_q_pos
    neg = neg_logits.float() - log_q_neg
    if neg_mask is not None:
        neg = neg.masked_fill(neg_mask, float("-inf"))
    lse_neg = torch.logsumexp(neg, dim=1)[target_rows]
    return _weighted_mean(torch.logaddexp(pos, lse_neg) - pos, target_weights)
