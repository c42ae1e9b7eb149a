"""How much the producer claims: never more than the free slots, a third of the slots at a time,
a second claim in flight only under a backlog, none while results pile up."""

from __future__ import annotations

import pytest

from kongflow.engine.producer import claim_size


@pytest.mark.parametrize(
    ("concurrency", "free", "in_flight", "backlog", "results_backlogged", "size"),
    [
        (10, 10, 0, False, False, 4),  # a third of the slots, rounded up
        (10, 2, 0, False, False, 2),  # never more than are free
        (1, 1, 0, False, False, 1),
        (1000, 1000, 0, False, False, 334),
        (10, 10, 1, False, False, 0),  # one claim at a time without a backlog
        (10, 10, 1, True, False, 4),  # a second claim while they come back full
        (10, 10, 2, True, False, 0),  # never a third
        (10, 0, 0, True, False, 0),  # no free slot
        (10, -1, 0, False, False, 0),
        (10, 10, 0, False, True, 0),  # the completer is far behind
    ],
)
def test_claim_size(
    concurrency: int,
    free: int,
    in_flight: int,
    backlog: bool,
    results_backlogged: bool,
    size: int,
) -> None:
    assert claim_size(concurrency, free, in_flight, backlog, results_backlogged) == size
