"""Reading the next batch while this one is fitted. A streamed scan's patterns come from its file batch by
batch; one background thread reads batch k+1 while the native engine (which releases the GIL) fits batch k,
so a pass takes about the longer of its reading and its fitting rather than their sum."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np


def read_ahead(
    read: Callable[[np.ndarray], np.ndarray], batches: Sequence[np.ndarray]
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(batch, read(batch))`` for each batch in order, the next batch's read running in a background thread
    while the caller works on the current one. A read's error is raised here, at that batch. Two batches'
    patterns are held at once if the caller drops each before asking for the next (``del``)."""
    if len(batches) == 0:
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mspt-read-ahead") as pool:
        pending = pool.submit(read, batches[0])
        for i, batch in enumerate(batches):
            patterns = pending.result()
            if i + 1 < len(batches):
                pending = pool.submit(read, batches[i + 1])
            yield batch, patterns
            del patterns
