"""``edgeward boards list|show NAME``: the board definitions the agent and the simulator read."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import click

from edgeward.boards.loader import Board, list_boards, load_board

_dir_option = click.option(
    "--dir", "extra_dirs", multiple=True, type=click.Path(path_type=Path),
    help="A folder of vendor board files (*.toml), besides the shipped ones; repeatable.")


def _memory(kib: int) -> str:
    return f"{kib // 1024} MiB" if kib >= 1024 and kib % 1024 == 0 else f"{kib} KiB"


@click.group()
def boards() -> None:
    """Board definitions: hardware, root of trust, QEMU settings, the agent's budget."""


@boards.command("list")
@_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print every board as JSON.")
def list_cmd(extra_dirs: tuple[Path, ...], as_json: bool) -> None:
    """List the known boards."""
    found = list_boards(extra_dirs)
    if as_json:
        from edgeward.agent.cli.common import echo_json

        echo_json([asdict(b) for b in found])
        return
    for b in found:
        alias = f" (also {', '.join(b.aliases)})" if b.aliases else ""
        click.echo(f"{b.name:<22} {b.backend:<5} {b.root_of_trust.kind:<14} {b.description}"
                   f"{alias}")


def _show(b: Board) -> list[str]:
    lines = [
        f"name:          {b.name}" + (f" (aliases: {', '.join(b.aliases)})" if b.aliases else ""),
        f"description:   {b.description}",
        f"backend:       {b.backend}",
        f"cpu:           {b.cpu.model} ({b.cpu.arch}), {b.cpu.cores} cores at {b.cpu.mhz} MHz",
        f"memory:        {_memory(b.memory_kib)}",
        f"root of trust: {b.root_of_trust.kind}"
        + (f": {b.root_of_trust.part}" if b.root_of_trust.part else "")
        + (f" [{b.root_of_trust.interface}]" if b.root_of_trust.interface else ""),
    ]
    if b.qemu:
        q = b.qemu
        lines.append(f"qemu:          -M {q.machine} -cpu {q.cpu} -m {q.memory_mib} -smp {q.smp}")
    if b.budget:
        lines.append(f"agent budget:  {b.budget.memory_mib} MiB, "
                     f"{b.budget.cpu_share:.0%} of the CPUs")
    if b.mcu:
        u = b.mcu
        lines.append(f"micropython:   port {u.port}, {u.flash_kib} KiB flash, firmware at "
                     f"0x{u.firmware_offset:x} (+0x{u.firmware_size:x}), UART {u.uart_baud} baud")
    lines.append(f"boot PCRs:     {', '.join(map(str, b.boot.pcrs)) or '(none)'}")
    lines.append(f"components:    {', '.join(b.boot.components) or '(none)'}")
    lines.append(f"defined in:    {b.source}")
    return lines


@boards.command("show")
@click.argument("name")
@_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the board as JSON.")
def show_cmd(name: str, extra_dirs: tuple[Path, ...], as_json: bool) -> None:
    """Show one board (by name or alias)."""
    b = load_board(name, extra_dirs)
    if as_json:
        from edgeward.agent.cli.common import echo_json

        echo_json(asdict(b))
        return
    for line in _show(b):
        click.echo(line)
