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
    assert "[built] cavi" in result.stdout


def test_run_reports_exact_quartic_moments(capsys):
    assert cli.main(["run"]) == 0
    out = capsys.readouterr().out
    assert "Exact moments of Quartic()" in out and "[built] expfam" in out


def test_run_rejects_bad_configs(tmp_path, capsys):
    cases = {
        "family: Quartic\nslice: {start: [0,0,0,-1], stop: [0,0,0,-1], num: 3}\nextra: 1\n":
            "unknown key(s) ['extra']",
        "family: Nope\nslice: {start: [0], stop: [0], num: 3}\n": "family='Nope'",
        "family: Quartic\nslice: {start: [0,0,0,-1], stop: [0,0,0,-1], num: 1}\n": "slice.num=1",
        "family: Quartic\nslice: {start: [0,0,0,1], stop: [0,0,0,-1], num: 3}\n":
            "eta['x4'] < 0 is violated",
    }
    for text, message in cases.items():
        path = tmp_path / "c.yaml"
        path.write_text(text)
        assert cli.main(["run", str(path)]) == 2
        assert message in capsys.readouterr().err
