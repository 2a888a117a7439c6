"""Attacks with access tokens and API keys, against a real server over real sockets.

Unsigned tokens, algorithm confusion both ways, a header that names another
account's key, a key revoked in the config, and the revocation of a key while
its sessions are live: over REST, on one node and across two nodes sharing a
real redis-server, durable across a restart (docs/tokens.md#revoking-an-api-key).
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any, AsyncIterator

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from presence_server.clock import ManualClock
from presence_server.node import Node
from protocol.addresses import new_sid
from protocol.errors import ErrorCode
from protocol.tokens import CONTENT_TYPE, default_grants, mint_token
from tests.helpers.servers import RunningServer, TestAccount, make_config, redis_nodes, start_server
from tests.helpers.wsclient import RawClient

NOW = 1_800_000_000.0  # the ManualClock's default start


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _pem_pair(kind: str) -> tuple[str, str]:
    """(private PEM, public PEM) of a fresh P-256 or Ed25519 key."""
    private: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey = (
        ec.generate_private_key(ec.SECP256R1()) if kind == "ec" else ed25519.Ed25519PrivateKey.generate()
    )
    private_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    return private_pem, public_pem


def _claims(key_sid: str, account_sid: str, identity: str = "alice") -> dict[str, Any]:
    return {
        "jti": f"{key_sid}-{int(NOW)}", "iss": key_sid, "sub": account_sid,
        "nbf": int(NOW), "exp": int(NOW) + 600, "grants": default_grants(identity),
    }


def _hs256(claims: dict[str, Any], secret: bytes, **header: Any) -> str:
    """An HS256 token signed with any bytes as the key - including a PEM, which
    PyJWT's own encode() refuses to do (that refusal is what an attacker skips)."""
    import hashlib
    import hmac

    head = _b64(json.dumps({"typ": "JWT", "alg": "HS256", "cty": CONTENT_TYPE, **header}).encode())
    body = _b64(json.dumps(claims).encode())
    signature = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(signature)}"


class Keys:
    """One account with three keys (HS secret, P-256 public, Ed25519 public), and another account."""

    def __init__(self) -> None:
        self.es_private, self.es_public = _pem_pair("ec")
        self.ed_private, self.ed_public = _pem_pair("ed")
        self.es_sid, self.ed_sid = new_sid("SK"), new_sid("SK")
        self.victim = TestAccount(identities=[{"identity": "alice"}])
        self.victim.extra = {
            "api_keys": [
                {"sid": self.victim.key_sid, "secret": self.victim.key_secret},
                {"sid": self.es_sid, "public_key_pem": self.es_public},
                {"sid": self.ed_sid, "public_key_pem": self.ed_public},
            ]
        }
        self.attacker = TestAccount()


@pytest.fixture
async def keyed() -> AsyncIterator[tuple[RunningServer, Keys]]:
    keys = Keys()
    server = await start_server([keys.victim, keys.attacker])
    try:
        yield server, keys
    finally:
        await server.node.stop()


async def _refused(server: RunningServer, token: str) -> tuple[int, int | None]:
    """Register with ``token``; the (error code, close code) it was refused with."""
    client = await RawClient.open(server.ws_url)
    reply = await client.register(token)
    assert reply["type"] == "error" and reply["fatal"] is True, reply
    code, _ = await client.closed()
    return reply["code"], code


async def _registered(url: str, token: str) -> RawClient:
    client = await RawClient.open(url)
    reply = await client.register(token)
    assert reply["type"] == "registered", reply
    return client


# -- forged and confused tokens -----------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
async def test_unsigned_alg_none_token_is_refused(keyed: tuple[RunningServer, Keys], alg: str) -> None:
    server, keys = keyed
    head = _b64(json.dumps({"typ": "JWT", "alg": alg}).encode())
    body = _b64(json.dumps(_claims(keys.victim.key_sid, keys.victim.sid)).encode())
    for token in (f"{head}.{body}.", f"{head}.{body}.{_b64(b'anything')}"):
        assert await _refused(server, token) == (ErrorCode.TOKEN_ALGORITHM_REFUSED.code, 4001)


