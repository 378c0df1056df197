"""A line on the terminal every few seconds while one test (its fixtures included) runs long, so that a suite on a
slow or busy machine never looks hung: pytest itself prints nothing until a test ends."""

from __future__ import annotations

import threading
import time

import pytest

#: Seconds between the lines; the first comes after this long in one test.
EVERY = 8.0


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    reporter = item.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or item.config.pluginmanager.get_plugin("capturemanager") is None:
        yield
        return
    done = threading.Event()
    start = time.monotonic()

    capture = item.config.pluginmanager.get_plugin("capturemanager")

    def beat():
        while not done.wait(EVERY):
            line = f"    ... {item.nodeid} still running ({time.monotonic() - start:.0f} s)"
            with capture.global_and_fixture_disabled():  # to the terminal, not into the test's captured output
                reporter.ensure_newline()
                reporter.write_line(line)
                reporter.flush()

    thread = threading.Thread(target=beat, name="test-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
