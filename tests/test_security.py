"""Who may reach what: the dashboard listens on loopback only, with XSRF protection,
and the dashboard's data folders are limited to configured roots."""

import os
import socket
import subprocess
import sys
import time
import tomllib

import pytest

from conftest import ROOT
from engine.data.sources import check_data_dir_allowed


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a listening TCP socket on ``port`` (from /proc/net/tcp*)."""
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, port_hex = local.split(":")
            if state == "0A" and int(port_hex, 16) == port:
                if width == 8:
                    found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
                else:
                    found.add(address)
    return found


def test_server_binds_to_loopback_only_with_the_project_config():
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["server"]["address"] == "localhost"
    assert config["server"]["enableXsrfProtection"] is True
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "streamlit_app.py",
                                "--server.port", str(port)], cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not listening_addresses(port):
            time.sleep(0.3)
        addresses = listening_addresses(port)
        assert addresses, "the server did not start"
        loopback = {"127.0.0.1", "0000000000000000FFFF00000100007F", "00000000000000000000000001000000"}
        assert addresses <= loopback, f"listening beyond loopback: {addresses}"
    finally:
        process.terminate()
        process.wait(timeout=20)


@pytest.mark.parametrize("path", ["/etc", "/", "/root", "../../etc"])
def test_data_folders_outside_the_allowed_roots_are_refused(path):
    assert "outside the folders" in check_data_dir_allowed(path)


def test_default_data_and_project_data_folder_are_allowed(tmp_path, monkeypatch):
    from engine.data.sources import default_data_dir
    assert check_data_dir_allowed("") == ""
    assert check_data_dir_allowed(str(default_data_dir() / "yes")) == ""
    assert check_data_dir_allowed(str(ROOT / "data" / "mine")) == ""
    monkeypatch.setenv("BRAIN_DATA_ROOTS", str(tmp_path))
    assert check_data_dir_allowed(str(tmp_path / "kaggle")) == ""
