"""The CLI grammar: help everywhere, close-match hints for typos, one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ecgvit.cli import main


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ecgvit.cli", *args], capture_output=True, text=True, timeout=120)


def test_top_level_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("data", "synth"):
        assert cmd in out


def test_mistyped_option_gets_closest_valid_one(capsys):
    with pytest.raises(SystemExit) as e:
        main(["data", "split", "m.csv", "--fold", "3", "--sed", "1"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--seed" in err and "did you mean" in err


def test_mistyped_command_gets_closest_valid_one(capsys):
    with pytest.raises(SystemExit):
        main(["dta"])
    assert "data" in capsys.readouterr().err


def test_missing_input_is_one_clear_line():
    r = run("data", "split", "does-not-exist.csv")
    assert r.returncode == 2
    assert "does-not-exist.csv" in r.stderr
    assert "Traceback" not in r.stderr
