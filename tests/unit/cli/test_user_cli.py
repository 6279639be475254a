"""``mailmoat user add|list|del`` through click's runner; results checked with the library and
by reading the file as plain JSON lines."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from click.testing import CliRunner

from mailmoat.cli.main import main
from mailmoat.gateway.users import UserDB, verify_password


def run(*args: str, input: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), input=input)
    return result.exit_code, result.output


def test_add_list_del(tmp_path: Path) -> None:
    users = tmp_path / "users.jsonl"
    code, out = run("user", "add", "alice", "--address", "alice@example.org", "--address",
                    "*@alice.example", "--users-file", str(users), input="pw one\npw one\n")
    assert code == 0, out
    assert "added" in out
    assert stat.S_IMODE(users.stat().st_mode) == 0o600
    (record,) = [json.loads(line) for line in users.read_text().splitlines()]
    assert record["user"] == "alice"
    assert record["addresses"] == ["alice@example.org", "*@alice.example"]
    assert record["hash"].startswith("$scrypt$ln=14,r=8,p=1$")
    assert verify_password("pw one", record["hash"])

    code, out = run("user", "add", "bob", "--password-stdin", "--users-file", str(users),
                    input="bob pw\n")
    assert code == 0, out
    user = UserDB.load(users).get("bob")
    assert user is not None
    assert verify_password("bob pw", user.password_hash)

    code, out = run("user", "list", "--users-file", str(users))
    assert code == 0
    assert out.splitlines() == [
        "alice\talice@example.org, *@alice.example",
        "bob\t(no address: cannot send)",
    ]
    code, out = run("user", "list", "--json", "--users-file", str(users))
    assert json.loads(out) == [
        {"user": "alice", "addresses": ["alice@example.org", "*@alice.example"]},
        {"user": "bob", "addresses": []},
    ]
    assert "scrypt" not in out

    code, out = run("user", "del", "bob", "--users-file", str(users))
    assert code == 0, out
    assert UserDB.load(users).get("bob") is None
    code, out = run("user", "del", "bob", "--users-file", str(users))
    assert code != 0
    assert "no user 'bob'" in out


def test_add_refuses_duplicates_and_bad_input(tmp_path: Path) -> None:
    users = tmp_path / "users.jsonl"
    assert run("user", "add", "a", "--password-stdin", "--users-file", str(users), input="x\n")[0] == 0
    code, out = run("user", "add", "a", "--password-stdin", "--users-file", str(users), input="y\n")
    assert code != 0
    assert "exists already" in out
    code, _ = run("user", "add", "a", "--replace", "--password-stdin", "--users-file", str(users),
                  input="y\n")
    assert code == 0
    user = UserDB.load(users).get("a")
    assert user is not None
    assert verify_password("y", user.password_hash)
    code, out = run("user", "add", "b", "--password-stdin", "--users-file", str(users), input="\n")
    assert code != 0
    assert "empty password" in out
    code, out = run("user", "add", "c", "--address", "c*@x.org", "--password-stdin",
                    "--users-file", str(users), input="p\n")
    assert code != 0
    assert "*@domain" in out
    code, out = run("user", "add", "has space", "--password-stdin", "--users-file", str(users),
                    input="p\n")
    assert code != 0


def test_prompt_confirmation_mismatch(tmp_path: Path) -> None:
    users = tmp_path / "users.jsonl"
    code, out = run("user", "add", "a", "--users-file", str(users), input="one\ntwo\none\none\n")
    assert code == 0, out
    assert "do not match" in out.lower() or "don't match" in out.lower()
    user = UserDB.load(users).get("a")
    assert user is not None
    assert verify_password("one", user.password_hash)


def test_users_file_from_config_and_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "config.toml").write_text(
        '[auth]\nusers_file = "accounts.jsonl"\n[[listener]]\nport = 25\nmode = "plain"\nrole = "mx"\n'
    )
    assert run("user", "add", "a", "--password-stdin", "--data-dir", str(data), input="p\n")[0] == 0
    assert UserDB.load(data / "accounts.jsonl").get("a") is not None
    assert run("user", "add", "b", "--password-stdin", "--config", str(data / "config.toml"),
               input="p\n")[0] == 0
    assert len(UserDB.load(data / "accounts.jsonl")) == 2
    bare = tmp_path / "bare"
    assert run("user", "add", "c", "--password-stdin", "--data-dir", str(bare), input="p\n")[0] == 0
    assert UserDB.load(bare / "users.jsonl").get("c") is not None


def test_bad_config_is_reported(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[[listener]]\nport = 'x'\n")
    code, out = run("user", "list", "--config", str(config))
    assert code != 0
    assert "listener[0].port" in out
