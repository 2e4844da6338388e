"""The QEMU simulator: image pieces, the device's QEMU command line, and one real boot.

Fast tests check the parts without booting (the initramfs archive, the cache key, the config
drive, the relay, the isolation options on QEMU's command line). The ``qemu`` test boots one
ARM64 guest from the real image with its own swtpm, attests it against the verifier service
through Mosquitto on loopback, then tampers with a model inside the guest: the backend must see
``model.rejected`` and a contraindicated EAR (``make sim-test``; CI runs it once).
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import tarfile
import threading
import time
from pathlib import Path

import pytest

from edgeward.simulator.image import cpio, recipe
from edgeward.simulator.qemu import Forward, QemuGuest, machine_for, pack_config, qemu_binary
from edgeward.simulator.qemu_relay import relay

# -- the image's pieces --------------------------------------------------------------------


def test_newc_archive_lists_every_entry_with_the_host_cpio(tmp_path: Path) -> None:
    tree = tmp_path / "root"
    (tree / "bin").mkdir(parents=True)
    (tree / "bin" / "busybox").write_bytes(b"\x7fELF" + bytes(1000))
    (tree / "bin" / "sh").symlink_to("busybox")
    (tree / "init").write_text("#!/bin/sh\n")
    (tree / "init").chmod(0o755)
    out = tmp_path / "initrd.cpio"
    with open(out, "wb") as f:
        assert cpio.write_newc(tree, f) == 4
    if shutil.which("cpio") is None:
        pytest.skip("cpio is not installed")
    listing = subprocess.run(["cpio", "-itv", "--quiet"], input=out.read_bytes(),
                             capture_output=True, check=True).stdout.decode()
    assert "bin/sh -> busybox" in listing
    assert any(line.startswith("-rwxr-xr-x") and line.endswith("init")
               for line in listing.splitlines())
    assert "root" in listing  # owned by root whoever built it


def test_newc_archive_is_reproducible(tmp_path: Path) -> None:
    tree = tmp_path / "t"
    tree.mkdir()
    for name in ("b", "a", "c"):
        (tree / name).write_text(name)
    one, two = io.BytesIO(), io.BytesIO()
    cpio.write_newc(tree, one)
    os.utime(tree / "a", (1, 1))
    cpio.write_newc(tree, two)
    assert one.getvalue() == two.getvalue()


def test_cache_key_moves_with_every_input() -> None:
    base = {"debs": {"libc6": "2.36"}, "code_digest": b"\x01" * 32,
            "builder_digest": b"\x02" * 32}
    key = recipe.image_key(**base)  # type: ignore[arg-type]
    assert key == recipe.image_key(**base)  # type: ignore[arg-type]
    assert key != recipe.image_key(**{**base, "debs": {"libc6": "2.37"}})  # type: ignore[arg-type]
    assert key != recipe.image_key(**{**base, "code_digest": b"\x03" * 32})  # type: ignore[arg-type]
    assert key != recipe.image_key(**{**base, "builder_digest": b"\x04" * 32})  # type: ignore[arg-type]


def test_guest_init_runs_the_agent_from_the_config_drive() -> None:
    init = recipe.init_script()
    assert "@" not in init  # every placeholder filled in
    assert f"edgeward -v agent run --config {recipe.GUEST_CONFIG}/agent.toml" in init
    assert recipe.FW_CFG_NAME in init and recipe.MODULE_ORDER_FILE in init


def test_config_drive_is_a_root_owned_tar_of_the_folder(tmp_path: Path) -> None:
    (tmp_path / "device").mkdir()
    (tmp_path / "device" / "tls.key").write_text("k")
    (tmp_path / "device" / "tls.key").chmod(0o600)
    (tmp_path / "agent.toml").write_text("[device]\n")
    with tarfile.open(fileobj=io.BytesIO(pack_config(tmp_path))) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert set(members) == {"agent.toml", "device", "device/tls.key"}
    assert members["device/tls.key"].mode == 0o600
    assert all(m.uid == 0 and m.gid == 0 for m in members.values())


# -- the device's isolation and plumbing ---------------------------------------------------


def _device(tmp_path: Path, forwards: list[Forward]) -> QemuGuest:
    from edgeward.simulator.image import Image

    img = Image("k", tmp_path, tmp_path / "vmlinuz", tmp_path / "initrd.img", {})
    return QemuGuest("lock-1", "smartlock-pi4", img, tmp_path / "cfg", tmp_path / "w", forwards)


def test_guest_network_reaches_only_the_forwarded_services(tmp_path: Path) -> None:
    """Attack: a compromised guest scanning the host's network or the internet."""
    args = _device(tmp_path, [Forward(41883)]).qemu_args()
    netdev = args[args.index("-netdev") + 1]
    assert netdev.startswith("user,id=net0,restrict=on,")
    assert "hostfwd" not in netdev  # nothing on the host reaches into the guest
    fwds = [p for p in netdev.split(",") if p.startswith("guestfwd=")]
    assert fwds == [f"guestfwd=tcp:{recipe.BROKER_ADDR}:8883-cmd:"
                    f"{fwds[0].split('-cmd:')[1].split(' ')[0]} -m edgeward.simulator.qemu_relay"
                    " 41883"]