async def test_hs256_keyed_with_the_public_key_pem_is_refused(keyed: tuple[RunningServer, Keys]) -> None:
    # The classic confusion: the attacker knows the public key (it is public) and
    # uses its PEM as an HMAC secret, hoping the server does the same.
    server, keys = keyed
    for sid, pem in ((keys.es_sid, keys.es_public), (keys.ed_sid, keys.ed_public)):
        for secret in (pem.encode(), pem.strip().encode()):
            token = _hs256(_claims(sid, keys.victim.sid), secret)
            assert await _refused(server, token) == (ErrorCode.TOKEN_ALGORITHM_REFUSED.code, 4001)


async def test_asymmetric_token_for_a_shared_secret_key_is_refused(keyed: tuple[RunningServer, Keys]) -> None:
    # The reverse: an ES256/EdDSA token (signed with the attacker's own private
    # key) naming a key that holds only an HMAC secret.
    server, keys = keyed
    for alg, private in (("ES256", _pem_pair("ec")[0]), ("EdDSA", _pem_pair("ed")[0])):
        token = jwt.encode(_claims(keys.victim.key_sid, keys.victim.sid), private, algorithm=alg, headers={"cty": CONTENT_TYPE})
        assert await _refused(server, token) == (ErrorCode.TOKEN_ALGORITHM_REFUSED.code, 4001)
    # The wrong curve for the key: EdDSA naming the P-256 key.
    token = jwt.encode(_claims(keys.es_sid, keys.victim.sid), _pem_pair("ed")[0], algorithm="EdDSA")
    assert await _refused(server, token) == (ErrorCode.TOKEN_ALGORITHM_REFUSED.code, 4001)


async def test_a_token_signed_by_the_wrong_private_key_is_refused(keyed: tuple[RunningServer, Keys]) -> None:
    server, keys = keyed
    attacker_private, attacker_public = _pem_pair("ec")
    claims = _claims(keys.es_sid, keys.victim.sid)
    forged = jwt.encode(claims, attacker_private, algorithm="ES256")
    assert await _refused(server, forged) == (ErrorCode.TOKEN_SIGNATURE_INVALID.code, 4001)
    # ... even when the header carries the attacker's public key (jwk) or points at it (jku, x5u):
    # the server picks the key by iss from its own store, never from the header.
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(serialization.load_pem_public_key(attacker_public.encode())))
    for header in ({"jwk": jwk}, {"jku": "http://127.0.0.1:9/keys.json"}, {"x5u": "http://127.0.0.1:9/cert.pem"}):
        forged = jwt.encode(claims, attacker_private, algorithm="ES256", headers=header)
        assert await _refused(server, forged) == (ErrorCode.TOKEN_SIGNATURE_INVALID.code, 4001)
    # The genuine key still works: the refusals above were about the forgeries.
    good = mint_token(
        key_sid=keys.es_sid, account_sid=keys.victim.sid, identity="alice", private_key_pem=keys.es_private,
        algorithm="ES256", now=NOW,
    )
    await _registered(server.ws_url, good)


async def test_kid_naming_another_accounts_key_gains_nothing(keyed: tuple[RunningServer, Keys]) -> None:
    server, keys = keyed
    attacker, victim = keys.attacker, keys.victim
    secret = attacker.key_secret.encode()
    # The attacker's own key signs, kid names the victim's key, sub the victim's account.
    token = _hs256(_claims(attacker.key_sid, victim.sid), secret, kid=victim.key_sid)
    assert await _refused(server, token) == (ErrorCode.TOKEN_KEY_ACCOUNT_MISMATCH.code, 4001)
    # iss names the victim's key, kid the attacker's (whose secret signed it).
    token = _hs256(_claims(victim.key_sid, victim.sid), secret, kid=attacker.key_sid)
    assert await _refused(server, token) == (ErrorCode.TOKEN_SIGNATURE_INVALID.code, 4001)
    # kid is ignored, not trusted: with the attacker's own key and account, the
    # session is the attacker's, in the attacker's account.
    own = await RawClient.open(server.ws_url)
    reply = await own.register(_hs256(_claims(attacker.key_sid, attacker.sid), secret, kid=victim.key_sid))
    assert reply["type"] == "registered" and reply["account"] == attacker.sid


