"""A line on the terminal every few seconds while one test (its fixtures included) runs long, so that a suite on a
slow or busy machine never looks hung: pytest itself prints nothing until a test ends."""

from __future__ import annotations

import os
import threading
import time

import pytest

#: Seconds between the lines; the first comes after this long in one test.
EVERY = 8.0


def terminal_fd(capture) -> int | None:
    """The terminal's file descriptor as fd-level capture saved it (pytest's ``FDCapture.targetfd_save``), or None
    (capture by ``sys`` only, or off): a line written there reaches the terminal without touching what the test's
    own capture collects."""
    out = getattr(getattr(capture, "_global_capturing", None), "out", None)
    return getattr(out, "targetfd_save", None)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    # Not through capture.global_and_fixture_disabled(): from this thread it would also let the test's own writes
    # of that moment escape to the terminal, and a test reading its captured stderr would find it empty.
    fd = terminal_fd(item.config.pluginmanager.get_plugin("capturemanager"))
    if fd is None:
        yield
        return
    done = threading.Event()
    start = time.monotonic()

    def beat():
        while not done.wait(EVERY):
            os.write(fd, f"\n    ... {item.nodeid} still running ({time.monotonic() - start:.0f} s)\n".encode())

    thread = threading.Thread(target=beat, name="test-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


class ControllerBeat:
    """The same under pytest-xdist, where the workers have no terminal: the controller hears when each test starts
    and finishes on a worker and, when nothing has been printed for `EVERY` seconds, names the longest-running one."""

    def __init__(self, reporter):
        self.reporter = reporter
        self.running: dict[str, float] = {}
        self.quiet_since = time.monotonic()
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.beat, name="test-heartbeat", daemon=True)

    def pytest_runtest_logstart(self, nodeid, location):
        with self.lock:
            self.running[nodeid] = time.monotonic()

    def pytest_runtest_logfinish(self, nodeid, location):
        with self.lock:
            self.running.pop(nodeid, None)
            self.quiet_since = time.monotonic()  # its result has just been printed

    def beat(self):
        while not self.done.wait(1.0):
            now = time.monotonic()
            with self.lock:
                if now - self.quiet_since < EVERY or not self.running:
                    continue
                nodeid, start = min(self.running.items(), key=lambda item: item[1])
                self.quiet_since = now
            self.reporter.ensure_newline()
            self.reporter.write_line(f"    ... {nodeid} still running ({now - start:.0f} s)")
            self.reporter.flush()


def pytest_sessionstart(session):
    config = session.config
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or config.pluginmanager.get_plugin("dsession") is None:  # no xdist controller here
        return
    beat = ControllerBeat(reporter)
    config.pluginmanager.register(beat, "controller-heartbeat")
    beat.thread.start()
    config.add_cleanup(lambda: (beat.done.set(), beat.thread.join()))
