"""Reading the next batch while this one is fitted (mspt.ptycho.read_ahead): the batches come in order with
their own patterns, the next read runs in a background thread while the caller holds the current batch, and
a read's error surfaces at its batch."""

import threading

import numpy as np
import pytest

from mspt.ptycho.read_ahead import read_ahead

BATCHES = [np.array([0, 1]), np.array([2, 3]), np.array([4])]


def patterns_of(batch):
    return np.stack([np.full((3, 3), float(i)) for i in batch])


def test_batches_come_in_order_with_their_patterns():
    got = [(batch, patterns) for batch, patterns in read_ahead(patterns_of, BATCHES)]
    assert [b.tolist() for b, _ in got] == [b.tolist() for b in BATCHES]
    for batch, patterns in got:
        np.testing.assert_array_equal(patterns, patterns_of(batch))
    assert list(read_ahead(patterns_of, [])) == []


def test_the_next_batch_is_read_while_the_caller_holds_this_one():
    readers, started = [], {i: threading.Event() for i in range(len(BATCHES))}

    def read(batch):
        readers.append(threading.current_thread().name)
        started[int(batch[0]) // 2].set()
        return patterns_of(batch)

    for k, (batch, _) in enumerate(read_ahead(read, BATCHES)):
        if k + 1 < len(BATCHES):  # the caller still works on batch k: batch k + 1's read has begun meanwhile
            assert started[k + 1].wait(timeout=30), f"batch {k + 1} was not read while batch {k} was held"
    assert all(name.startswith("mspt-read-ahead") for name in readers)


def test_a_read_error_surfaces_at_its_batch():
    def read(batch):
        if batch[0] == 2:
            raise OSError("the file went away")
        return patterns_of(batch)

    seen = []
    with pytest.raises(OSError, match="went away"):
        for batch, _ in read_ahead(read, BATCHES):
            seen.append(batch.tolist())
    assert seen == [[0, 1]]
