"""Pages that run the browser SDK for tests/e2e/test_sdk.py.

A page is opened on the server's own origin (``/healthz``, or a page served
by Playwright's router with a chosen Content-Security-Policy) and the SDK is
imported from ``/sdk/presence.js`` like any app would. The harness installed
in the page records every event of each client it makes, and spies on the
WebSocket frames the SDK sends (a subclass of the browser's own WebSocket:
the frames still go to the real server), so the tests can check what went
over the wire, and what did not.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from base64 import b64encode
from typing import Any

from playwright.sync_api import Page

from protocol.tokens import default_grants, mint_token
from tests.helpers.browser import DevServer

# Installs window.harness in the page; the argument is the WebSocket URL.
_INSTALL = """
async (wsUrl) => {
  const sdk = await import('/sdk/presence.js');
  const Native = window.WebSocket;
  const wire = { opened: 0, sent: [], received: [], sockets: [] };
  // The frames the SDK sends and receives, recorded on their way to and
  // from the real server.
  class SpySocket extends Native {
    constructor(...args) {
      super(...args);
      wire.opened += 1;
      wire.sockets.push(this);
      this.addEventListener('message', (event) => wire.received.push(JSON.parse(event.data)));
    }
    send(data) { wire.sent.push(JSON.parse(data)); return super.send(data); }
  }
  window.WebSocket = SpySocket;
  const plain = (value) => {
    if (value instanceof sdk.PresenceError) return { name: value.name, message: value.message, code: value.code, fatal: value.fatal, closeCode: value.closeCode };
    if (value instanceof Error) return { name: value.name, message: value.message };
    if (value instanceof sdk.Call) return { sid: value.sid, from: value.from, to: value.to, direction: value.direction, status: value.status };
    if (value && typeof value === 'object' && typeof value.markRead === 'function') {
      const { markRead, ack, ...rest } = value; return rest;
    }
    return value === undefined ? null : JSON.parse(JSON.stringify(value));
  };
  const harness = {
    sdk, wire, wsUrl, plain, clients: {}, events: {}, tokenCalls: {}, calls: {}, messages: {}, peers: {},
    make(name, { tokens, useFunction = false, ...options }) {
      const events = harness.events[name] = [];
      harness.tokenCalls[name] = 0;
      const queue = [...tokens];
      const token = useFunction
        ? async () => { harness.tokenCalls[name] += 1; return queue.length > 1 ? queue.shift() : queue[0]; }
        : tokens[0];
      const client = new sdk.PresenceClient({ url: wsUrl, token, ...options });
      for (const event of ['state', 'registered', 'presence', 'invite', 'message', 'error', 'closed', 'token_updated']) {
        client.on(event, (value) => {
          events.push({ event, data: plain(value) });
          if (event === 'invite') harness.calls[name] = value;
          if (event === 'message') (harness.messages[name] ??= []).push(value);
        });
      }
      harness.clients[name] = client;
      return client;
    },
    of(name, event) { return harness.events[name].filter((e) => e.event === event).map((e) => e.data); },
    sent(type) { return wire.sent.filter((f) => f.type === type); },
    // Hand the SDK a copy of a frame the server sent earlier, as a
    // redelivery would (the server sends each frame once per connection).
    replay(frame) {
      const socket = wire.sockets[wire.sockets.length - 1];
      socket.dispatchEvent(new MessageEvent('message', { data: JSON.stringify(frame) }));
    },
    async attempt(fn) {
      try { await fn(); return null; } catch (err) { return plain(err); }
    },
  };
  window.harness = harness;
}
"""


def sdk_page(new_page: Any, server: DevServer, *, csp: str | None = None) -> Page:
    """A fresh page (its own browser context) with the SDK and the harness
    loaded. ``csp``: a Content-Security-Policy the page adopts first (as a
    <meta> element: a page fulfilled by Playwright's router would count as a
    public site, which Chromium's local network access checks keep from
    connecting to 127.0.0.1)."""
    page: Page = new_page()
    # /healthz is not a page: keep the browser's favicon request from
    # logging a 404 among the console errors the tests check.
    page.route("**/favicon.ico", lambda route: route.fulfill(status=204))
    page.goto(server.url + "/healthz")
    if csp is not None:
        page.evaluate(
            """(policy) => {
              const meta = document.createElement('meta');
              meta.httpEquiv = 'Content-Security-Policy';
              meta.content = policy;
              document.head.append(meta);
            }""",
            csp,
        )
    page.evaluate(_INSTALL, server.ws_url)
    return page


def token(
    server: DevServer,
    identity: str,
    *,
    ttl: float = 3600,
    issued_ago: float = 0,
    outgoing: bool = True,
    incoming: bool = True,
) -> str:
    """An access token from the dev account's API key, as a customer backend
    would mint it. ``issued_ago`` backdates it (nbf), keeping ``ttl`` from then."""
    key = server.account["api_keys"][0]
    grants = default_grants(identity)
    if not incoming:
        del grants["voice"]
    if outgoing:
        grants.setdefault("voice", {})["outgoing"] = {"application_sid": application_sid(server)}
    return mint_token(
        key_sid=key["sid"],
        account_sid=server.account_sid,
        identity=identity,
        secret=key["secret"],
        ttl=ttl,
        now=time.time() - issued_ago,
        grants=grants,
    )


def application_sid(server: DevServer) -> str:
    account = server.account
    if "application_sid" in account:  # the dev file's shape
        return str(account["application_sid"])
    return str(account["applications"][0]["sid"])


def make_client(page: Page, name: str, tokens: list[str], *, use_function: bool = False, **options: Any) -> None:
    page.evaluate(
        "([name, spec]) => { harness.make(name, spec); }",
        [name, {"tokens": tokens, "useFunction": use_function, **options}],
    )


def console_errors(page: Page) -> list[str]:
    """What the page logged as errors (collected by the ``new_page`` fixture)."""
    errors: list[str] = getattr(page, "console_errors")
    return errors


def connect(page: Page, name: str) -> dict[str, Any]:
    info: dict[str, Any] = page.evaluate("(name) => harness.clients[name].connect()", name)
    return info


def events(page: Page, name: str, event: str) -> list[Any]:
    result: list[Any] = page.evaluate("([name, event]) => harness.of(name, event)", [name, event])
    return result


def sent(page: Page, frame_type: str | None = None) -> list[dict[str, Any]]:
    if frame_type is None:
        frames: list[dict[str, Any]] = page.evaluate("() => harness.wire.sent")
    else:
        frames = page.evaluate("(type) => harness.sent(type)", frame_type)
    return frames


# -- REST, as a backend would use it (HTTP Basic with the account's auth token) --------------


def _rest(server: DevServer, method: str, path: str, form: dict[str, str] | None = None) -> dict[str, Any]:
    sid, auth_token = server.auth
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    request = urllib.request.Request(server.url + path, data=data, method=method)
    request.add_header("Authorization", "Basic " + b64encode(f"{sid}:{auth_token}".encode()).decode())
    with urllib.request.urlopen(request, timeout=10) as response:
        body: dict[str, Any] = json.loads(response.read())
    return body


def send_message(server: DevServer, to: str, body: str, sender: str = "+15550001111") -> dict[str, Any]:
    return _rest(server, "POST", f"/2010-04-01/Accounts/{server.account_sid}/Messages.json", {"To": to, "From": sender, "Body": body})


def message_record(server: DevServer, sid: str) -> dict[str, Any]:
    return _rest(server, "GET", f"/2010-04-01/Accounts/{server.account_sid}/Messages/{sid}.json")


def wait_for_message_status(server: DevServer, sid: str, status: str, timeout: float = 5.0) -> dict[str, Any]:
    """Poll the message's REST resource until it has ``status`` (a wait for a
    condition on the server, which the browser cannot see)."""
    deadline = time.monotonic() + timeout
    while True:
        record = message_record(server, sid)
        if record["status"] == status:
            return record
        if time.monotonic() > deadline:
            raise AssertionError(f"message {sid} is {record['status']!r}, not {status!r}, after {timeout} s: {record}")
        time.sleep(0.05)
