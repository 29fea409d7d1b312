"""A fleet on this machine: real daemons and a simulated tail against one emulator, broker, token service, Prometheus.

Usage: scripts/fleet-sim [--devices N] [--simulated M] [--duration S] [--quick] [--json FILE] [--keep DIR]

- N real daemons (``earshot run``, the file backend, the default gate, earcons on): a quiet room with one
  scripted question each ("hey jarvis, what time is it", staggered over the first half). Each holds
  only its device token: it mints every connection's secret at the token service, publishes to the
  broker as itself, and serves its metrics on a loopback port.
- M simulated devices in this process, without audio, driving the same client modules: an
  ``MqttBridge`` each (idle), ``mint_client_secret`` against the token service, and a
  ``MetricsServer`` each, scraped by the same Prometheus.
- One emulator (``earshot emulate`` with ``client_secrets``), one mosquitto (a password and an ACL
  per device), one ``earshot token-service``, one ``prometheus``.

Figures (``--json FILE``): ``mqtt_msgs_per_device_hour_idle`` (messages the devices published while
idle, per device and hour), ``token_p50_ms`` / ``token_p99_ms`` (the token service's latency, as the
M devices see it, 32 requests in flight), ``series_per_device`` (Prometheus series of a real device),
``key_found`` (the API key anywhere in the devices' files, environments, logs or MQTT messages), and
what the run checked: ``questions_answered`` and ``daemons_clean_exit``.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import json
import os
import re
import resource
import secrets
import shutil
import statistics
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "daemon"), str(ROOT / "scripts"), str(ROOT)]

import aiomqtt  # noqa: E402
import yaml  # noqa: E402
from benchlib.audio import room_noise  # noqa: E402
from benchlib.proc import byte_compile, earshot_argv  # noqa: E402
from tests.fleet.broker import mosquitto  # noqa: E402
from tests.support.speech import concat, read_wav, synth, write_wav  # noqa: E402

from earshot.config import parse_config  # noqa: E402
from earshot.metrics import MetricsServer, render  # noqa: E402
from earshot.mqttlink import MqttBridge  # noqa: E402
from earshot.realtime.auth import Secret, mint_client_secret  # noqa: E402
from earshot.stats import Stats  # noqa: E402
from earshot.tokenservice.registry import Device, Registry, hash_token, new_token  # noqa: E402
from earshot.tokenservice.server import PATH as TOKEN_PATH  # noqa: E402
from earshot.tokenservice.server import write_registry  # noqa: E402

QUESTION = "hey jarvis, what time is it"
IN_FLIGHT = 32
IDLE_AFTER_S = 40.0
"""A question's answer (~5 s), the follow-up window (6 s) and the session kept open (realtime.idle_close_s, 20 s)."""


@dataclass
class Counter:
    """Every device message the observer saw: (time, device id, topic)."""

    seen: list[tuple[float, str, str]] = field(default_factory=list)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _line(proc: asyncio.subprocess.Process, within_s: float = 60.0) -> str:
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), within_s)
    if not line:
        raise RuntimeError(f"{proc.pid} exited before it said where it listens")
    return line.decode().strip()


async def _stop(proc: asyncio.subprocess.Process) -> int | None:
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            proc.kill()
            await proc.wait()
    return proc.returncode


async def observe(port: int, password: str, counter: Counter, ready: asyncio.Event) -> None:
    """The operator's view: every message under earshot/ (as Home Assistant's user)."""
    async with aiomqtt.Client("127.0.0.1", port, username="ha", password=password, identifier="fleet-observer") as c:
        await c.subscribe("earshot/#", qos=1)
        ready.set()
        async for message in c.messages:
            parts = str(message.topic).split("/")
            if len(parts) >= 3:
                counter.seen.append((time.monotonic(), parts[1], parts[2]))


async def simulated_device(
    index: int,
    broker_url: str,
    password: Path,
    run_for: asyncio.Event,
    ports: list[int],
    bound: asyncio.Event,
    total: int,
) -> MqttBridge:
    """One device without audio: its MQTT bridge (idle) and its metrics server, until ``run_for`` is set."""
    device_id = f"sim-{index:04d}"
    cfg = parse_config(
        yaml.safe_dump(
            {
                "device": {"id": device_id, "room": f"room-{index % 50}", "site": f"site-{index % 5}"},
                "mqtt": {"url": broker_url, "password_file": str(password), "reconnect_max_s": 30.0},
            }
        )
    )
    stats = Stats(state_dir=None, now=time.monotonic(), now_wall=time.time())
    status = {"phase": "idle", "connection": "disconnected", "muted": False, "volume": {"volume": 80, "muted": False}}

    async def answer(request: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True}

    bridge = MqttBridge(cfg, status=lambda: status, answer=answer, environ={}, version="sim")
    labels = {"device": device_id, "room": f"room-{index % 50}", "site": f"site-{index % 5}"}
    server = MetricsServer(lambda: render(stats, time.monotonic(), time.time(), labels), port=0)
    await server.start()
    ports.append(server.port)
    if len(ports) == total:
        bound.set()
    task = asyncio.create_task(bridge.run())
    try:
        await run_for.wait()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await server.aclose()
    return bridge


