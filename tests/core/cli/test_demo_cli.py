"""``nbguard demo`` before the hub starts: its state directory, and refusals in one line.

The hub itself runs in tests/hub_plugin/e2e (it needs JupyterHub and a free port).
"""

from __future__ import annotations

import os
import socket
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from nbguard.cli import main
from nbguard.cli.demo import STATE_DIR_ENV, DemoState, banner, check_listen_address
from nbguard.encryption import SecretBox
from nbguard.errors import ConfigError
from nbguard.ledger.keys import load_public_keys, load_signing_key


def mode(path: Path) -> int:
    """The permission bits of ``path``."""
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def state(tmp_path: Path) -> DemoState:
    """A prepared demo state directory."""
    prepared = DemoState(tmp_path / "state")
    assert prepared.prepare() is True
    return prepared


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port something is listening on."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


@pytest.fixture
def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    """The command's stderr, checked to be exactly one `nbguard: error:` line."""
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("nbguard: error: ")
    return err


def test_state_directory_and_secrets_are_private(state: DemoState) -> None:
    """The state directory is 0700 and every secret file 0600."""
    assert mode(state.root) == 0o700
    assert mode(state.homes) == 0o700
    for path in state.secret_files:
        assert mode(path) == 0o600, path


def test_generated_secrets_are_usable(state: DemoState) -> None:
    """Each secret has the form its consumer needs, and the keys are fresh."""
    assert len(bytes.fromhex(state.crypt_key)) == 32
    assert len(bytes.fromhex(state.read(state.cookie_secret_file))) == 32
    assert state.crypt_key != state.read(state.cookie_secret_file)
    box = SecretBox(state.secret_keys)
    assert box.open(box.seal(b"totp secret")) == b"totp secret"
    signing_key = load_signing_key(state.ledger_key_file)
    assert set(load_public_keys([state.ledger_public_key_file])) == {signing_key.key_id}
    assert len(state.password) >= 16


def test_second_prepare_keeps_the_secrets(state: DemoState) -> None:
    """A later run reuses the state directory and changes no secret."""
    before = {path: path.read_bytes() for path in state.secret_files}
    assert DemoState(state.root).prepare() is False
    assert {path: path.read_bytes() for path in state.secret_files} == before


def test_two_state_directories_share_no_secret(state: DemoState, tmp_path: Path) -> None:
    """Every state directory gets its own secrets."""
    other = DemoState(tmp_path / "other")
    other.prepare()
    for mine, theirs in zip(state.secret_files, other.secret_files, strict=True):
        assert mine.read_bytes() != theirs.read_bytes()


def test_refuses_a_directory_that_is_not_demo_state(tmp_path: Path) -> None:
    """A non-empty directory without the demo marker is left alone."""
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not an nbguard demo state directory"):
        DemoState(tmp_path).prepare()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_uses_an_existing_empty_directory(tmp_path: Path) -> None:
    """An empty directory becomes the state, with its mode tightened to 0700."""
    root = tmp_path / "empty"
    root.mkdir(mode=0o755)
    assert DemoState(root).prepare() is True
    assert mode(root) == 0o700


@pytest.mark.parametrize(
    ("loosen", "message"),
    [
        pytest.param("root", "open to other users", id="directory-readable"),
        pytest.param("secret", "open to other users", id="secret-readable"),
        pytest.param("missing", "is missing", id="secret-missing"),
    ],
)
def test_refuses_a_damaged_state(state: DemoState, loosen: str, message: str) -> None:
    """A state directory others can read, or with a secret gone, is refused with the fix."""
    if loosen == "root":
        state.root.chmod(0o755)
    elif loosen == "secret":
        state.secret_keys_file.chmod(0o644)
    else:
        state.crypt_key_file.unlink()
    with pytest.raises(ConfigError, match=message):
        DemoState(state.root).prepare()


def test_from_environ_needs_the_state(state: DemoState) -> None:
    """The hub config finds a prepared state through the environment, and only then."""
    assert DemoState.from_environ({STATE_DIR_ENV: str(state.root)}).root == state.root
    with pytest.raises(ConfigError, match="start the demo hub with `nbguard demo`"):
        DemoState.from_environ({})


@pytest.mark.parametrize("ip", ["127.0.0.1", "127.0.0.2", "::1"])
def test_loopback_addresses_are_accepted(ip: str) -> None:
    """Any loopback address is fine without --allow-remote."""
    check_listen_address(ip, allow_remote=False)


@pytest.mark.parametrize("ip", ["0.0.0.0", "192.0.2.10", "::"])  # noqa: S104
def test_remote_address_needs_consent(ip: str) -> None:
    """A non-loopback address is accepted only with --allow-remote."""
    check_listen_address(ip, allow_remote=True)
    with pytest.raises(ConfigError, match="--allow-remote"):
        check_listen_address(ip, allow_remote=False)


@pytest.mark.parametrize("ip", ["0.0.0.0", "192.0.2.10", "localhost"])  # noqa: S104
def test_command_refuses_a_non_loopback_ip(
    ip: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`nbguard demo --ip` off loopback (or not an address) exits 2 and creates nothing."""
    target = tmp_path / "state"
    assert main(["demo", "--ip", ip, "--state-dir", str(target)]) == 2
    assert ip in one_line_error(capsys)
    assert not target.exists()


def test_command_reports_a_busy_port_in_one_line(
    busy_port: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A port already in use is one error line naming it, and nothing is created."""
    target = tmp_path / "state"
    assert main(["demo", "--port", str(busy_port), "--state-dir", str(target)]) == 2
    err = one_line_error(capsys)
    assert f"port {busy_port} on 127.0.0.1 is already in use" in err
    assert not target.exists()


def test_command_refuses_a_state_directory_in_use(
    state: DemoState, free_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """A second `nbguard demo` on the same state directory is refused in one line."""
    with state.lock():
        assert main(["demo", "--port", str(free_port), "--state-dir", str(state.root)]) == 2
    assert "is in use by another `nbguard demo`" in one_line_error(capsys)


def test_command_names_the_extra_when_jupyterhub_is_missing(
    tmp_path: Path,
    free_port: int,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """With Python and PATH pointed at empty places (no jupyterhub), the error names nbguard[demo]."""
    port = free_port
    # An interpreter path and PATH with nothing installed: not our code, the machine.
    monkeypatch.setattr(sys, "executable", str(tmp_path / "bin" / "python"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert main(["demo", "--port", str(port), "--state-dir", str(tmp_path / "s")]) == 2
    err = one_line_error(capsys)
    assert "`jupyterhub` is not installed" in err
    assert "pip install 'nbguard[demo]'" in err


@pytest.mark.parametrize("port", ["0", "65536", "http"])
def test_command_refuses_a_bad_port(port: str, capsys: pytest.CaptureFixture[str]) -> None:
    """--port outside 1-65535 is a usage error."""
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--port", port])
    assert exit_info.value.code == 2
    assert "port" in capsys.readouterr().err


def test_banner_says_who_to_be_and_how_to_verify(
    state: DemoState, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ready message gives the address, users, password, a TOTP hint and the verify command."""
    monkeypatch.chdir(state.root.parent)
    text = banner(state, "127.0.0.1", 8123)
    assert "http://127.0.0.1:8123/" in text
    assert "alice, bob, carol or dave (admin)" in text
    assert state.password in text
    assert "pyotp.TOTP(" in text
    assert "nbguard verify state/ledger.sqlite" in text
    assert "--key state/ledger.key.pub" in text
    assert os.sep + "state" not in text
