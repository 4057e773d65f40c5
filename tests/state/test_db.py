"""The batch commit against the real PostgreSQL (dev/services.sh): the offset fence."""

from __future__ import annotations

import asyncio

import pytest

from state.db import BatchWrite, Fenced, OffsetRow, Store

ROW = ("c1", "scope-a", "document", "item-1", "doc-1", 0.9, 1.0)
CLUSTER = ("c1", "scope-a", "active", 1, 1.0, None, None, None, 1.0, 1.0, "document", None)


async def _commit_twice(dsn: str, first: BatchWrite, second: BatchWrite) -> tuple[int, int]:
    store = await Store.connect(dsn)
    try:
        await store.commit(first)
        with pytest.raises(Fenced) as caught:
            await store.commit(second)
        assert caught.value.partition == 0
        async with store.pool.acquire() as conn:
            nxt = await conn.fetchval("SELECT next_offset FROM consumed_offsets")
            items = await conn.fetchval("SELECT count(*) FROM cluster_items")
        return int(nxt), int(items)
    finally:
        await store.close()


def test_two_writers_starting_from_the_same_offset_only_the_first_commits(
    fresh_database: tuple[str, str],
) -> None:
    """A zombie (still believes the stored offset is 100) loses to the worker that moved it;
    nothing of the zombie's batch is written, not even its memberships."""
    _, dsn = fresh_database
    setup = BatchWrite("g", offsets=[OffsetRow("t", 0, 100, 100, None)])
    owner = BatchWrite("g", offsets=[OffsetRow("t", 0, 150, 150, 100)])
    zombie = BatchWrite(
        "g", clusters=[CLUSTER], items=[ROW], offsets=[OffsetRow("t", 0, 130, 130, 100)]
    )

    async def go() -> tuple[int, int]:
        store = await Store.connect(dsn)
        try:
            await store.commit(setup)
        finally:
            await store.close()
        return await _commit_twice(dsn, owner, zombie)

    nxt, items = asyncio.run(go())
    assert nxt == 150
    assert items == 0


def test_first_commit_of_a_partition_is_fenced_when_someone_else_created_it(
    fresh_database: tuple[str, str],
) -> None:
    """Two workers that both found no row: the second insert is refused, not merged."""
    _, dsn = fresh_database
    first = BatchWrite("g", offsets=[OffsetRow("t", 0, 10, 10, None)])
    second = BatchWrite(
        "g", items=[ROW], clusters=[CLUSTER], offsets=[OffsetRow("t", 0, 20, 20, None)]
    )
    nxt, items = asyncio.run(_commit_twice(dsn, first, second))
    assert nxt == 10
    assert items == 0


def test_a_writer_whose_belief_holds_commits_in_sequence(fresh_database: tuple[str, str]) -> None:
    _, dsn = fresh_database

    async def go() -> tuple[int, int]:
        store = await Store.connect(dsn)
        try:
            await store.commit(BatchWrite("g", offsets=[OffsetRow("t", 0, 10, 5, None)]))
            await store.commit(BatchWrite("g", offsets=[OffsetRow("t", 0, 20, 10, 10)]))
            # an idle settle: only the published offset moves; it never goes back
            await store.commit(BatchWrite("g", offsets=[OffsetRow("t", 0, 20, 3, 20)]))
            async with store.pool.acquire() as conn:
                row = await conn.fetchrow(
                    "SELECT next_offset, published_offset FROM consumed_offsets"
                )
            return int(row["next_offset"]), int(row["published_offset"])
        finally:
            await store.close()

    assert asyncio.run(go()) == (20, 10)


def test_attempts_count_per_first_offset_and_poisoned_records_reach_the_takeover(
    fresh_database: tuple[str, str],
) -> None:
    """The crash-loop guard's memory: a second attempt at the same first offset counts 2,
    a new first offset starts again at 1, the suspect range only grows, a withdrawn attempt
    no longer counts (only at its own first offset); and a record
    dead-lettered as poison is in the partition state a new owner loads."""
    _, dsn = fresh_database

    async def go() -> None:
        store = await Store.connect(dsn)
        try:
            rec = store.record_attempts
            assert await rec("g", [("t", 0, 10, 59), ("t", 1, 0, 9)]) == {
                ("t", 0): (1, 59),
                ("t", 1): (1, 9),
            }
            assert await rec("g", [("t", 0, 10, 30)]) == {("t", 0): (2, 59)}
            assert await rec("g", [("t", 0, 10, 10)]) == {("t", 0): (3, 59)}
            assert await rec("g", [("t", 0, 11, 11)]) == {("t", 0): (1, 59)}
            assert await rec("other", [("t", 0, 11, 11)]) == {("t", 0): (1, 11)}
            # a handled failure takes its attempt back, only where it is still the row's
            await rec("g", [("t", 0, 11, 11)])  # 2 at 11
            await store.withdraw_attempts("g", [("t", 0, 11), ("t", 1, 5)])
            assert await rec("g", [("t", 0, 11, 11)]) == {("t", 0): (2, 59)}
            assert await rec("g", [("t", 1, 0, 9)]) == {("t", 1): (2, 9)}
            await store.commit(
                BatchWrite("g", offsets=[OffsetRow("t", 0, 12, 12, None)], poisoned=[("t", 0, 10)])
            )
            state = await store.load_partition("g", "t", 0)
            assert state.poisoned == {10} and state.next_offset == 12
        finally:
            await store.close()

    asyncio.run(go())


def test_a_reconsolidation_group_references_its_medoid_row(
    fresh_database: tuple[str, str],
) -> None:
    """Seed 001: a group's medoid is a real membership row (looked up by the unique
    (cluster_type, item_type, item_id) key); outliers have none."""
    from schemas.outputs import ReconsolidationGroup, ReconsolidationRecord

    _, dsn = fresh_database
    cluster = ("c1", "document/m", *CLUSTER[2:])
    row = ("c1", "document/m", "document", "item-1", "doc-1", 0.9, 1.0)
    run = ReconsolidationRecord(
        scope="document/m", sequence=1, trigger="manual", event_time=1.0, parameters={},
        input_clusters=1, input_points=2, clusters_found=1, outliers=1,
        groups=[
            ReconsolidationGroup(label=0, size=1, medoid_id="item-1",
                                 mean_intra_similarity=1.0, cluster_ids=["c1"]),
            ReconsolidationGroup(label=-1, size=1, medoid_id=None,
                                 mean_intra_similarity=None, cluster_ids=["c1"]),
        ],
    )  # fmt: skip

    async def go() -> list[tuple[int, str | None]]:
        store = await Store.connect(dsn)
        try:
            await store.commit(BatchWrite("g", clusters=[cluster], items=[row], runs=[run]))
            async with store.pool.acquire() as conn:
                rows = await conn.fetch(
                    "SELECT g.label, i.item_id FROM reconsolidation_clusters g"
                    " LEFT JOIN cluster_items i ON i.id = g.medoid_item_ref ORDER BY g.label"
                )
            return [(r["label"], r["item_id"]) for r in rows]
        finally:
            await store.close()

    assert asyncio.run(go()) == [(-1, None), (0, "item-1")]
