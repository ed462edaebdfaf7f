"""The admin HTTP API (`[admin]`, docs/admin-api.md) against the real binary: bearer
authentication, accounts (created over HTTP, then used by a real client), sessions (listed and
kicked), presence policy, and the OpenAPI document."""
import asyncio
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from admin_helpers import Api, admin_config
from xmpp_client import Client, next_matching



@pytest.fixture
def admin(make_server, workdir):
    """A server with the admin API on a free port; yields (server, Api)."""
    port, admin_lines = admin_config(workdir)
    s = make_server(admin_lines)
    s.add_user("bob", "bob-pw")
    s.start()
    api = Api(port).wait_up()
    return s, api


def test_auth_health_ready_openapi(admin):
    _, api = admin
    assert api.call("GET", "/health", auth=False) == (200, {"status": "ok"})
    for method, path in [("GET", "/api/users"), ("GET", "/ready"), ("GET", "/openapi.json"),
                         ("DELETE", "/api/users/bob"), ("GET", "/api/nowhere")]:
        st, body = api.call(method, path, auth=False)
        assert st == 401 and "error" in body, (path, st, body)
        st, body = api.call(method, path, token="wrong-token")
        assert st == 401 and "error" in body, (path, st, body)
    # bob survived the unauthenticated DELETE.
    assert api.call("GET", "/api/users")[1]["users"] == ["bob@localhost"]
    st, body = api.call("GET", "/ready")
    assert st == 200, body
    st, doc = api.call("GET", "/openapi.json")
    assert st == 200
    assert doc["openapi"].startswith("3.0")
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert set(doc["paths"]) == {
        "/health", "/ready", "/openapi.json", "/api/users", "/api/users/{name}",
        "/api/users/{name}/password", "/api/users/{name}/policy",
        "/api/users/{name}/policy/{target}", "/api/policy", "/api/sessions",
        "/api/sessions/{jid}", "/api/cluster", "/metrics", "/api/federation/links",
        "/api/federation/links/{domain}/drain", "/api/federation/domains",
        "/api/federation/domains/{domain}", "/api/federation/domains/{domain}/override",
        "/api/federation/policy",
    }
    st, body = api.call("GET", "/api/nowhere")
    assert st == 404 and "error" in body


def test_users_create_login_password(admin):
    server, api = admin

    st, body = api.call("POST", "/api/users", {"name": "carol", "password": "carol-pw"})
    assert st == 201, body
    assert body == {"jid": "carol@localhost"}
    st, body = api.call("POST", "/api/users", {"name": "carol", "password": "x"})
    assert st == 409 and "exists" in body["error"]
    st, body = api.call("POST", "/api/users", {"name": "dave"})
    assert st == 400 and "password" in body["error"]
    st, body = api.call("POST", "/api/users", {"name": "bad name", "password": "x"})
    assert st == 400 and "name" in body["error"]
    st, body = api.call("POST", "/api/users", {"name": "x@elsewhere.example", "password": "x"})
    assert st == 400 and "name" in body["error"]
    assert api.call("GET", "/api/users")[1]["users"] == ["bob@localhost", "carol@localhost"]

    async def scenario():
        c = await Client(server, "carol", "carol-pw").login()
        await c.logout()
        st, body = await api.acall("PUT", "/api/users/carol/password", {"password": "new-pw"})
        assert st == 204, body
        old = Client(server, "carol", "carol-pw")
        with pytest.raises(AssertionError, match="could not log in"):
            await old.login()
        old.disconnect()
        c = await Client(server, "carol", "new-pw").login()
        await c.logout()

    asyncio.run(scenario())
    st, body = api.call("PUT", "/api/users/nobody/password", {"password": "x"})
    assert st == 404, body
    st, body = api.call("PUT", "/api/users/carol/password", {"pass": "x"})
    assert st == 400 and "password" in body["error"]
    assert api.call("DELETE", "/api/users/carol") == (204, None)
    assert api.call("DELETE", "/api/users/carol")[0] == 404
    assert api.call("GET", "/api/users")[1]["users"] == ["bob@localhost"]


