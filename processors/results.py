"""The Stage 5 record of one live cluster: seed 003 §3.5 `ClusterResult` with the §3.1
granularity fields, built from the engine's in-memory state of the cluster."""

from __future__ import annotations

from processors.config import EngineConfig
from processors.facets import CATEGORY, ENTITY_TYPE, EVENT, MENTION, STORYLINE, tag, top
from processors.representatives import (
    canonical_mention,
    document_frequency,
    label,
    mean_pairwise_similarity,
    representatives,
)
from processors.scope import DOC, FACETS, STATUS_NAMES, ScopeState
from processors.search import backend_name
from schemas.outputs import ClusterMetadata, ClusterResult, iso_utc

ALGORITHM = "faiss-leader+average-link+hdbscan"
"""Leader assignment over a FAISS centroid index, average-link merges of fading clusters,
periodic HDBSCAN reconsolidation (README, "The clustering model")."""


def cluster_result(
    cfg: EngineConfig,
    st: ScopeState,
    slot: int,
    df: dict[str, int] | None = None,
    n_live: int = 0,
) -> ClusterResult:
    """`df`/`n_live`: the scope's term document frequencies and live cluster count, passed in
    when many clusters of one scope are rendered together. `metadata.timestamp` is the
    scope's event-time watermark (deterministic: never the wall clock)."""
    members = st.members[slot]
    ids = list(members)[: cfg.max_snapshot_members]
    docs = list(dict.fromkeys(m[DOC] for m in members.values() if m[DOC]))
    fc = st.facets[slot]
    reps = representatives(st, slot, cfg.representatives_k)
    medoid = reps[0] if reps else None
    if df is None:
        df = document_frequency(st)
        n_live = len(st.live_slots())
    mentions = fc.of(MENTION)
    medoid_mention = tag(members[medoid][FACETS], MENTION) if medoid in members else None
    categories = top(fc.of(CATEGORY), 3)
    return ClusterResult(
        cluster_id=st.cluster_id(slot),
        cluster_type=st.key.embedding_type,
        cluster_label=label(fc, df, max(n_live, 1), cfg.label_terms),
        cluster_size=len(members),
        member_ids=ids,
        document_ids=docs,
        centroid_vector=st.centroids.of(slot).tolist(),
        temporal_span=[iso_utc(float(st.t_first[slot])), iso_utc(float(st.t_last[slot]))],
        primary_entities=top(fc.entities, 5),
        domain=next(iter(top(fc.domains, 1)), None),
        event_type=next(iter(top(fc.event_types, 1)), None),
        intra_cluster_similarity=round(mean_pairwise_similarity(st, slot), 6),
        metadata=ClusterMetadata(
            algorithm=ALGORITHM,
            timestamp=iso_utc(max(st.watermark, float(st.t_last[slot]))),
            embedding_model=st.key.embedding_model,
            search_backend=backend_name(cfg.search_backend),
            assign_threshold=cfg.assign_threshold,
            merge_threshold=cfg.merge_threshold,
            tau_seconds=cfg.tau_seconds,
            half_life_seconds=cfg.half_life_seconds,
            min_cluster_size=cfg.hdbscan_min_cluster_size,
            min_samples=cfg.hdbscan_min_samples,
            reconsolidations=st.recon_runs,
            dominant_categories=categories or None,
        ),
        canonical_entity=canonical_mention(mentions, medoid_mention),
        entity_type=next(iter(top(fc.of(ENTITY_TYPE), 1)), None),
        entity_mentions=top(mentions, len(mentions)),
        storyline_ids=sorted(fc.of(STORYLINE)),
        event_ids=sorted(fc.of(EVENT)),
        scope=st.name,
        status=STATUS_NAMES[int(st.status[slot])],
        weight=float(st.w[slot]),
        medoid_id=medoid,
        representative_ids=reps,
    )
