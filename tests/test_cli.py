from bayes_et import __version__, cli


def test_version_and_help(capsys):
    for argv in (["--version"], ["--help"]):
        try:
            cli.main(argv)
        except SystemExit as stop:
            assert stop.code == 0
    out = capsys.readouterr().out
    assert f"bayes-et {__version__}" in out
    for command in ("run", "generate", "train", "evaluate", "cavi"):
        assert command in out


def test_no_command_prints_help(capsys):
    assert cli.main([]) == 0
    assert "usage: bayes-et" in capsys.readouterr().out
