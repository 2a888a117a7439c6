"""Fixtures of the real-browser tests (Playwright's sync API driving Debian's
Chromium). These tests are never skipped: a machine without Chromium fails
them, and ``make test`` installs it."""

from __future__ import annotations

from typing import Iterator

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright

from tests.helpers.browser import CHROMIUM, CHROMIUM_ARGS, DevServer, start_dev_server, stop_dev_server


# Module-scoped, not session-scoped: Playwright's sync API keeps an event loop
# running while it is open, and pytest-asyncio cannot run the async tests of
# later modules inside a running loop. A launch costs well under a second.
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def dev_server() -> Iterator[DevServer]:
    """One dev-mode server subprocess per test module."""
    server = start_dev_server()
    yield server
    stop_dev_server(server)


@pytest.fixture
def new_page(browser: Browser) -> Iterator[object]:
    """A factory of pages, each in its own browser context (its own storage,
    as two people on two machines would have). Console errors are collected
    on ``page.console_errors`` for the tests to check."""
    contexts: list[BrowserContext] = []

    def make(**context_options: object) -> Page:
        context = browser.new_context(**context_options)  # type: ignore[arg-type]
        contexts.append(context)
        page = context.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.console_errors = errors  # type: ignore[attr-defined]
        return page

    yield make
    for context in contexts:
        context.close()
