"""Who stands for a cluster: its medoid, diverse representatives, a label of terms, its
canonical entity mention, and how alike its members are.

Only reservoir members have vectors in memory, so medoid and representatives are chosen
among them (the most recent members, which is what a fading cluster is about now).
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

from processors.facets import FacetCounts
from processors.scope import TIME, ScopeState


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
    centre = scope.centroids.of(slot).astype(np.float64)
    rel = list(vecs @ centre)  # numpy float64 scalars (their rounding below)
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


def canonical_mention(mentions: Counter[str], medoid_mention: str | None) -> str | None:
    """The mention most members use. Ties go to the medoid's mention (the member closest to
    the centroid), then to the longest (the most specific form: "Joe Biden" over "Biden"),
    then alphabetically. Counts, not reservoir vectors, decide, so the choice stays exact
    when members are deleted."""
    if not mentions:
        return None
    best = max(mentions.values())
    tied = [m for m, c in mentions.items() if c == best]
    if medoid_mention in tied:
        return medoid_mention
    return min(tied, key=lambda m: (-len(m), m))


def mean_pairwise_similarity(scope: ScopeState, slot: int) -> float:
    """Average cosine between two distinct members, pairs weighted by the product of their
    decayed weights, from the cluster's sums alone: with S = sum w_i x_i (unit x_i) and
    W = sum w_i, |S|^2 = sum w_i^2 + sum_{i!=j} w_i w_j cos_ij, hence
    (|S|^2/W^2 - 1/n_eff) / (1 - 1/n_eff) with n_eff = W^2 / sum w_i^2. The member weights
    w_i = 2^(-(tref - t_i) / half_life) come from the members' event times; 1 for a single
    member. Exact while every member's vector is in the sums at its decayed weight (deletes
    of members outside the reservoir and splits keep it approximate)."""
    members = scope.members[slot]
    w = float(scope.w[slot])
    if len(members) < 2 or w <= 0:
        return 1.0
    ls = scope.ls[slot]
    c = float(ls @ ls) / (w * w)
    times = np.fromiter((m[TIME] for m in members.values()), np.float64, len(members))
    age = np.maximum(float(scope.tref[slot]) - times, 0.0)
    wi = np.exp(-math.log(2.0) * age / scope.cfg.half_life_seconds)
    inv_n_eff = float(wi @ wi) / float(wi.sum()) ** 2
    if 1.0 - inv_n_eff < 1e-9:
        return max(-1.0, min(1.0, c))
    return max(-1.0, min(1.0, (c - inv_n_eff) / (1.0 - inv_n_eff)))
