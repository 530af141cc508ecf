"""Training is its own package (packages/archiver-train, `archiver_train`), outside the runtime
package: `archiver train` comes from its `archiver.commands` entry point, and without it the
command says in one line what to install (exit 2), never a traceback."""

import click
from click.testing import CliRunner

import archiver.app.main as M
from archiver.app.main import main


def test_archiver_train_comes_from_the_training_package():
    cmd = main.get_command(click.Context(main), "train")
    assert isinstance(cmd, click.Group) and {"tiny", "adapter"} <= set(cmd.commands)
    assert cmd.callback.__module__ == "archiver_train.cli"
    assert "train" in main.list_commands(click.Context(main))


def test_without_the_training_package_archiver_train_names_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(M, "_entry_point", lambda name: None)
    for args in (["train", str(tmp_path), "--out", str(tmp_path / "o")], ["train", "--help"],
                 ["train", "adapter", "--model", "m", str(tmp_path)]):
        r = CliRunner().invoke(main, args)
        assert r.exit_code == 2, (args, r.output)
        lines = [ln for ln in r.output.splitlines() if ln.strip()]
        assert len(lines) == 1 and "Traceback" not in r.output, r.output
        assert "archiver-train" in lines[0] and "pip install -e packages/archiver-train" in lines[0]
    assert not (tmp_path / "o").exists()
    assert "train" in main.list_commands(click.Context(main))  # still listed, with how to install it


def test_an_unknown_command_is_still_unknown():
    r = CliRunner().invoke(main, ["no-such-command"])
    assert r.exit_code == 2 and "No such command" in r.output
