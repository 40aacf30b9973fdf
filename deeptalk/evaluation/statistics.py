"""Bootstrap standard errors over held-out items, paired when two models score the same items.

Base and trained model answer the *same* held-out questions and read the *same* sentences, so most of the
item-to-item spread (hard questions, rare words) cancels in their difference. Treating the two scores as
independent draws ignores that and overstates the error of a drop many times over; resampling the items once
and scoring both models on that one resample keeps it (the *paired* bootstrap, Efron & Tibshirani 1993, §16).

Items that are not independent are resampled together: several phrasings of one held-out fact, and the
sentences stating it, are one *cluster* (the fact), so the error says how much a figure moves with another
draw of held-out facts, not with another wording of the same ones. Replicates come from a fixed seed, so a
figure and its error are reproducible bit for bit.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np

BOOTSTRAP_REPLICATES = 2000  # SE of an SE ~ 1/sqrt(2 B) = 1.6 % of it
BOOTSTRAP_SEED = 0


def cluster_weights(clusters: Sequence[Hashable], replicates: int = BOOTSTRAP_REPLICATES,
                    seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """Bootstrap weights ``[replicates, items]``: each replicate draws as many clusters as there are, with
    replacement, and weights every item by how often its cluster was drawn (items of a cluster stay together;
    one cluster per item is the ordinary bootstrap)."""
    if len(clusters) == 0:
        raise ValueError("a bootstrap needs at least one item")
    if replicates < 2:
        raise ValueError(f"a bootstrap needs at least 2 replicates, got {replicates}")
    index: dict[Hashable, int] = {}
    of_item = np.array([index.setdefault(c, len(index)) for c in clusters])
    n = len(index)
    counts = np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=replicates)  # [B, clusters]
    return counts[:, of_item].astype(np.float64)


def item_clusters(groups: Sequence[str], prefix: str) -> list[str]:
    """Cluster keys of items: their group (a fact id) where they have one, else the item alone
    (``prefix`` + position, so items without a group never share a cluster)."""
    return [g if g else f"{prefix}{i}" for i, g in enumerate(groups)]


def standard_error(replicates: np.ndarray) -> float | None:
    """Sample standard deviation of the finite bootstrap replicates (None when fewer than 2 are finite)."""
    finite = np.asarray(replicates, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    return float(finite.std(ddof=1)) if finite.size >= 2 else None
