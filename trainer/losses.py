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
