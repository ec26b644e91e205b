"""Where a training step gets its rows when the data set is larger than memory.

`Rows` is a row-aligned view over .npy files (read with explicit reads, see
distill.npy_io) or in-memory arrays, optionally through a sorted index (the
holdout split) and concatenated (a transfer set after the train set). It
never materializes the whole array: slicing reads the rows asked for.

`BlockStream` feeds training from a dict of named, row-aligned `Rows` (x, y,
teacher logits, and whatever other per-row arrays a loss needs, e.g. cached
teacher features) in a block-shuffled order: each epoch the blocks of
`batch_size` consecutive rows are permuted, `window` blocks are read at once
(one contiguous read each) and their rows shuffled together into batches.
Memory is `window * batch_size` rows whatever N is; the order is a
permutation of all rows, seeded by the epoch, so a resumed run sees the same
batches. Reads are explicit (not through a memory map), so the pages of a
file do not pile up in the process's RSS. Below the in-memory threshold the loop does not use this: the set
sits on the device and a step indexes it (distill.loop).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from distill.npy_io import NpyLayout, npy_layout, read_rows, read_rows_at

# Blocks read together and shuffled into batches: the mixing radius of the order.
WINDOW_BLOCKS = 8
# A view whose rows span more than this many times their count is read row by row.
SPARSE = 2
# The key of a batch's row positions (int64, into the arrays) in what BlockStream yields.
POSITIONS = "_positions"


@dataclass(frozen=True)
class _Segment:
    source: NpyLayout | np.ndarray
    index: np.ndarray | None  # sorted positions into the source; None = all rows in order

    def __len__(self) -> int:
        if self.index is not None:
            return len(self.index)
        return self.source.shape[0]

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of this segment."""
        if self.index is None:
            lo, hi, pick = start, stop, None
        else:
            positions = self.index[start:stop]
            if len(positions) == 0:
                return self._empty()
            lo, hi, pick = int(positions[0]), int(positions[-1]) + 1, positions - positions[0]
        if isinstance(self.source, np.ndarray):
            block = np.asarray(self.source[lo:hi])
        elif pick is not None and hi - lo > SPARSE * len(pick):  # a sparse view: row by row
            return read_rows_at(self.source, pick + lo)
        else:
            block = read_rows(self.source, lo, hi)
        return block if pick is None else block[pick]

    def _empty(self) -> np.ndarray:
        return np.zeros((0, *self.source.shape[1:]), dtype=self.source.dtype)


