"""When a store's warm has settled: the rule the offload harness polls the store's ``Stats`` by
after hinting a warm's rows (``offload_warm.warm_vram``).

A warm has settled when nothing is left to happen on its account: no prefetch queued, no VRAM
refresh under way (the tier's ``rows_entering``, 0 from a store before that field), and the tier
holding every hinted row, or (it may hold fewer than the harness estimated) the same rows over
several polls none of which saw a refresh under way. Without the refresh check a large refresh
(tens of millions of rows read and written before it publishes any) left ``resident_rows``
unchanged for longer than the polls, and the runs began while the tier was still filling."""

from __future__ import annotations

import dataclasses

#: Polls, a second apart, with the VRAM tier's resident rows unchanged and no refresh under way,
#: after which a warm is taken as settled even below the rows hinted.
SETTLED_POLLS = 5


@dataclasses.dataclass
class WarmSettle:
    """Fed one poll of the store's stats at a time (:meth:`settled`)."""

    hinted: int
    polls: int = SETTLED_POLLS
    _last: int = -1
    _unchanged: int = 0

    def settled(self, resident: int | None, queued: int, entering: int) -> bool:
        """After a poll: ``resident`` rows in the VRAM tier (None: the store has none),
        ``queued`` prefetch rows waiting, ``entering`` rows of a refresh under way."""
        if resident is None:
            return queued == 0
        quiet = queued == 0 and entering == 0
        steady = quiet and resident == self._last and resident > 0
        self._unchanged = self._unchanged + 1 if steady else 0
        self._last = resident
        return quiet and (resident >= self.hinted or self._unchanged >= self.polls)
