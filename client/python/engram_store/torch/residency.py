"""What a worker knows of the VRAM tier it reads through ``MappedTransport(predict_misses=True)``:
per mapped table, whether each row was in the tier when a gather of this worker last read it,
learnt from the hit flags its gather kernels write to page-locked host memory.

With that, a step's misses are foreseen on the host from its own row ids before any kernel runs,
copied out of the shared file and up by the copy engine while the model's first layers run, and
the gather, queued where the layer reads its rows, takes VRAM rows and that copy only: no kernel
reads host memory beside the model's, and nothing makes the host wait for the device (as listing
the misses on the device does, :meth:`MappedTransport.gather_staged`). A row foreseen wrongly
costs time, never a wrong row: one the tier dropped since is read over PCIe by the gather (its
tag check says so), one it took in since is copied up for nothing. Rows never read before are
foreseen as misses.

Memory: one byte per row of each table read (a 24 M-row table: 24 MB), and the flags of the
gathers whose kernels have not yet been seen to end (at most :data:`MAX_PENDING` per table).
"""

from __future__ import annotations

import collections
import dataclasses

import numpy as np
import torch

__all__ = ["ResidencyMap"]

#: Gathers' flags a map keeps before it waits for the oldest gather to end.
MAX_PENDING = 64


@dataclasses.dataclass
class _Report:
    ids: np.ndarray  # the gather's row ids, flat int64 (-1: a dead position)
    foreseen: np.ndarray  # bool: positions foreseen as VRAM hits (not copied up)
    hits: torch.Tensor  # uint8, page-locked: positions the gather read from VRAM
    event: torch.cuda.Event  # recorded after the gather


class ResidencyMap:
    """One mapped table's rows, as this worker last saw them in the VRAM tier.

    :meth:`foresee` says which positions of a gather's ids to copy up; :meth:`expect` takes the
    gather's hit flags, which are folded in (``known``) once its kernel has ended. Counters:
    ``foreseen_misses`` (rows copied up), ``wrong_hits`` (rows foreseen in VRAM that the gather
    read over PCIe instead), ``wrong_misses`` (rows copied up that the tier held).
    """

    def __init__(self, rows: int):
        if rows < 0:
            raise ValueError(f"rows must be >= 0, got {rows}")
        self.known = np.zeros(rows, dtype=np.uint8)
        self._pending: collections.deque[_Report] = collections.deque()
        self.foreseen_misses = 0
        self.wrong_hits = 0
        self.wrong_misses = 0

    def foresee(self, ids: np.ndarray) -> np.ndarray:
        """A bool mask over ``ids`` (flat int64): the live rows (0 <= id < rows) not known to be
        in the VRAM tier, to copy up before the gather. Folds in every finished gather's flags
        first."""
        self.fold()
        live = (ids >= 0) & (ids < self.known.size)
        held = np.zeros(ids.size, dtype=bool)
        held[live] = self.known[ids[live]] != 0
        misses = live & ~held
        self.foreseen_misses += int(np.count_nonzero(misses))
        return misses

    def expect(
        self, ids: np.ndarray, misses: np.ndarray, hits: torch.Tensor, event: torch.cuda.Event
    ) -> None:
        """The gather of ``ids`` whose foreseen ``misses`` were copied up writes, by the time
        ``event`` passes, where its rows came from into ``hits`` (1: VRAM)."""
        live = (ids >= 0) & (ids < self.known.size)
        self._pending.append(_Report(ids, live & ~misses, hits, event))
        while len(self._pending) > MAX_PENDING:
            self._pending[0].event.synchronize()
            self.fold()

    def fold(self) -> None:
        """Takes in the flags of every gather whose kernel has ended, oldest first (a later
        gather's flags overwrite an earlier one's)."""
        while self._pending and self._pending[0].event.query():
            report = self._pending.popleft()
            hits = report.hits.numpy()[: report.ids.size]
            live = (report.ids >= 0) & (report.ids < self.known.size)
            self.known[report.ids[live]] = hits[live]
            foreseen_live = report.foreseen[live]
            came = hits[live] != 0
            self.wrong_hits += int(np.count_nonzero(foreseen_live & ~came))
            self.wrong_misses += int(np.count_nonzero(~foreseen_live & came))
