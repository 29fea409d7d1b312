"""A device with no key: the real daemon asks the token service for each connection's secret.

The daemon (file backend, the gate as a plain install has it) holds only its device token, or only
its client certificate; the token service holds the key and mints from the emulator, which then
opens the session with the secret's pinned session. The key is nowhere in the device's config,
environment, state or logs.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from earshot.emulator import Emulator, EmulatorOptions
from earshot.tokenservice.config import load_service_config
from earshot.tokenservice.registry import Device, hash_token, new_token
from earshot.tokenservice.server import PATH, TokenService
from tests.fleet.certs import make_ca, make_cert, needs_openssl
from tests.fleet.test_token_service import REAL_KEY, enrol, write_config
from tests.integration.replies import check_events
from tests.support.daemon import DEFAULT_GATE, run_daemon
from tests.support.speech import concat, read_wav, silence, synth


def question() -> Any:
    wake, _ = read_wav(synth("hey jarvis, what time is it"))
    return concat(silence(0.5), wake, silence(6.0))


def files_under(root: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in root.rglob("*") if p.is_file() and p.suffix != ".wav")


async def test_a_device_with_only_its_token_is_answered_with_the_fleets_session(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = new_token()
    service_dir = tmp_path / "service"
    device_dir = tmp_path / "device"
    service_dir.mkdir()
    device_dir.mkdir()
    enrol(service_dir, Device("kitchen-1", token_sha256=hash_token(token)))
    (device_dir / "device-token").write_text(token + "\n")
    async with Emulator(EmulatorOptions(api_key=REAL_KEY, secrets_port=0, strict=True)) as emu:
        cfg = load_service_config(write_config(service_dir, emu.secrets_url))
        async with TokenService(cfg, env={}) as service:
            config = {
                "gate": DEFAULT_GATE,
                "realtime": {
                    "auth": {"token_url": service.url + PATH, "key_file": str(device_dir / "device-token")},
                },
            }
            run = await run_daemon(device_dir, question(), url=emu.url, config=config, environ={"OPENAI_API_KEY": None})
        check_events(emu)
    assert run.exit_code == 0
    assert run.marks("engaged by wake word"), run.timeline
    assert len(emu.sessions) == 1
    record = emu.sessions[0]
    assert record.pinned is not None
    # The session was the fleet's: its model and instructions, not the device's own.
    created = next(e for e in record.server_events if e["type"] == "session.created")
    assert created["session"]["model"] == "gpt-realtime-mini"
    assert created["session"]["instructions"] == "Be brief."
    # The device's session.update set its own audio and left what the fleet pinned as it was.
    updated = [e for e in record.server_events if e["type"] == "session.updated"][-1]["session"]
    assert updated["instructions"] == "Be brief."
    assert [t["name"] for t in updated["tools"]] == ["set_timer"]  # of the built-in timer tools it offered
    assert updated["audio"]["output"]["voice"] == "marin"
    assert len(record.responses) >= 1
    assert service.outcomes["minted"] == 1
    # Only the service ever sent the real key; the device connected with the ephemeral secret.
    assert emu.secrets.bearers == [REAL_KEY]
    assert REAL_KEY not in files_under(device_dir)
    assert REAL_KEY not in "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("earshot.app"))
    assert token not in "\n".join(r.getMessage() for r in caplog.records)


@needs_openssl
async def test_a_device_with_only_a_client_certificate_is_answered(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    ca = make_ca(pki)
    server_cert, server_key = make_cert(pki, "server", "127.0.0.1", server=True)
    cert, key = make_cert(pki, "hall", "hall", server=False)
    service_dir = tmp_path / "service"
    device_dir = tmp_path / "device"
    service_dir.mkdir()
    device_dir.mkdir()
    enrol(service_dir, Device("hall", certificate=True))
    async with Emulator(EmulatorOptions(api_key=REAL_KEY, secrets_port=0, strict=True)) as emu:
        path = write_config(
            service_dir,
            emu.secrets_url,
            listen={"cert_file": str(server_cert), "key_file": str(server_key), "client_ca_file": str(ca)},
        )
        async with TokenService(load_service_config(path), env={}) as service:
            config = {
                "gate": DEFAULT_GATE,
                "realtime": {
                    "auth": {
                        "token_url": service.url + PATH,
                        "ca_file": str(ca),
                        "client_cert_file": str(cert),
                        "client_key_file": str(key),
                    },
                },
            }
            run = await run_daemon(device_dir, question(), url=emu.url, config=config, environ={"OPENAI_API_KEY": None})
        check_events(emu)
    assert run.exit_code == 0
    assert len(emu.sessions) == 1
    assert emu.sessions[0].pinned is not None
    assert service.outcomes["minted"] == 1
    assert len(emu.sessions[0].responses) >= 1
