"""SIGINT/SIGTERM as a request to save and exit, for train.py and apex.py."""

import signal
import threading


class StopRequest:
    """Truthy once SIGINT or SIGTERM arrived: the loop then saves and exits. A second SIGINT
    stops at once (KeyboardInterrupt). Outside the main thread (tests run a trainer in a
    thread) no handler is installed: signals can only be handled there."""

    def __init__(self):
        self.signal_name = None
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        if self.signal_name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name

    def __bool__(self):
        return self.signal_name is not None