def test_each_device_has_its_own_tpm_and_the_boards_cpu(tmp_path: Path) -> None:
    args = _device(tmp_path, []).qemu_args()
    assert args[args.index("-cpu") + 1] == "cortex-a72"
    assert "tpm-tis-device,tpmdev=tpm0" in args
    assert f"socket,id=chrtpm,path={tmp_path / 'w' / 'swtpm.sock'}" in args
    assert machine_for("gateway-pi5").cpu == "cortex-a76"


def test_relay_copies_both_ways_and_ends_with_the_guest(tmp_path: Path) -> None:
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]

    def echo_upper() -> None:
        conn, _ = srv.accept()
        with conn:
            while data := conn.recv(100):
                conn.sendall(data.upper())

    threading.Thread(target=echo_upper, daemon=True).start()
    guest, qemu_side = socket.socketpair()
    th = threading.Thread(target=relay, args=(port, qemu_side.fileno(), qemu_side.fileno()))
    th.start()
    guest.sendall(b"connect")
    guest.settimeout(5)
    assert guest.recv(100) == b"CONNECT"
    guest.shutdown(socket.SHUT_WR)
    th.join(5)
    assert not th.is_alive()
    guest.close()
    qemu_side.close()
    srv.close()


# -- one real device -----------------------------------------------------------------------


