"""Inflate a gzip file in a thread of its own, ahead of the threads that parse it.

Deflate can only be inflated serially (rapidgzip's parallel inflation of one member measured 3x the
CPU time of ISA-L's on this project's 2-core machines, leaving the parsers less of the second core), so
two cores are used as a pipeline: one thread inflates with ISA-L (`isal`, which releases the GIL while
it inflates and writes straight into the caller's buffer) and cuts the text into pieces, while the
parse threads turn the previous pieces into arrays.

`read_ahead` runs any iterator (here: the pieces of the inflated text) in such a thread. Items and
errors arrive in order: an error the iterator raises (a truncated or corrupt stream) is raised after
the items before it, exactly where a loop in the calling thread would have raised it.
"""
from __future__ import annotations

import queue
import threading

DEPTH = 3   # pieces inflated ahead of the parsers (3 x 8 MiB)


def open_gzip(raw):
    """The inflated content of the gzip file object `raw` (any number of members), as a binary stream."""
    from isal import igzip

    return igzip.open(raw, "rb")


def read_ahead(items, *, depth: int = DEPTH):
    """Yield what `items` yields, computed in a thread up to `depth` items ahead of the caller."""
    out: queue.Queue = queue.Queue(depth)
    stop = threading.Event()

    def put(entry) -> bool:
        while not stop.is_set():
            try:
                out.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((True, item)):
                    return
            put((False, None))
        except BaseException as e:  # handed over, raised in the caller's thread
            put((False, e))

    thread = threading.Thread(target=produce, name="read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            is_item, value = out.get()
            if is_item:
                yield value
            elif value is None:
                return
            else:
                raise value
    finally:
        stop.set()  # the caller stopped early (an error, a break): let the thread finish and go
        thread.join()
