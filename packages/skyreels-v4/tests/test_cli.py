"""The `skyreels-v4` command dispatches to every registered command."""

import importlib

import pytest

from skyreels_v4.cli import COMMANDS, main


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_module_has_a_main(name):
    module = importlib.import_module(COMMANDS[name][0])
    assert callable(module.main)


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out
    assert main([]) == 2


def test_unknown_command_is_an_error(capsys):
    assert main(["render-everything"]) == 2
    assert "unknown command 'render-everything'" in capsys.readouterr().err


def test_backends_command_runs(capsys):
    assert main(["backends"]) == 0
    assert "reference" in capsys.readouterr().out