def _wait(what: str, pred, dev: QemuGuest, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        if not dev.alive():
            break
        time.sleep(0.25)
    pytest.fail(f"no {what} after {timeout:.0f} s; console:\n{dev.console_tail(40)}")


@pytest.mark.qemu
def test_qemu_device_attests_with_its_tpm_then_a_model_tampered_in_the_guest_is_caught(
    tmp_path: Path,
) -> None:
    """Attack: an attacker with a shell on the device swaps a byte of a deployed model."""
    from edgeward.simulator.devbroker import mosquitto_binary
    from edgeward.simulator.image import build_image
    from edgeward.simulator.qemu_provision import QemuBackend, flip_byte_command

    if qemu_binary() is None or shutil.which("swtpm") is None or mosquitto_binary() is None:
        pytest.fail("qemu-system-aarch64, swtpm and mosquitto are needed: run `make system`")
    image = build_image(progress=print)
    with QemuBackend(tmp_path / "fleet", image) as backend:
        dev = backend.device("sim-0001")
        dev.start()
        first = _wait("attestation result", lambda: backend.appraisals("sim-0001"), dev, 240)
        assert first == ["affirming"], backend.latest_ear("sim-0001").reasons
        ear = backend.latest_ear("sim-0001")
        assert ear.vector.hardware == 2  # the TPM quote verified with the endorsed key
        assert any("TPM quote verified" in r for r in ear.reasons)
        assert backend.store.status("sim-0001") == "online"

        model = f"{recipe.GUEST_CONFIG}/models/digits_mlp.tflite"
        before = dev.run(f"sha256sum {model}").split()[0]
        dev.run(flip_byte_command(model))
        assert dev.run(f"sha256sum {model}").split()[0] != before

        rejected = _wait("model.rejected", lambda: backend.store.messages(
            "sim-0001", "model.rejected"), dev, 120)
        assert rejected[0][2]["model"] == "digits_mlp.tflite"
        assert rejected[0][2]["error"] == "DigestMismatchError"
        results = _wait("second attestation result",
                        lambda: backend.appraisals("sim-0001")[1:], dev, 120)
        assert results[0] == "contraindicated"
        bad = backend.latest_ear("sim-0001")
        assert any("digits_mlp" in r for r in bad.reasons)


# -- the fleet runner's adapter ------------------------------------------------------------


def test_raw_pcr_extend_of_the_guest_hook_matches_the_tpm_stack(tmp_path: Path) -> None:
    """The guest's start hook extends PCR 7 with raw bytes; swtpm must agree with tpm2-pytss."""
    import hashlib

    pytest.importorskip("tpm2_pytss")
    from edgeward.firmware_shim.linux.tpm import TpmSigner
    from edgeward.firmware_shim.sim.swtpm import start_swtpm
    from edgeward.simulator.qemu_device import pcr_extend_command

    digest = hashlib.sha256(b"simulated firmware").digest()
    with start_swtpm(tmp_path / "tpm") as tpm:
        with socket.create_connection(("127.0.0.1", tpm.port), timeout=5) as s:
            s.sendall(pcr_extend_command(7, digest))
            reply = s.recv(64)
        assert reply[6:10] == bytes(4)  # TPM_RC_SUCCESS
        with TpmSigner(tpm.tcti) as signer:
            assert signer.read_pcrs([7])[7] == hashlib.sha256(bytes(32) + digest).digest()


def test_adapter_points_the_guests_config_at_the_forwarded_broker_and_its_tpm(
    tmp_path: Path,
) -> None:
    from types import SimpleNamespace

    from edgeward.simulator.qemu_device import QemuDevice

    folder = tmp_path / "dev"
    (folder / "device").mkdir(parents=True)
    for name in ("ca.pem", "tls.crt", "tls.key"):
        (tmp_path / name).write_text(name)
    cfg = folder / "agent.toml"
    cfg.write_text(
        '[device]\nname = "d1"\ntpm_tcti = "swtpm:host=127.0.0.1,port=2321"\n\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = 40001\nca = "{tmp_path / "ca.pem"}"\n'
        f'cert = "{tmp_path / "tls.crt"}"\nkey = "{tmp_path / "tls.key"}"\nkeepalive = 5\n')
    spec = SimpleNamespace(name="d1", folder=folder, config=cfg, relay_port=40001, tpm_port=2321)
    board = SimpleNamespace(name="rpi4b", cpu="cortex-a72", cores=4, memory_mb=1024)
    QemuDevice(spec=spec, board=board, relay=SimpleNamespace(port=40001))
    text = cfg.read_text()
    assert 'tpm_tcti = "device:/dev/tpmrm0"' in text
    assert f'host = "{recipe.BROKER_ADDR}"' in text and "port = 8883" in text
    assert 'ca = "device/fleet-ca.pem"' in text and str(tmp_path) not in text
    assert (folder / "device" / "tls.key").read_text() == "tls.key"
    assert "keepalive = 5" in text


def test_guest_wheels_are_the_tested_device_pins() -> None:
    """The guest runs the versions `make test` tests, except where aarch64 has no wheel."""
    import re

    pins = {}
    for line in (Path(__file__).resolve().parents[2] / "requirements" / "device.txt").open():
        if "==" in line and not line.startswith("#"):
            name, version = line.strip().split("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    for wheel in recipe.WHEELS:
        name, version = wheel.split("==")
        if name == "ai-edge-litert":
            assert version == "1.4.0"  # the newest with an aarch64 wheel for CPython 3.11
            continue
        assert pins.get(re.sub(r"[-_.]+", "-", name).lower()) == version, wheel


def test_the_dev_brokers_certificate_names_the_address_guests_reach_it_at(tmp_path: Path) -> None:
    from cryptography import x509

    from edgeward.simulator.devbroker import DevCA, Mosquitto

    broker = Mosquitto(tmp_path, DevCA(tmp_path / "ca"))
    cert = x509.load_pem_x509_certificate(broker.server.cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert recipe.BROKER_ADDR in [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]


def test_config_drive_carries_the_guests_kept_state_and_nothing_else(tmp_path: Path) -> None:
    """Attack: a guest-written tar naming ../ paths, links or other folders, put on the next
    boot's config drive."""
    (tmp_path / "agent.toml").write_text("[device]\n")
    old = io.BytesIO()
    with tarfile.open(fileobj=old, mode="w") as tar:
        def add(name: str, data: bytes = b"x", kind: bytes = tarfile.REGTYPE,
                link: str = "") -> None:
            ti = tarfile.TarInfo(name)
            ti.type, ti.size, ti.linkname = kind, len(data) if kind == tarfile.REGTYPE else 0, link
            tar.addfile(ti, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
        add("state", kind=tarfile.DIRTYPE)
        add("state/outbox.db", b"seq 41")
        add("state/../agent.toml", b"evil")
        add("models/digits_mlp.tflite", b"evil")
        add("state/link", kind=tarfile.SYMTYPE, link="/etc/shadow")
    with tarfile.open(fileobj=io.BytesIO(pack_config(tmp_path, kept=old.getvalue()))) as tar:
        names = tar.getnames()
        assert tar.extractfile("state/outbox.db").read() == b"seq 41"  # type: ignore[union-attr]
        assert tar.extractfile("agent.toml").read() == b"[device]\n"  # type: ignore[union-attr]
    assert sorted(names) == ["agent.toml", "state", "state/outbox.db"]


@pytest.mark.qemu
def test_every_scenario_passes_on_a_qemu_fleet(tmp_path: Path) -> None:
    """Every shipped scenario, in order, on two QEMU devices through the fleet runner."""
    from edgeward.simulator.cli import run_simulation
    from edgeward.simulator.image import build_image
    from edgeward.simulator.results import RunResult
    from edgeward.simulator.scenario import available, find_scenario

    build_image(progress=print)
    lines: list[str] = []
    result = run_simulation(board_name="rpi4b", devices=2, scenario_names=[], mode="qemu",
                            workdir=tmp_path / "fleet", seed=20261129, fault_scale=0.2,
                            echo=lines.append)
    assert isinstance(result, RunResult)
    assert result.mode == "qemu" and not result.setup_error, "\n".join(lines[-30:])
    failed = [f"{s.scenario}/{s.step}: {s.failure_text()}" for s in result.steps if not s.ok]
    assert not failed, "\n".join(failed + lines[-40:])
    assert {s.scenario for s in result.steps} == {find_scenario(n).name for n in available()}
    for d in result.devices:
        assert d.attestation == "affirming" and d.hardware == 2, d
        assert d.missing == "none" and d.messages == d.highest, d
