"""``spemr`` command line. Each subcommand lives in ``spemr_engine.commands.<name>``
and exposes ``register(subparsers)``, which adds a parser whose ``func(args)`` returns
an exit code. Errors meant for users (SpemrError) become one stderr line and exit 2.

A command ``foo-bar`` lives in module ``foo_bar`` or ``foo``; when the command line names
one, only that module is imported, so ``spemr info`` does not pay for torch."""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

from . import __version__, commands
from .errors import SpemrError, display_name, one_line

EXIT_USER_ERROR = 2
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as for any tool whose reader went away


def _command_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(commands.__path__) if not m.name.startswith("_"))


def _modules_for(argv: list[str]) -> list[str]:
    """The one module that defines the command named in argv, else all of them."""
    available = _command_modules()
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    if command:
        for candidate in (command.replace("-", "_"), command.split("-")[0]):
            if candidate in available:
                return [candidate]
    return available


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spemr", description="SPEMR stellar parameters from LAMOST MRS spectra")
    parser.add_argument("--version", action="version", version=f"spemr {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = _command_modules() if argv is None else _modules_for(argv)
    for name in modules:
        importlib.import_module(f"{commands.__name__}.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USER_ERROR
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()
        return code
    except BrokenPipeError:  # `spemr info FILE | head -1`: the reader has all it wants
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except SpemrError as error:
        print(one_line(str(error)), file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as error:  # a path given on the command line: too long, a loop, no access
        print(one_line(_os_error_line(error)), file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _os_error_line(error: OSError) -> str:
    problem = error.strerror or str(error) or type(error).__name__
    if error.filename is None:
        return f"spemr: {problem}"
    return f"{display_name(error.filename)}: {problem}"


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


if __name__ == "__main__":
    sys.exit(main())
