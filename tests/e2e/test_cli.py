"""The `entente` command line: user management and configuration checks."""
import asyncio

import pytest

from conftest import BIN, EntenteServer
from xmpp_client import Client


def run(*args, input=None):
    import subprocess

    return subprocess.run(
        [str(BIN), *args], input=input, capture_output=True, text=True, timeout=60
    )


def test_user_add_list_passwd_remove(workdir):
    s = EntenteServer(workdir)
    r = s.cli("user", "list")
    assert r.stdout.strip() == ""
    s.add_user("alice", "pw-one")
    s.add_user("bob@localhost", "pw-two")
    r = s.cli("user", "list")
    assert r.stdout.split() == ["alice@localhost", "bob@localhost"]
    # Adding twice fails.
    r = s.cli("user", "add", "alice", input="x\n", check=False)
    assert r.returncode != 0 and "already exists" in r.stderr
    # Bad names and foreign domains are refused.
    r = s.cli("user", "add", "no spaces", input="x\n", check=False)
    assert r.returncode != 0
    r = s.cli("user", "add", "eve@elsewhere.example", input="x\n", check=False)
    assert r.returncode != 0 and "elsewhere.example" in r.stderr
    # An empty password is refused.
    r = s.cli("user", "add", "carol", input="\n", check=False)
    assert r.returncode != 0
    assert "carol@localhost" not in s.cli("user", "list").stdout
    # passwd on a missing user fails.
    r = s.cli("user", "passwd", "nobody", input="x\n", check=False)
    assert r.returncode != 0
    s.cli("user", "passwd", "alice", input="pw-new\n")

    s.start()
    try:

        async def logins():
            a = Client(s, "alice", "pw-one")
            with pytest.raises(AssertionError):
                await a.login()
            a.disconnect()
            a = await Client(s, "alice", "pw-new").login()
            await a.logout()
            b = await Client(s, "bob", "pw-two").login()
            await b.logout()

        asyncio.run(logins())
        # Removing a user while the server runs: the account can no longer log in.
        s.cli("user", "remove", "bob")
        assert s.cli("user", "list").stdout.split() == ["alice@localhost"]

        async def gone():
            b = Client(s, "bob", "pw-two")
            with pytest.raises(AssertionError):
                await b.login()
            b.disconnect()

        asyncio.run(gone())
    finally:
        s.stop()


def test_config_check_ok(workdir):
    s = EntenteServer(workdir)
    r = run("config", "check", str(s.config))
    assert r.returncode == 0, r.stderr
    assert "OK" in r.stdout


@pytest.mark.parametrize(
    "text,key",
    [
        ('domain = "localhost"\n[c2s]\nlistn = ["127.0.0.1:5222"]\n', "listn"),
        ('[c2s]\nlisten = ["not an address"]\n', "c2s.listen[0]"),
        ('[c2s]\nlisten = ["127.0.0.1:5222", "127.0.0.1:99999"]\n', "c2s.listen[1]"),
        ('domain = "bad domain"\n', "domain"),
        ("[c2s]\nmax_stanza_bytes = 10\n", "c2s.max_stanza_bytes"),
        ('[limits]\noffline_messages_per_user = "many"\n', "offline_messages_per_user"),
        ("[nosuchsection]\nx = 1\n", "nosuchsection"),
        ('[log]\nformat = "xml"\n', "log.format"),
    ],
)
def test_config_check_names_the_key(workdir, text, key):
    f = workdir / "bad.toml"
    f.write_text(text)
    r = run("config", "check", str(f))
    assert r.returncode != 0
    assert key in r.stderr, r.stderr
    assert r.stdout.strip() == ""


def test_config_check_missing_file(workdir):
    r = run("config", "check", str(workdir / "nope.toml"))
    assert r.returncode != 0
    assert "nope.toml" in r.stderr


def test_serve_refuses_bad_config(workdir):
    f = workdir / "bad.toml"
    f.write_text('[c2s]\nlisten = ["nowhere"]\n')
    r = run("--config", str(f), "serve")
    assert r.returncode != 0
    assert "c2s.listen[0]" in r.stderr
