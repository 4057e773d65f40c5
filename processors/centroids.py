"""The unit centroids of a scope's live clusters, as one compact float32 matrix.

Every assignment segment searches these rows and every maintenance tick multiplies them
(`lifecycle.merge_touched`). Kept by slot in the scope's table, both first gathered the live
rows out of it: a copy of ~10 MB per segment at 3,200 clusters of 768-d, about a tenth of
the search itself (docs/benchmarks.md, Scale, run 16). Kept compact, the matrix is searched
and multiplied as it is.

A row's position carries no meaning: a dropped cluster's row takes the last row, so rows
are read through `slots` (row -> slot) and `row_of` (slot -> row). Nothing that decides an
output depends on the order either: the search's candidates are ordered by cluster id, and
the exact merge links are computed over columns in slot order.

>>> import numpy as np
>>> c = LiveCentroids(dim=2)
>>> c.grow(4)
>>> c.put(3, np.array([1.0, 0.0]))
>>> c.put_many(np.array([0, 2]), np.array([[0.0, 1.0], [0.6, 0.8]]))
>>> c.slots.tolist()
[3, 0, 2]
>>> c.drop(3)  # the last row (slot 2) takes its place
>>> c.slots.tolist(), c.of(2).tolist()
([2, 0], [0.6000000238418579, 0.800000011920929])
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt


class LiveCentroids:
    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.n = 0
        self.mat = np.zeros((0, dim), dtype=np.float32)
        self.slot_at = np.zeros(0, dtype=np.int64)
        self.row_of = np.zeros(0, dtype=np.int64)
        self._held: list[int] | None = None

    def grow(self, cap: int) -> None:
        """Room for `cap` slots, hence at most as many live rows."""
        n, old = self.n, self.row_of.shape[0]
        mat = np.zeros((cap, self.dim), dtype=np.float32)
        mat[:n] = self.mat[:n]
        slot_at = np.full(cap, -1, dtype=np.int64)
        slot_at[:n] = self.slot_at[:n]
        row_of = np.full(cap, -1, dtype=np.int64)
        row_of[:old] = self.row_of
        self.mat, self.slot_at, self.row_of = mat, slot_at, row_of

    @property
    def rows(self) -> npt.NDArray[np.float32]:
        """The live centroids (a view: valid until the next put or drop)."""
        return self.mat[: self.n]

    @property
    def slots(self) -> npt.NDArray[np.int64]:
        """The slot of each row of `rows` (a view)."""
        return self.slot_at[: self.n]

    def of(self, slot: int) -> npt.NDArray[np.float32]:
        """A live cluster's centroid (a view of its row)."""
        row = int(self.row_of[slot])
        if row < 0:
            raise KeyError(f"slot {slot} holds no live cluster")
        return self.mat[row]

    def of_many(self, slots: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        """The centroids of live clusters, in the order of `slots` (a copy)."""
        return self.mat[self.row_of[slots]]

    def put(self, slot: int, vec: npt.NDArray[np.floating]) -> None:
        """Set a cluster's centroid; a slot not yet live takes the next row."""
        row = int(self.row_of[slot])
        if row < 0:
            row = self._append(np.array([slot], dtype=np.int64))
        self.mat[row] = vec

    def put_many(self, slots: npt.NDArray[np.int64], vecs: npt.NDArray[np.floating]) -> None:
        """`put` for distinct slots at once; slots not yet live take rows in slot order."""
        new = slots[self.row_of[slots] < 0]
        if new.size:
            self._append(np.sort(new))
        self.mat[self.row_of[slots]] = vecs

    def _append(self, slots: npt.NDArray[np.int64]) -> int:
        first = self.n
        rows = np.arange(first, first + slots.size)
        self.row_of[slots] = rows
        self.slot_at[rows] = slots
        self.n += slots.size
        return first

    def drop(self, slot: int) -> None:
        """The cluster left: the last row moves into its place (after `held`, if held)."""
        if self._held is not None:
            self._held.append(slot)
            return
        row = int(self.row_of[slot])
        if row < 0:
            return
        last = self.n - 1
        if row != last:
            moved = int(self.slot_at[last])
            self.mat[row] = self.mat[last]
            self.slot_at[row] = moved
            self.row_of[moved] = row
        self.row_of[slot] = -1
        self.slot_at[last] = -1
        self.n = last

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Rows keep their places while held: drops wait for the end. Merges hold them, as
        their pairs refer to rows while folds remove clusters. A hold inside a hold adds
        nothing (the outer one applies the drops)."""
        if self._held is not None:
            yield
            return
        self._held = []
        try:
            yield
        finally:
            pending, self._held = self._held, None
            for slot in pending:
                self.drop(slot)
