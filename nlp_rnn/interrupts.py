"""Ctrl-C (SIGINT) and SIGTERM during a run, delivered where the run can act on them.

Python runs a signal handler between two bytecodes of the main thread, wherever that thread
is. Raised there, ``KeyboardInterrupt`` can land inside a finaliser (a TensorFlow iterator's
or a generator's ``__del__``, a weakref callback), where Python prints "Exception ignored"
and goes on: the run keeps training and the user's Ctrl-C is lost. So while Keras trains
(:func:`deferred`), the handler only notes the signal and a callback raises it at the next
batch boundary (:func:`raise_pending`), a plain frame of the training loop. Anywhere else, and
for a second signal while one is pending, the handler raises at once.

SIGINT raises ``KeyboardInterrupt`` (the CLI answers "error: interrupted", exit 130);
SIGTERM raises :class:`Terminated`, which the pipeline turns back into death by SIGTERM (143)
after recording the run as ``interrupted``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading


class Terminated(BaseException):
    """SIGTERM arrived: unwinds like Ctrl-C so the run records ``interrupted``."""


_pending: int | None = None  # the signal noted while deferring
_deferring = False


def _exception_for(signum: int) -> BaseException:
    return KeyboardInterrupt() if signum == signal.SIGINT else Terminated()


def _handler(signum, frame) -> None:
    global _pending
    if _deferring and _pending is None:
        _pending = signum  # raised by raise_pending() at the next batch boundary
        return
    raise _exception_for(signum)


@contextlib.contextmanager
def signals_as_exceptions():
    """While a run runs, SIGINT and SIGTERM unwind it as exceptions (see the module)."""
    global _pending
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return
    _pending = None
    # A signal the process was started ignoring (nohup, a shell's background job) stays
    # ignored, as Python itself leaves SIGINT then.
    previous = {sig: signal.signal(sig, _handler) for sig in (signal.SIGINT, signal.SIGTERM)
                if signal.getsignal(sig) is not signal.SIG_IGN}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def deferred():
    """Around training: a signal is noted, and raised by :func:`raise_pending` (called by a
    callback after every batch) or when the block ends, whichever comes first."""
    global _deferring
    _deferring = True
    try:
        yield
    finally:
        _deferring = False
    raise_pending()


def raise_pending() -> None:
    """Raise the signal noted while deferring, if any."""
    global _pending
    if _pending is not None:
        signum, _pending = _pending, None
        raise _exception_for(signum)


def die_of_sigterm() -> None:
    """End the process as SIGTERM would have (exit status 128+15 in a shell)."""
    sys.stdout.flush()
    sys.stderr.flush()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)