async def test_a_key_revoked_in_the_config_is_refused_at_connect_and_over_rest() -> None:
    account = TestAccount()
    account.extra = {"api_keys": [{"sid": account.key_sid, "secret": account.key_secret, "revoked": True}]}
    server = await start_server([account])
    try:
        assert await _refused(server, server.token("alice")) == (ErrorCode.TOKEN_KEY_REVOKED.code, 4003)
        status, body = await _rest(server.http_url, "GET", f"/v1/Accounts/{account.sid}/Presence/alice", (account.key_sid, account.key_secret))
        assert status == 401 and body["code"] == ErrorCode.AUTHENTICATION_FAILED.code
        # Revoking it again over REST: it is gone already.
        status, body = await _rest(server.http_url, "DELETE", _key_path(account, account.key_sid), (account.sid, account.auth_token))
        assert status == 404 and body["code"] == ErrorCode.NOT_FOUND.code
    finally:
        await server.node.stop()


# -- revocation over REST ----------------------------------------------------------------------


def _key_path(account: TestAccount, key_sid: str) -> str:
    return f"/2010-04-01/Accounts/{account.sid}/Keys/{key_sid}.json"


async def _rest(base: str, method: str, path: str, auth: tuple[str, str]) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http:
        headers = {"Authorization": "Basic " + base64.b64encode(":".join(auth).encode()).decode()}
        async with http.request(method, base + path, headers=headers) as resp:
            text = await resp.text()
            return resp.status, (json.loads(text) if text else None)


async def _ended_by_revocation(client: RawClient) -> None:
    """The session ends without having sent anything: an unsolicited 20110, close 4003."""
    err = await client.recv(timeout=2.0)
    assert err["type"] == "error" and err["code"] == ErrorCode.TOKEN_KEY_REVOKED.code
    assert err["fatal"] is True and err.get("id") is None
    assert await client.closed(timeout=2.0) == (4003, "token_key_revoked")


async def _still_up(client: RawClient) -> None:
    await client.send({"type": "ping", "id": "still"})
    assert (await client.recv()) == {"type": "pong", "id": "still"}


async def test_revoking_a_key_over_rest_ends_its_live_sessions_at_once(tmp_path: Any) -> None:
    account = TestAccount(identities=[{"identity": "alice"}])
    other_key, other_secret = new_sid("SK"), "another-key-secret-" + new_sid("SK")
    account.extra = {"api_keys": [{"sid": account.key_sid, "secret": account.key_secret}, {"sid": other_key, "secret": other_secret}]}
    neighbour = TestAccount()
    data_dir = str(tmp_path)
    server = await start_server([account, neighbour], engine={"data_dir": data_dir})
    try:
        doomed = await _registered(server.ws_url, server.token("alice"))
        also_doomed = await _registered(server.ws_url, server.token("bob"))
        kept_token = mint_token(key_sid=other_key, account_sid=account.sid, identity="carol", secret=other_secret, now=NOW)
        kept = await _registered(server.ws_url, kept_token)
        bystander = await _registered(server.ws_url, server.token("dave", account=neighbour))
        path = _key_path(account, account.key_sid)

        # Who may not revoke: an API key (even the one named), another account, nobody.
        status, body = await _rest(server.http_url, "DELETE", path, (account.key_sid, account.key_secret))
        assert status == 403 and body["code"] == ErrorCode.FORBIDDEN.code
        status, body = await _rest(server.http_url, "DELETE", path, (other_key, other_secret))
        assert status == 403 and body["code"] == ErrorCode.FORBIDDEN.code
        status, body = await _rest(server.http_url, "DELETE", path, (neighbour.sid, neighbour.auth_token))
        assert status == 404 and body["code"] == ErrorCode.NOT_FOUND.code
        status, body = await _rest(server.http_url, "DELETE", path, (account.sid, "wrong"))
        assert status == 401 and body["code"] == ErrorCode.AUTHENTICATION_FAILED.code
        # Another account's key through one's own path: not found, like a key that does not exist.
        for key in (neighbour.key_sid, new_sid("SK"), "SKnotasid"):
            status, body = await _rest(server.http_url, "DELETE", _key_path(account, key), (account.sid, account.auth_token))
            assert status == 404 and body["code"] == ErrorCode.NOT_FOUND.code
        await _still_up(doomed)

        status, body = await _rest(server.http_url, "DELETE", path, (account.sid, account.auth_token))
        assert status == 204 and body is None
        await _ended_by_revocation(doomed)
        await _ended_by_revocation(also_doomed)
        await _still_up(kept)
        await _still_up(bystander)
        # The same token again, and a fresh one of the revoked key: refused at connect.
        assert await _refused(server, server.token("alice")) == (ErrorCode.TOKEN_KEY_REVOKED.code, 4003)
        # Renewing a live session with a token of the revoked key: refused too.
        await kept.send({"type": "update_token", "token": server.token("carol"), "id": 2})
        assert (await kept.recv())["code"] == ErrorCode.TOKEN_KEY_REVOKED.code
        # The key no longer authenticates REST calls; revoking it again: gone.
        status, _ = await _rest(server.http_url, "GET", f"/v1/Accounts/{account.sid}/Presence/alice", (account.key_sid, account.key_secret))
        assert status == 401
        status, body = await _rest(server.http_url, "DELETE", path, (account.sid, account.auth_token))
        assert status == 404
    finally:
        await server.node.stop()

    # Durable: the embedded engine keeps the revocation in its data directory.
    config = make_config([account, neighbour], engine={"data_dir": data_dir})
    node = Node(config, clock=ManualClock())
    await node.start("127.0.0.1", 0)
    try:
        restarted = RunningServer(node, node.clock, [account, neighbour])  # type: ignore[arg-type]
        assert await _refused(restarted, restarted.token("alice")) == (ErrorCode.TOKEN_KEY_REVOKED.code, 4003)
        await _registered(restarted.ws_url, mint_token(key_sid=other_key, account_sid=account.sid, identity="carol", secret=other_secret, now=NOW))
    finally:
        await node.stop()


