"""Final cluster of every item after a stream, following merges and splits.

Built from the change events alone (what a downstream consumer sees), so replay and any
consumer of the cluster-changes topic resolve memberships the same way.
"""

from __future__ import annotations

from collections.abc import Iterable

from schemas.outputs import ChangeEvent


class LabelTracker:
    def __init__(self) -> None:
        self.current: dict[str, str] = {}
        self.redirect: dict[str, str] = {}
        self.created: set[str] = set()
        self.dead: set[str] = set()

    def assigned(self, item_id: str, cluster_id: str) -> None:
        self.current[item_id] = cluster_id

    def apply(self, events: Iterable[ChangeEvent]) -> None:
        for ev in events:
            if ev.kind == "created":
                self.created.add(ev.cluster_id)
            elif ev.kind == "merged":
                for old in ev.related_ids:
                    self.redirect[old] = ev.cluster_id
            elif ev.kind == "split":
                for item in ev.moved_item_ids:
                    self.current[item] = ev.related_ids[0]
            elif ev.kind == "retired" and ev.reason in ("expired_candidate", "emptied"):
                self.dead.add(ev.cluster_id)
            if ev.kind == "updated" and ev.reason == "member_deleted":
                for item in ev.moved_item_ids:
                    self.current.pop(item, None)

    def resolve(self, cluster_id: str) -> str:
        seen = 0
        while cluster_id in self.redirect:
            cluster_id = self.redirect[cluster_id]
            seen += 1
            if seen > len(self.redirect):
                raise RuntimeError("merge redirects form a cycle")
        return cluster_id

    def final(self, item_id: str) -> str | None:
        """The item's cluster at the end, or None when it ended in no real cluster (its
        candidate expired, or never reached the minimum weight: a cluster that is still a
        candidate has had no `created` event, since promotion is one-way)."""
        cid = self.current.get(item_id)
        if cid is None:
            return None
        cid = self.resolve(cid)
        if cid in self.dead or cid not in self.created:
            return None
        return cid