class Rows:
    """A row-aligned array view that reads only the rows it is asked for: len(), shape,
    dtype, ndim, `rows[a:b]` and `rows[sorted_int_array]` as numpy arrays."""

    def __init__(self, segments: list[_Segment]) -> None:
        if not segments:
            raise ValueError("Rows needs at least one segment")
        self._segments = segments
        first = segments[0].source
        self.dtype = np.dtype(first.dtype)
        self.row_shape = tuple(int(d) for d in first.shape[1:])
        self._starts = np.cumsum([0] + [len(s) for s in segments])

    @classmethod
    def of(cls, source: str | os.PathLike[str] | np.ndarray) -> Rows:
        """A .npy file (read by explicit reads) or an in-memory array."""
        if isinstance(source, np.ndarray):
            return cls([_Segment(source, None)])
        return cls([_Segment(npy_layout(source), None)])

    def __len__(self) -> int:
        return int(self._starts[-1])

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self.row_shape)

    @property
    def ndim(self) -> int:
        return 1 + len(self.row_shape)

    @property
    def nbytes(self) -> int:
        return len(self) * math.prod(self.row_shape) * self.dtype.itemsize

    def take(self, index: np.ndarray) -> Rows:
        """The rows at `index` (sorted here: a view reads in file order)."""
        index = np.sort(np.asarray(index, dtype=np.int64))
        segments = []
        for seg, lo, hi in zip(self._segments, self._starts[:-1], self._starts[1:], strict=True):
            local = index[(index >= lo) & (index < hi)] - lo
            if len(local):
                base = local if seg.index is None else seg.index[local]
                segments.append(_Segment(seg.source, base))
        if not segments:
            segments = [_Segment(self._segments[0].source, np.zeros(0, dtype=np.int64))]
        return Rows(segments)

    def concat(self, other: Rows) -> Rows:
        if other.row_shape != self.row_shape or other.dtype != self.dtype:
            raise ValueError(
                f"cannot append rows {other.dtype}{list(other.row_shape)} to "
                f"{self.dtype}{list(self.row_shape)}"
            )
        return Rows(self._segments + other._segments)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) as one array (b, ...)."""
        start, stop = max(0, start), min(len(self), stop)
        parts = []
        for seg, lo, hi in zip(self._segments, self._starts[:-1], self._starts[1:], strict=True):
            if stop <= lo or start >= hi:
                continue
            parts.append(seg.read(max(start, lo) - lo, min(stop, hi) - lo))
        if not parts:
            return np.zeros((0, *self.row_shape), dtype=self.dtype)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def __getitem__(self, key: slice | np.ndarray) -> np.ndarray:
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step != 1:
                raise IndexError("Rows supports contiguous slices only")
            return self.read(start, stop)
        index = np.asarray(key, dtype=np.int64)
        return (
            np.stack([self.read(int(i), int(i) + 1)[0] for i in index])
            if len(index)
            else (np.zeros((0, *self.row_shape), dtype=self.dtype))
        )

    def __array__(self, dtype: np.dtype | None = None, copy: bool | None = None) -> np.ndarray:
        whole = self.read(0, len(self))  # materializes: for small views (tests, calibration)
        return whole if dtype is None else whole.astype(dtype)


class BlockStream:
    """Batches of named, row-aligned arrays in a block-shuffled order (see the module doc)."""

    def __init__(
        self, arrays: dict[str, Rows], batch_size: int, window: int = WINDOW_BLOCKS
    ) -> None:
        lengths = {name: len(rows) for name, rows in arrays.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"the arrays are not row-aligned: {lengths}")
        self.arrays, self.batch_size, self.window = arrays, batch_size, window
        self.n = next(iter(lengths.values()))

    @property
    def steps(self) -> int:
        """Batches per epoch: ceil(N / batch_size), as in the in-memory loop."""
        return math.ceil(self.n / self.batch_size)

    def epoch(self, seed: int) -> Iterator[dict[str, np.ndarray]]:
        """One epoch's batches: {name: (B, ...)} and the rows' positions under POSITIONS
        (B,); every row once."""
        bs, rng = self.batch_size, np.random.default_rng(seed)
        full = self.n // bs
        # Block ids; a short last block stays last, so every batch but the epoch's last is
        # full and batch k covers positions [k * bs, (k + 1) * bs) of the epoch's order.
        order = np.concatenate([rng.permutation(full), np.arange(full, self.steps)])
        for w in range(0, len(order), self.window):
            ranges = [
                (int(b) * bs, min(self.n, (int(b) + 1) * bs)) for b in order[w : w + self.window]
            ]
            chunk = {
                name: np.concatenate([rows.read(a, b) for a, b in ranges])
                for name, rows in self.arrays.items()
            }  # {name: (window * bs, ...)}
            chunk[POSITIONS] = np.concatenate([np.arange(a, b) for a, b in ranges])
            size = sum(b - a for a, b in ranges)
            mix = rng.permutation(size)
            for s in range(0, size, bs):
                pick = mix[s : s + bs]
                yield {name: values[pick] for name, values in chunk.items()}


def training_stream(
    x: Rows, teacher_logits: np.ndarray | Rows | None, batch_size: int
) -> BlockStream:
    """The training loop's source for a set larger than memory: x and, when the loss reads
    them, the cached teacher logits, streamed together. Other row-aligned arrays (cached
    teacher features) join the dict here."""
    named = {"x": x}
    if teacher_logits is not None:
        named["t"] = teacher_logits if isinstance(teacher_logits, Rows) else Rows.of(teacher_logits)
    return BlockStream(named, batch_size)
