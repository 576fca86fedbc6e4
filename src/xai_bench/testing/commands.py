"""What every bad command line must give: exit code 2 and one line on stderr, no traceback.

For the tests of any command built on xai_bench (``xai-bench``, ``covid-cxr``, a plugin's own).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence


def fails_in_one_line(main: Callable[[Sequence[str]], int], argv: list[str], capsys) -> str:
    """Run a command's ``main`` in-process; it must exit 2 with one line on stderr. Return that line."""
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's usage errors exit rather than return
        code = exit_.code
    err = capsys.readouterr().err.strip()
    assert code == 2, (argv, code, err)
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err
