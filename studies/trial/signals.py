"""Ctrl-C during a study: the first SIGINT stops the trial, later ones wait for its record.

A terminal sends SIGINT to every process of its foreground group, and a `--workers` parent
passes the signal on to its workers as well, so a worker sees two in a row. A second
KeyboardInterrupt would break the storage write that records the first one's trial as failed,
and leave that trial RUNNING; inside `InterruptOnce` it is ignored.

Python runs a signal handler wherever the main thread happens to be, a finalizer included (a
`__del__` run by garbage collection: Lightning's `Profiler` has one, and the study collects
after every trial), and an exception raised in a finalizer is printed as "Exception ignored"
and dropped. The study then went on, and ignored every later Ctrl-C. So safe points (the end of
each training and validation batch, the end of each trial) call `raise_if_swallowed()`.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType
from typing import Any

_active: InterruptOnce | None = None


class InterruptOnce:
    """Within the block, the first SIGINT raises KeyboardInterrupt and later ones are ignored.

    Installed only over Python's default handler in the main thread: a process that ignores
    SIGINT (started in the background) or handles it itself keeps its own behaviour.
    """

    def __init__(self, *, defer: bool = False) -> None:
        """`defer`: the first SIGINT raises nothing where it lands, only at the next safe point
        (`raise_if_swallowed`: a batch's end, a worker's next job), as a worker process wants:
        a KeyboardInterrupt raised inside a finalizer is lost with a traceback on stderr."""
        self.defer = defer
        self.interrupted = False
        self.reraised = False
        self._previous: Any = None

    def __enter__(self) -> InterruptOnce:
        if threading.current_thread() is threading.main_thread():
            previous = signal.getsignal(signal.SIGINT)
            if previous is signal.default_int_handler:
                global _active
                self._previous, _active = previous, self
                signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._previous is not None:
            global _active
            signal.signal(signal.SIGINT, self._previous)
            self._previous, _active = None, None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if not self.interrupted:
            self.interrupted = True
            if not self.defer:
                raise KeyboardInterrupt


def raise_if_swallowed() -> None:
    """Raise the KeyboardInterrupt of a Ctrl-C that never arrived: one raised where it was
    dropped (a finalizer) or caught. Once per Ctrl-C; a no-op outside `InterruptOnce`.

    An interrupt that did arrive unwinds the trial and the study, past every safe point, so a
    safe point that runs after one finds it swallowed.
    """
    guard = _active
    if guard is not None and guard.interrupted and not guard.reraised:
        guard.reraised = True
        raise KeyboardInterrupt
