"""Stopping on request: Ctrl-C (SIGINT) or SIGTERM (schedulers' preemption) asks the training loop
to finish the current step, save a checkpoint and exit; a second Ctrl-C interrupts at once."""

import signal
import threading


class StopRequests:
    """Context manager that turns the first SIGINT/SIGTERM into `requested = True`.

    Handlers can only be installed from the main thread; elsewhere (e.g. a notebook's worker
    thread) signals keep their default behaviour.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = False
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