async def mint_all(token_url: str, tokens: list[str]) -> list[float]:
    """Each simulated device asks for one secret, ``IN_FLIGHT`` at a time; the latency of each, in ms."""
    slots = asyncio.Semaphore(IN_FLIGHT)
    session = {"type": "realtime", "model": "gpt-realtime", "instructions": "sim"}
    out: list[float] = []

    async def one(token: str) -> None:
        key = Secret(token, source="simulated device")
        async with slots:
            start = time.perf_counter()
            await mint_client_secret(token_url, key, session, 60, 30.0)
            out.append((time.perf_counter() - start) * 1000.0)

    await asyncio.gather(*(one(t) for t in tokens))
    return out


def prometheus_query(port: int, query: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(url, timeout=10) as r:
        doc = json.loads(r.read())
    return list(doc["data"]["result"])


def read_environs(pids: list[int]) -> list[bytes]:
    """The environments of running processes (to look for the key in)."""
    out = []
    for pid in pids:
        with contextlib.suppress(OSError):
            out.append(Path(f"/proc/{pid}/environ").read_bytes())
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def grep_key(key: bytes, roots: list[Path], blobs: list[bytes]) -> list[str]:
    """Where ``key`` is found: file paths under ``roots``, or ``blob N``."""
    found = []
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink():
                with contextlib.suppress(OSError):
                    if key in path.read_bytes():
                        found.append(str(path))
    found += [f"blob {i}" for i, blob in enumerate(blobs) if key in blob]
    return found


async def run(args: argparse.Namespace) -> dict[str, Any]:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # a thousand sockets here and at the broker
    loop = asyncio.get_running_loop()
    loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(max_workers=IN_FLIGHT + 8))
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="earshot-fleet-"))
    work.mkdir(parents=True, exist_ok=True)
    key = "sk-fleet-" + secrets.token_hex(24)
    byte_compile()
    procs: list[asyncio.subprocess.Process] = []
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
    real_ids = [f"dev-{i:02d}" for i in range(args.devices)]
    sim_ids = [f"sim-{i:04d}" for i in range(args.simulated)]
    users = {"ha": secrets.token_hex(12), **{d: secrets.token_hex(12) for d in real_ids + sim_ids}}
    result: dict[str, Any] = {"devices": args.devices, "simulated": args.simulated, "duration_s": args.duration}
    with mosquitto(work / "broker", users) as broker:
        try:
            # The emulator (the stand-in for OpenAI), with client_secrets.
            emu = await asyncio.create_subprocess_exec(
                *earshot_argv(), "emulate", "--port", "0", "--secrets-port", "0", "--api-key", key,
                stdout=asyncio.subprocess.PIPE, stderr=(work / "emulator.log").open("wb"), env=env,
            )  # fmt: skip
            procs.append(emu)
            emu_url, secrets_url = await _line(emu), await _line(emu)
            # The token service: the only holder of the key; every device enrolled.
            service = work / "token-service"
            service.mkdir(exist_ok=True)
            (service / "openai-api-key").write_text(key + "\n")
            (service / "openai-api-key").chmod(0o600)
            tokens = {d: new_token() for d in real_ids + sim_ids}
            write_registry(
                service / "devices.json",
                Registry.of([Device(d, token_sha256=hash_token(t)) for d, t in tokens.items()]),
            )
            (service / "token-service.yaml").write_text(
                yaml.safe_dump(
                    {
                        "listen": {"host": "127.0.0.1", "port": 0, "max_connections": 2048},
                        "upstream": {"url": secrets_url, "key_file": "openai-api-key", "max_in_flight": 64},
                        "session": {"model": "gpt-realtime", "instructions": "You are a fleet device. Be brief."},
                        "limits": {"per_minute": 60, "burst": 10, "daily": 1000},
                        "devices_file": "devices.json",
                        "state_file": "state.json",
                    }
                )
            )
            svc = await asyncio.create_subprocess_exec(
                *earshot_argv(), "token-service", "run", "--config", str(service / "token-service.yaml"),
                stdout=asyncio.subprocess.PIPE, stderr=(service / "token-service.log").open("wb"), env=env,
            )  # fmt: skip
            procs.append(svc)
            token_url = await _line(svc) + TOKEN_PATH
            # The observer, then the real daemons.
            counter = Counter()
            observing = asyncio.Event()
            observer = asyncio.create_task(observe(broker.port, users["ha"], counter, observing))
            await asyncio.wait_for(observing.wait(), 30)
            question, _ = read_wav(synth(QUESTION))
            daemons: list[tuple[str, asyncio.subprocess.Process, Path, int]] = []
            spread = min(60.0, args.duration / 2 - 8.0)  # the questions come in the first minute
            asked_by = 0.0
            for i, device in enumerate(real_ids):
                where = work / "devices" / device
                where.mkdir(parents=True, exist_ok=True)
                at = 3.0 + (i * spread / max(1, args.devices))
                asked_by = max(asked_by, at + len(question) / 16000)
                # The room goes on past the run's end: every daemon is running when it is measured and stopped.
                rest = args.duration + 30.0 - at
                pcm = concat(room_noise(at, seed=i + 1), question, room_noise(rest, seed=i + 101))
                write_wav(where / "in.wav", pcm, 16000)
                (where / "device-token").write_text(tokens[device] + "\n")
                (where / "mqtt-password").write_text(users[device] + "\n")
                port = _free_port()
                config = {
                    "audio": {"backend": "file", "input": {"file": "in.wav"}, "output": {"file": "out.wav"}},
                    "realtime": {"url": emu_url, "auth": {"token_url": token_url, "key_file": "device-token"}},
                    "device": {"id": device, "room": f"room-{i}", "site": "sim"},
                    "mqtt": {"url": broker.url, "password_file": "mqtt-password"},
                    "metrics": {"port": port},
                    "state_dir": "state",
                    "control": {"socket": str(where / "control.sock")},
                }
                (where / "earshot.yaml").write_text(yaml.safe_dump(config))
                proc = await asyncio.create_subprocess_exec(
                    *earshot_argv(), "run", "--config", str(where / "earshot.yaml"),
                    stdout=asyncio.subprocess.DEVNULL, stderr=(where / "daemon.log").open("wb"),
                    env={**env, "HOME": str(where)}, cwd=where,
                )  # fmt: skip
                procs.append(proc)
                daemons.append((device, proc, where, port))
            started = time.monotonic()
            # The simulated tail: their MQTT bridges and metrics servers.
            sim_root = work / "simulated"
            sim_root.mkdir(exist_ok=True)
            run_for = asyncio.Event()
            sim_ports: list[int] = []
            bound = asyncio.Event()
            sims = []
            for i, device in enumerate(sim_ids):
                (sim_root / f"{device}.mqtt").write_text(users[device])
                (sim_root / f"{device}.token").write_text(tokens[device])
                sims.append(
                    asyncio.create_task(
                        simulated_device(
                            i, broker.url, sim_root / f"{device}.mqtt", run_for, sim_ports, bound, len(sim_ids)
                        )
                    )
                )
            # Prometheus, scraping the daemons, the token service and the simulated devices.
            prom_port = _free_port()
            prom_dir = work / "prometheus"
            prom_dir.mkdir(exist_ok=True)
            if sim_ids:
                await asyncio.wait_for(bound.wait(), 60)  # every simulated metrics server is listening
            svc_port = urllib.parse.urlsplit(token_url).port
            (prom_dir / "prometheus.yml").write_text(
                yaml.safe_dump(
                    {
                        "global": {"scrape_interval": "5s", "evaluation_interval": "5s"},
                        "rule_files": [str(ROOT / "config" / "prometheus" / "earshot-alerts.yml")],
                        "scrape_configs": [
                            {
                                "job_name": "earshot",
                                "honor_labels": True,
                                "static_configs": [{"targets": [f"127.0.0.1:{p}" for _, _, _, p in daemons]}],
                            },
                            {
                                "job_name": "earshot-sim",
                                "honor_labels": True,
                                "scrape_interval": "15s",
                                "static_configs": [{"targets": [f"127.0.0.1:{p}" for p in sim_ports]}],
                            },
                            {
                                "job_name": "earshot-token-service",
                                "static_configs": [{"targets": [f"127.0.0.1:{svc_port}"]}],
                            },
                        ],
                    }
                )
            )
            prom = await asyncio.create_subprocess_exec(
                "prometheus",
                f"--config.file={prom_dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={prom_dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn",
                stdout=asyncio.subprocess.DEVNULL, stderr=(prom_dir / "prometheus.log").open("wb"),
            )  # fmt: skip
            procs.append(prom)
            environs = read_environs([proc.pid for _, proc, _, _ in daemons])
            # Let the run play out: every question asked and answered, then the devices idle.
            end = started + args.duration
            # Idle from when the last question's answer, follow-up window and kept-open session are over.
            idle_from = started + asked_by + IDLE_AFTER_S
            await asyncio.sleep(max(0.0, idle_from - time.monotonic()))
            # Token latency at the size of the tail, the fleet idle (the daemons minted their own as they engaged).
            latencies = await mint_all(token_url, [tokens[d] for d in sim_ids]) if sim_ids else []
            await asyncio.sleep(max(0.0, end - time.monotonic()))
            idle_to = time.monotonic()
            series = prometheus_query(prom_port, 'count by (device, job) ({job=~"earshot|earshot-sim", device!=""})')
            up = prometheus_query(prom_port, "up")
            run_for.set()
            bridges = await asyncio.gather(*sims)
            codes = [await _stop(proc) for _, proc, _, _ in daemons]
            observer.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await observer
        finally:
            for proc in procs:
                await _stop(proc)
    # Figures.
    idle_window_h = max(1e-9, (idle_to - idle_from) / 3600.0)
    in_window = [(t, d, k) for t, d, k in counter.seen if idle_from <= t <= idle_to]
    real_msgs = sum(1 for _, d, _ in in_window if d in set(real_ids))
    sim_msgs = sum(1 for _, d, _ in in_window if d in set(sim_ids))
    n_all = max(1, args.devices + args.simulated)
    result["idle_window_s"] = round(idle_to - idle_from, 1)
    result["mqtt_msgs_per_device_hour_idle"] = round((real_msgs + sim_msgs) / n_all / idle_window_h, 2)
    result["mqtt_msgs_per_device_hour_idle_real"] = round(real_msgs / max(1, args.devices) / idle_window_h, 2)
    result["mqtt_msgs_per_device_hour_idle_simulated"] = round(sim_msgs / max(1, args.simulated) / idle_window_h, 2)
    result["mqtt_msgs_total"] = len(counter.seen)
    result["token_requests"] = len(latencies)
    result["token_p50_ms"] = round(percentile(latencies, 0.50), 2) if latencies else None
    result["token_p99_ms"] = round(percentile(latencies, 0.99), 2) if latencies else None
    real_series = [float(s["value"][1]) for s in series if s["metric"].get("job") == "earshot"]
    sim_series = [float(s["value"][1]) for s in series if s["metric"].get("job") == "earshot-sim"]
    result["series_per_device"] = round(statistics.mean(real_series), 1) if real_series else None
    result["series_per_device_simulated"] = round(statistics.mean(sim_series), 1) if sim_series else None
    result["targets_up"] = sum(1 for s in up if s["value"][1] == "1")
    result["targets"] = len(up)
    answered = 0
    for _, _, where, _ in daemons:
        log = (where / "daemon.log").read_text(errors="replace")
        # The engagement's summary line: woken by the word, one turn, and a reply that started.
        answered += bool(re.search(r"\(wake word [^\n]*\) ended: [^\n]*\b1 turn\b[^\n]*reply start", log))
    result["questions_answered"] = answered
    result["daemons_clean_exit"] = sum(1 for c in codes if c == 0)
    result["mqtt_connects_simulated"] = sum(b.connects for b in bridges)
    found = grep_key(
        key.encode(),
        [work / "devices", work / "simulated", work / "prometheus"],
        [*environs, *(f"{t}{d}{k}".encode() for t, d, k in counter.seen)],
    )
    result["key_found"] = bool(found)
    result["key_found_in"] = found[:10]
    result["work_dir"] = str(work) if args.keep else None
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--devices", type=int, default=20, help="real daemons (default 20)")
    parser.add_argument("--simulated", type=int, default=1000, help="simulated devices without audio (default 1000)")
    parser.add_argument("--duration", type=float, default=None, help="seconds of the run (default 240, --quick 80)")
    parser.add_argument("--quick", action="store_true", help="a short run (for the tests)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--keep", type=Path, help="keep the run's files in this directory")
    args = parser.parse_args()
    if args.duration is None:
        args.duration = 80.0 if args.quick else 240.0
    if args.duration < 80.0:
        parser.error("--duration must be at least 80 s (the questions, their answers, then an idle window)")
    result = asyncio.run(run(args))
    text = json.dumps(result, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")
    ok = not result["key_found"] and result["questions_answered"] == args.devices
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
