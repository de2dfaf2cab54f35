"""Token choice and the speculative-sampling accept/reject rule, as pure functions.

Speculative sampling (Leviathan et al. 2023, arXiv:2211.17192, Algorithm 1 / Theorem 1;
Chen et al. 2023, arXiv:2302.01318, "modified rejection sampling"): a draft token
``x ~ q`` is accepted with probability ``min(1, p(x) / q(x))``; on rejection the token is
resampled from the residual ``norm(max(0, p - q))``; when every draft token of a pass is
accepted, one bonus token is drawn from the target's next distribution. The emitted token
then follows ``p`` exactly: ``P(x) = min(p, q)(x) + (1 - sum min(p, q)) * (p - q)+(x) /
sum (p - q)+ = p(x)`` because ``sum (p - q)+ = 1 - sum min(p, q)``
(:func:`speculative_step_distribution` computes this and the tests check it equals ``p``).

Temperature ``<= 0`` means greedy (argmax); otherwise both models' logits are divided by
the same temperature before the softmax. No top-k / top-p warping (they would have to be
applied identically to ``p`` and ``q`` to stay lossless; not needed by the benchmark).
"""

from __future__ import annotations

import torch


def is_greedy(temperature: float) -> bool:
    return temperature <= 0.0


def probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Softmax of ``logits / temperature`` in float32 (or the input's float64)."""
    dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    return torch.softmax(logits.to(dtype) / temperature, dim=-1)


def _on(t: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return t if generator is None else t.to(generator.device)


def sample(p: torch.Tensor, generator: torch.Generator | None = None) -> int:
    """One token id drawn from the probability vector ``p``."""
    return int(torch.multinomial(_on(p, generator), 1, generator=generator).item())


def choose(logits: torch.Tensor, temperature: float,
           generator: torch.Generator | None = None) -> int:
    """Greedy or sampled next token from one row of logits (plain decoding's rule)."""
    if is_greedy(temperature):
        return int(logits.argmax().item())
    return sample(probs(logits, temperature), generator)


def uniform(generator: torch.Generator | None = None) -> float:
    device = generator.device if generator is not None else "cpu"
    return float(torch.rand((), generator=generator, device=device).item())


def residual_distribution(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``norm(max(0, p - q))``, the resampling distribution after a rejection.

    When ``p <= q`` everywhere (numerically ``p == q``) a rejection has probability zero
    and the residual is undefined; ``p`` itself is returned then.
    """
    r = (p - q).clamp_min(0)
    total = r.sum()
    return r / total if total > 0 else p


def accept_draft_token(p: torch.Tensor, q: torch.Tensor, token: int,
                       generator: torch.Generator | None = None) -> bool:
    """The rejection rule: accept ``token ~ q`` with probability ``min(1, p/q)``."""
    return uniform(generator) * float(q[token]) < float(p[token])


def speculative_step_distribution(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Exact distribution of the token emitted by one accept/reject step.

    A draft ``x ~ q`` is kept with probability ``min(1, p(x)/q(x))`` (joint mass
    ``min(p, q)``); with the remaining probability the token comes from
    :func:`residual_distribution`. Equals ``p`` (the losslessness theorem).
    """
    kept = torch.minimum(p, q)
    return kept + (1 - kept.sum()) * residual_distribution(p, q)
