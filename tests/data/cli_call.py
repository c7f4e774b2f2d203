"""Run the command line in-process, as a user would from a shell (``changescout.cli.main``, the console script)."""

import warnings

from changescout import cli


def run_cli(capsys, *args):
    """``(exit code, stdout, stderr with runs of white space as one space (rich wraps it), warnings shown)``.

    Every warning is recorded (pytest's configuration ignores some, e.g. rasterio's NotGeoreferencedWarning, that
    a user's Python prints on stderr): the warnings a user would see are those recorded. The CLI's global flags
    (``--debug``, ``-q``) are reset afterwards."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            cli.main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code
        finally:
            cli._state.update(debug=False, quiet=False)
    out, err = capsys.readouterr()
    return code, out, " ".join(err.split()), [f"{w.category.__name__}: {w.message}" for w in caught]
