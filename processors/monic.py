"""MONIC-style mapping of an old clustering onto a new grouping (Spiliopoulou et al. 2006).

overlap[X][g] is the weighted share of old cluster X's points that fell in new group g
(group -1, the outliers, is not a group). The rules, with every tie ordered by id:
survival (one group holds >= survival of X), split (no survival, but >= 2 groups each hold
>= split and together >= survival), absorption (several survivors share one group: the
heaviest keeps its id), unmatched (none applies: X keeps its id and state; retirement is
decided by fading, not by one density estimate).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Transitions:
    survived: dict[int, int] = field(default_factory=dict)
    """old id -> group it survives into."""
    absorptions: list[tuple[int, list[int]]] = field(default_factory=list)
    """(absorber, absorbed ids) for groups that several old clusters survive into."""
    splits: list[tuple[int, list[int]]] = field(default_factory=list)
    """(old id, its groups by share, largest first: the first part keeps the id)."""
    unmatched: list[int] = field(default_factory=list)


def map_transitions(
    overlap: dict[int, dict[int, float]],
    weight: dict[int, float],
    survival: float = 0.7,
    split: float = 0.3,
) -> Transitions:
    out = Transitions()
    by_group: dict[int, list[int]] = {}
    for old in sorted(overlap):
        shares = {g: s for g, s in overlap[old].items() if g >= 0}
        ranked = sorted(shares.items(), key=lambda gs: (-gs[1], gs[0]))
        if ranked and ranked[0][1] >= survival:
            out.survived[old] = ranked[0][0]
            by_group.setdefault(ranked[0][0], []).append(old)
            continue
        parts = [g for g, s in ranked if s >= split]
        if len(parts) >= 2 and sum(shares[g] for g in parts) >= survival:
            out.splits.append((old, parts))
        else:
            out.unmatched.append(old)
    for g in sorted(by_group):
        olds = by_group[g]
        if len(olds) < 2:
            continue
        ranked_old = sorted(olds, key=lambda o: (-weight.get(o, 0.0), o))
        out.absorptions.append((ranked_old[0], ranked_old[1:]))
    return out