def test_sessions_list_and_kick(admin):
    server, api = admin

    async def scenario():
        b = await Client(server, "bob", "bob-pw", resource="laptop", priority=5).login()
        deadline = time.time() + 5
        while True:
            st, body = await api.acall("GET", "/api/sessions")
            assert st == 200
            sessions = body["sessions"]
            if sessions and sessions[0]["available"]:
                break
            assert time.time() < deadline, sessions
            await asyncio.sleep(0.05)
        assert sessions == [{"jid": "bob@localhost/laptop", "available": True, "priority": 5}]

        jid = urllib.parse.quote("bob@localhost/laptop", safe="")
        st, body = await api.acall("DELETE", f"/api/sessions/{jid}")
        assert st == 204, body
        err = await next_matching(b.stream_errors)
        assert err["condition"] == "policy-violation", err
        assert "administrator" in err["text"], err
        await asyncio.wait_for(b.disconnected_evt.wait(), 10)

        st, body = await api.acall("DELETE", f"/api/sessions/{jid}")
        assert st == 404, body
        # The slash may also be sent as it is.
        p = await Client(server, "bob", "bob-pw", resource="phone").login()
        st, body = await api.acall("DELETE", "/api/sessions/bob@localhost/phone")
        assert st == 204, body
        await asyncio.wait_for(p.disconnected_evt.wait(), 10)
        st, body = await api.acall("DELETE", "/api/sessions/bob@localhost")
        assert st == 400 and "jid" in body["error"], body
        deadline = time.time() + 5
        while (await api.acall("GET", "/api/sessions"))[1]["sessions"]:
            assert time.time() < deadline
            await asyncio.sleep(0.05)

    asyncio.run(scenario())


def test_policy_round_trip(admin):
    _, api = admin
    st, body = api.call("GET", "/api/policy")
    assert st == 200
    assert body == {
        "local_domains": ["localhost"],
        "federation": {"policy": "open", "domains": []},
        "default": "ask",
    }
    assert api.call("GET", "/api/users/bob/policy") == (
        200, {"jid": "bob@localhost", "rules": [], "blocked": []})
    assert api.call("PUT", "/api/users/bob/policy",
                    {"target": "*.example.com", "rule": "deny"}) == (204, None)
    assert api.call("PUT", "/api/users/bob/policy",
                    {"target": "eve@example.org", "rule": "block"}) == (204, None)
    st, body = api.call("GET", "/api/users/bob/policy")
    assert st == 200
    assert body["rules"] == [
        {"target": "*.example.com", "rule": "deny"},
        {"target": "eve@example.org", "rule": "block"},
    ]
    st, body = api.call("PUT", "/api/users/bob/policy", {"target": "example.com", "rule": "maybe"})
    assert st == 400 and body["error"].startswith("rule"), body
    st, body = api.call("PUT", "/api/users/bob/policy", {"target": "a b", "rule": "allow"})
    assert st == 400 and body["error"].startswith("target"), body
    st, body = api.call("PUT", "/api/users/nobody/policy", {"target": "x.org", "rule": "allow"})
    assert st == 404, body
    st, body = api.call("PUT", "/api/users/bob/policy", raw=b"not json")
    assert st == 400 and "JSON" in body["error"], body
    st, body = api.call("PUT", "/api/users/bob/policy", {"rule": "allow"})
    assert st == 400 and body["error"].startswith("target"), body

    assert api.call("DELETE", "/api/users/bob/policy/*.example.com") == (204, None)
    assert api.call("DELETE", "/api/users/bob/policy/*.example.com")[0] == 404
    st, body = api.call("GET", "/api/users/bob/policy")
    assert body["rules"] == [{"target": "eve@example.org", "rule": "block"}]
