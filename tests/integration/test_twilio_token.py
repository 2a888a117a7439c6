"""A token minted by the official twilio helper library registers unchanged."""

from __future__ import annotations

from twilio.jwt.access_token import AccessToken
from twilio.jwt.access_token.grants import VoiceGrant

from protocol.addresses import new_sid
from tests.helpers.servers import RunningServer, TestAccount, start_server
from tests.helpers.wsclient import RawClient


async def test_twilio_voice_grant_token_registers() -> None:
    # twilio's AccessToken reads the system clock, so this server's clock starts at real time.
    import time

    acc = TestAccount()
    running: RunningServer = await start_server([acc], clock_start=time.time())
    try:
        token = AccessToken(acc.sid, acc.key_sid, acc.key_secret, identity="alice", ttl=3600)
        token.add_grant(VoiceGrant(incoming_allow=True, outgoing_application_sid=new_sid("AP")))
        client = await RawClient.open(running.ws_url)
        reply = await client.register(token.to_jwt())
        assert reply["type"] == "registered" and reply["identity"] == "alice"
        (p,) = await running.node.presence.query(acc.sid, ["alice"])
        assert p.presence.status.value == "available"
        await client.close()
    finally:
        await running.node.stop()
