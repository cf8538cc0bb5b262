"""Ctrl-C during a study: the first SIGINT stops the trial, later ones wait for its record.

A terminal sends SIGINT to every process of its foreground group, and a `--workers` parent
passes the signal on to its workers as well, so a worker sees two in a row. A second
KeyboardInterrupt would break the storage write that records the first one's trial as failed,
and leave that trial RUNNING; inside `InterruptOnce` it is ignored.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType
from typing import Any


class InterruptOnce:
    """Within the block, the first SIGINT raises KeyboardInterrupt and later ones are ignored.

    Installed only over Python's default handler in the main thread: a process that ignores
    SIGINT (started in the background) or handles it itself keeps its own behaviour.
    """

    def __init__(self) -> None:
        self.interrupted = False
        self._previous: Any = None

    def __enter__(self) -> InterruptOnce:
        if threading.current_thread() is threading.main_thread():
            previous = signal.getsignal(signal.SIGINT)
            if previous is signal.default_int_handler:
                self._previous = previous
                signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if not self.interrupted:
            self.interrupted = True
            raise KeyboardInterrupt
