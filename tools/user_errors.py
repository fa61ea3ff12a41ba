"""The tools' user errors as the program gives them (main.py, reproduce.py): one line 'Error: ...' on
stderr and exit status 2, never a traceback.

A missing file or folder, missing data or a missing optional package (scipy, torch, learn2learn,
tf_slim: the program needs none of them) is the user's to fix, not a bug of the tool. Every tool
runs its main() through run(), and imports such a package with optional_import() after parsing its
arguments, so that --help works without it.
"""
import argparse
import importlib
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


class UserError(SystemExit):
    """Something the user can fix, said in one line by run(); its exit status is 2.

    A SystemExit, so that a tool's function that finds the problem deep down ends the tool with it.
    """

    def __init__(self, message):
        super().__init__(message)
        self.code = 2


def command_of(script):
    """How the user runs a tool: 'python tools/x.py' (from the repository's root)."""
    path = Path(script).resolve()
    try:
        path = path.relative_to(REPO)
    except ValueError:  # a copy of the tool outside the repository
        pass
    return 'python %s' % path


class ArgumentParser(argparse.ArgumentParser):
    """argparse's, a usage error given as every other error: one 'Error:' line, exit status 2."""

    def __init__(self, *args, script, **kwargs):
        super().__init__(*args, **kwargs)
        self.command = command_of(script)

    def error(self, message):
        self.exit(2, 'Error: %s (%s --help)\n' % (message, self.command))


def optional_import(name, needed_by):
    """The module `name` of a package the program itself does not need, or a UserError saying how to
    install it. A module of the package that fails to import for another reason is a real error."""
    package = name.split('.')[0]
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if (exc.name or '').split('.')[0] != package:
            raise
        raise UserError('%s needs %s, which is not installed here: pip install %s'
                        % (needed_by, package, package)) from None


def message_of(exc):
    """What went wrong, in the words of the exception (a KeyError's without its quotes)."""
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    return str(exc)


def run(main, *errors):
    """main(), its value returned. A UserError, an OSError (a file or folder missing or unreadable) or
    one of `errors` ends the tool with one line 'Error: ...' and exit status 2."""
    try:
        return main()
    except (UserError, OSError) + tuple(errors) as exc:
        print('Error: %s' % message_of(exc), file=sys.stderr, flush=True)
        sys.exit(2)
