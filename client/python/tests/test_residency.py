"""engram_store.torch.residency.ResidencyMap on the CPU: which rows a gather copies up (every live
row not known to be in VRAM), how the hit flags of finished gathers (and only those, oldest first)
change that, the counters of wrong guesses, and the bound on flags kept. Events are stand-ins
with the two calls the map makes (a kernel's end is the only thing they model). Skipped without
torch."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="engram_store.torch needs torch (pip install torch)")


class Ended:
    """An event whose work has (``done``) or has not ended; ``synchronize`` ends it."""

    def __init__(self, done: bool = True):
        self.done = done

    def query(self) -> bool:
        return self.done

    def synchronize(self) -> None:
        self.done = True


def flags(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.uint8)


def test_unknown_rows_are_copied_up_and_finished_flags_teach_the_map():
    from engram_store.torch import ResidencyMap

    m = ResidencyMap(10)
    ids = np.array([3, 4, -1, 12, 3, 7], dtype=np.int64)
    misses = m.foresee(ids)
    # Live rows (0 <= id < 10), none known yet: all copied up; -1 and 12 are not rows to copy.
    assert misses.tolist() == [True, True, False, False, True, True]
    assert m.foreseen_misses == 4
    # The gather found 3 and 7 in VRAM (the flags of dead and past-the-end positions are 0).
    m.expect(ids, misses, flags([1, 0, 0, 0, 1, 1]), Ended())
    assert m.wrong_misses == 0  # nothing folded before the next look
    assert m.foresee(ids).tolist() == [False, True, False, False, False, False]
    assert m.wrong_misses == 3  # 3 (twice) and 7 were copied up though in VRAM
    assert m.foreseen_misses == 5
    assert m.known.tolist() == [0, 0, 0, 1, 0, 0, 0, 1, 0, 0]


def test_a_gather_still_running_teaches_nothing_and_later_flags_win():
    from engram_store.torch import ResidencyMap

    m = ResidencyMap(8)
    ids = np.array([1, 2], dtype=np.int64)
    running = Ended(done=False)
    m.expect(ids, m.foresee(ids), flags([1, 1]), running)
    assert m.foresee(ids).tolist() == [True, True]  # its flags are not in yet
    running.done = True
    m.fold()
    assert m.known[[1, 2]].tolist() == [1, 1]
    # Foreseen in VRAM, but the tier had dropped row 2: read over PCIe, known again as a miss.
    misses = m.foresee(ids)
    assert misses.tolist() == [False, False]
    m.expect(ids, misses, flags([1, 0]), Ended())
    m.fold()
    assert m.wrong_hits == 1
    assert m.known[[1, 2]].tolist() == [1, 0]
    assert m.foresee(ids).tolist() == [False, True]


def test_flags_kept_are_bounded_by_waiting_for_the_oldest():
    from engram_store.torch.residency import MAX_PENDING, ResidencyMap

    m = ResidencyMap(4)
    ids = np.array([0], dtype=np.int64)
    events = [Ended(done=False) for _ in range(MAX_PENDING + 3)]
    for event in events:
        m.expect(ids, np.array([True]), flags([1]), event)
    assert len(m._pending) == MAX_PENDING
    assert all(e.done for e in events[:3]) and not any(e.done for e in events[3:])
    assert m.known[0] == 1


def test_rows_must_not_be_negative():
    from engram_store.torch import ResidencyMap

    with pytest.raises(ValueError, match="rows must be >= 0, got -1"):
        ResidencyMap(-1)
