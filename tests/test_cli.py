import subprocess
import sys

from bayes_et import __version__, cli


def test_version_and_help(capsys):
    for argv in (["--version"], ["--help"]):
        try:
            cli.main(argv)
        except SystemExit as stop:
            assert stop.code == 0
    out = capsys.readouterr().out
    assert f"bayes-et {__version__}" in out and "run" in out


def test_console_script_runs():
    result = subprocess.run([sys.executable, "-m", "bayes_et.cli", "run"], capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "not built yet" in result.stdout
