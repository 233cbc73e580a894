"""Stopping on request: Ctrl-C (SIGINT) or SIGTERM (schedulers' preemption) asks the training loop
to finish the current step, save a checkpoint and exit; a second Ctrl-C interrupts at once.

A run stopped this way exits with the shell's code for the signal, 128 + its number (130 for
SIGINT, 143 for SIGTERM), never 0: it saved its work but did not finish.
"""

import signal
import threading
from typing import Optional


class StopRequests:
    """Context manager that turns the first SIGINT/SIGTERM into `requested = True`.

    Handlers can only be installed from the main thread; elsewhere (e.g. a notebook's worker
    thread) signals keep their default behaviour.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = False
        self.signal_number: Optional[int] = None  # the first signal received
        self._previous: dict = {}

    def __enter__(self) -> "StopRequests":
        if threading.current_thread() is threading.main_thread():
            for number in self.SIGNALS:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()

    def _handle(self, number: int, frame) -> None:
        if self.requested and number == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: the user does not want to wait for the save
        self.requested = True
        self.signal_number = self.signal_number or number


def interrupted_exit_code(signal_number: Optional[int]) -> int:
    """128 + the signal's number; a process stopped because another process of the run was
    signalled (under torchrun) exits as if it had been sent SIGTERM."""
    return 128 + (signal_number or signal.SIGTERM)
