"""`edgeward demo --out DIR` never removes what it did not create (issue: --out . emptied a folder)."""

from __future__ import annotations

import pytest

from edgeward.core.errors import ConfigError
from edgeward.simulator import workdir


def test_out_pointing_at_a_users_file_is_refused_and_the_file_kept(tmp_path):
    precious = tmp_path / "precious"
    precious.write_text("thesis")
    with pytest.raises(ConfigError, match="is a file"):
        workdir.claim(precious)
    assert precious.read_text() == "thesis"


def test_out_dot_with_user_files_is_refused_and_nothing_removed(tmp_path, monkeypatch):
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "src").mkdir()
    monkeypatch.chdir(tmp_path)
    from pathlib import Path

    with pytest.raises(ConfigError, match=r"not empty .* not made by edgeward"):
        workdir.claim(Path("."))
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert (tmp_path / "src").is_dir()


def test_a_new_or_empty_folder_is_used(tmp_path):
    workdir.claim(tmp_path / "new" / "deeper")
    assert (tmp_path / "new" / "deeper").is_dir()
    (tmp_path / "empty").mkdir()
    workdir.claim(tmp_path / "empty")


def test_rerun_removes_only_what_the_earlier_run_made(tmp_path):
    out = tmp_path / "demo-out"
    workdir.claim(out)
    (out / "keys").mkdir()
    (out / "keys" / "private.pem").write_text("k")
    (out / "fleet.sqlite").write_text("db")
    workdir.record(out)
    workdir.claim(out)
    assert list(out.iterdir()) == []


def test_rerun_keeps_a_file_the_user_added_later_and_refuses(tmp_path):
    out = tmp_path / "demo-out"
    workdir.claim(out)
    (out / "keys").mkdir()
    workdir.record(out)
    (out / "my-notes.txt").write_text("added by the user after the demo")
    with pytest.raises(ConfigError, match="not empty"):
        workdir.claim(out)
    assert (out / "my-notes.txt").exists()
    assert not (out / "keys").exists()  # ours: removed


def test_hostile_marker_cannot_climb_out_of_the_folder(tmp_path):
    """Attack: a marker naming ../victim or an absolute path must not delete outside."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "data").write_text("x")
    out = tmp_path / "out"
    out.mkdir()
    (out / workdir.MARKER).write_text(f"../victim\n{victim}\n..\n.\n")
    workdir.claim(out)
    assert (victim / "data").exists()


def test_demo_command_refuses_a_users_file_with_exit_1(tmp_path, capsys):
    from edgeward.agent.cli import main

    precious = tmp_path / "precious"
    precious.write_text("thesis")
    with pytest.raises(SystemExit) as e:
        main(["demo", "--out", str(precious)])
    assert e.value.code == 1
    assert precious.read_text() == "thesis"
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a file" in err
