"""Who stands for a cluster: its medoid, diverse representatives, and a label of terms.

Only reservoir members have vectors in memory, so medoid and representatives are chosen
among them (the most recent members, which is what a fading cluster is about now).
"""

from __future__ import annotations

import math

import numpy as np

from processors.facets import FacetCounts
from processors.scope import ScopeState


def reservoir(scope: ScopeState, slot: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    ids, rows, times = [], [], []
    for p, item in enumerate(scope.res_ids[slot]):
        if item is not None:
            ids.append(item)
            rows.append(p)
            times.append(scope.res_time[slot, p])
    return ids, scope.res_vec[slot, rows].astype(np.float64), np.asarray(times)


def representatives(scope: ScopeState, slot: int, k: int) -> list[str]:
    """Medoid first (closest to the centroid; most recent on ties, then smallest id), then
    maximal-marginal-relevance picks that are close to the centroid but unlike those chosen."""
    ids, vecs, times = reservoir(scope, slot)
    if not ids:
        return []
    centre = scope.cent[slot].astype(np.float64)
    rel = vecs @ centre
    order = sorted(range(len(ids)), key=lambda i: (-round(rel[i], 12), -times[i], ids[i]))
    chosen = [order[0]]
    while len(chosen) < min(k, len(ids)):
        best, best_score = -1, -math.inf
        for i in order:
            if i in chosen:
                continue
            redundancy = max(float(vecs[i] @ vecs[j]) for j in chosen)
            score = 0.5 * rel[i] - 0.5 * redundancy
            if score > best_score + 1e-12:
                best, best_score = i, score
        chosen.append(best)
    return [ids[i] for i in chosen]


def label(counts: FacetCounts, df: dict[str, int], n_clusters: int, n_terms: int) -> str:
    """Distinctive terms: frequent in the cluster, rare across the scope's clusters (c-TF-IDF)."""
    if not counts.terms:
        return ""
    scored = sorted(
        ((c * math.log(1.0 + n_clusters / (1 + df.get(t, 0))), t) for t, c in counts.terms.items()),
        key=lambda st: (-st[0], st[1]),
    )
    return " ".join(t for _, t in scored[:n_terms])


def document_frequency(scope: ScopeState) -> dict[str, int]:
    df: dict[str, int] = {}
    for s in scope.live_slots():
        for t in scope.facets[int(s)].terms:
            df[t] = df.get(t, 0) + 1
    return df