async def test_revocation_on_one_redis_node_ends_the_session_on_the_other() -> None:
    account = TestAccount()
    other_key, other_secret = new_sid("SK"), "second-key-secret-" + new_sid("SK")
    account.extra = {"api_keys": [{"sid": account.key_sid, "secret": account.key_secret}, {"sid": other_key, "secret": other_secret}]}
    async with redis_nodes([account]) as nodes:
        node1, node2 = nodes
        ws1, ws2 = (f"ws://127.0.0.1:{n.port}/v1/connect" for n in nodes)
        token = mint_token(key_sid=account.key_sid, account_sid=account.sid, identity="alice", secret=account.key_secret, now=NOW)
        live = await _registered(ws1, token)
        kept = await _registered(ws1, mint_token(key_sid=other_key, account_sid=account.sid, identity="bob", secret=other_secret, now=NOW))
        kept_on_2 = await _registered(ws2, mint_token(key_sid=other_key, account_sid=account.sid, identity="carol", secret=other_secret, now=NOW))

        started = time.perf_counter()
        status, _ = await _rest(f"http://127.0.0.1:{node2.port}", "DELETE", _key_path(account, account.key_sid), (account.sid, account.auth_token))
        assert status == 204
        await _ended_by_revocation(live)
        elapsed = time.perf_counter() - started
        # No frame was sent and the clock did not move: the bus ended it, promptly.
        assert elapsed < 1.0, elapsed
        await _still_up(kept)
        await _still_up(kept_on_2)
        for url in (ws1, ws2):
            client = await RawClient.open(url)
            reply = await client.register(token)
            assert reply["code"] == ErrorCode.TOKEN_KEY_REVOKED.code
            assert (await client.closed())[0] == 4003
        print(f"revocation on node 2 -> session closed on node 1 in {elapsed * 1000:.1f} ms")


async def test_a_revocation_the_bus_did_not_bring_is_applied_within_one_heartbeat() -> None:
    # The bus delivers at most once: a node that missed the publish (its pub/sub
    # connection was down) reads the engine's revocations every node_heartbeat.
    account = TestAccount()
    server = await start_server([account])
    try:
        live = await _registered(server.ws_url, server.token("alice"))
        # Written to the engine only, as if the publish had been lost.
        assert await server.node.engine.revocations.revoke(account.sid, account.key_sid, at=NOW)
        await _still_up(live)
        await server.advance(server.node.config.server.node_heartbeat)
        await _ended_by_revocation(live)
    finally:
        await server.node.stop()
