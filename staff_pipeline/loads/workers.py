"""A few threads sending requests: the loads' one way of running work concurrently.

No futures and no queue: each thread takes the next item from the iterator when it is free, so
items are made one at a time and memory stays flat at any size. If anything raises (a bug, an
interrupt), every thread stops after the item in flight and the first error is raised to the
caller; the loads' journals hold what was completed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")


def run_workers(items: Iterator[T], handle: Callable[[T], None], concurrency: int, name: str) -> None:
    """Call ``handle`` on every item from ``concurrency`` threads (at least one)."""
    take = threading.Lock()
    stop = threading.Event()
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            while not stop.is_set():
                with take:
                    item = next(items, None)
                if item is None:
                    return
                handle(item)
        except BaseException as exc:  # handed to the caller's thread below
            errors.append(exc)
            stop.set()

    threads = [
        threading.Thread(target=worker, name=f"{name}-{n}", daemon=True) for n in range(max(1, concurrency))
    ]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            thread.join()
    finally:
        stop.set()  # also on KeyboardInterrupt here: the threads finish their item and stop
        for thread in threads:
            thread.join()
    if errors:
        raise errors[0]
