"""Every command of the ``sh`` blocks of docs/*.md (but quickstart.md) would run verbatim.

README.md and docs/quickstart.md run against a live service (tests/test_doc_snippets.py); the
other documents show long benchmarks, containers and calls to a running service, so each
command is checked without running it:

- a block's ``\\`` continuations are joined, ``# comments`` dropped, ``&&`` / ``;`` / ``|`` split
  it into commands; leading ``VAR=value`` (the command's environment), ``env``, ``flock <file>``
  and ``timeout <n>`` are stripped; ``$VAR`` is expanded from the block's earlier assignments
  (and ``$PWD``: the checkout); ``VAR=$(cmd)`` checks ``cmd``;
- ``.venv/bin/python -m <module> args`` runs the module with ``ArgumentParser.parse_args``
  patched to exit 0 right after a successful parse: a stale flag or bad value exits 2;
  ``--peers`` must be in benchmarks/peers/registry.py and ``--workloads`` among the parser's
  default ones. A module parsing its arguments by hand must be in RUN_WHOLE (run whole: quick,
  side-effect free);
- ``.venv/bin/luna-sender args`` (or ``-m luna_sender``) is parsed the same way; when it serves,
  ``check-config`` with the same flags and environment must also accept the settings;
- ``.venv/bin/python -c "..."`` one-liners run (the documents show only quick, pure ones);
- ``make <target> [VAR=...]``: ``make -n`` knows the target; ``make bench ARGS="..."`` also
  parses ARGS as benchmarks.run's arguments;
- ``git archive <rev>`` / ``git worktree add --detach <path> <rev>``: ``<rev>`` is a commit of
  the checkout (skipped in a shallow clone); ``mkdir`` and ``tar`` pass as they are, ``rm -rf`` only under /tmp;
- a bare ``python`` / ``luna-sender`` / ``pip`` / ``pytest`` fails: the README's set-up installs
  into ``.venv`` and does not activate it;
- commands needing what the test machines lack are skipped with their reason (ALLOWED);
  anything else fails, so a new kind of command in a document must be classified here.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from dataclasses import dataclass, field

import pytest

from .helpers import REPO
from .test_doc_snippets import FENCE_RE

DOCS = sorted(p.name for p in (REPO / "docs").glob("*.md") if p.name != "quickstart.md")
PYTHON = str(REPO / ".venv" / "bin" / "python")
CLI_MODULES = {"luna_sender", "luna_sender.cli"}
RUN_WHOLE = {"benchmarks.report"}  # reads sys.argv[1] by hand; renders a results file
BARE = {"python", "python3", "luna-sender", "pip", "pytest"}
FILE_UTILS = {"mkdir", "tar"}
ALLOWED = [
    (r"docker ", "no container engine on the test machines (tests/test_ops_container.py)"),
    (r"curl .*http://127\.0\.0\.1:5080/", "needs a live service on the documented port 5080"),
    (r"promtool check metrics$", "reads a live scrape (tests/test_ops_metrics.py pipes one)"),
]
ASSIGN_RE = re.compile(r"([A-Za-z_]\w*)=(.*)", re.S)
SUBST_RE = re.compile(r"([A-Za-z_]\w*)=\$\((.*)\)")
VAR_RE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")
MARK = "doc-commands: arguments parsed"
# Run as `python -c HOOK <module> args...`: the module runs as __main__ until it has parsed.
HOOK = f"""
import argparse, runpy, sys
parse = argparse.ArgumentParser.parse_args
def parse_args(self, args=None, namespace=None):
    ns = parse(self, args, namespace)
    registry = sys.modules.get("benchmarks.peers.registry")
    for peer in (getattr(ns, "peers", None) or "").split(","):
        if peer and registry and peer not in registry.PEERS:
            self.error(f"--peers: no peer {{peer!r}} in benchmarks/peers/registry.py")
    known = (self.get_default("workloads") or "").split(",")
    for workload in (getattr(ns, "workloads", None) or "").split(","):
        if workload and workload not in known:
            self.error(f"--workloads: {{workload!r}} is none of {{known}}")
    print({MARK!r})
    raise SystemExit(0)
argparse.ArgumentParser.parse_args = parse_args
sys.argv = sys.argv[1:]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


@dataclass
class Command:
    doc: str
    line: int
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.doc}:{self.line}: {shlex.join(self.argv)}"


def _expand(token: str, names: dict[str, str]) -> list[str]:
    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        return names.get(name, m.group(0))

    value = VAR_RE.sub(sub, token)
    return value.split() if VAR_RE.fullmatch(token) else [value]  # word splitting


def _command(doc: str, line: int, words: list[str], names: dict[str, str]) -> Command | None:
    argv = [w for t in words for w in _expand(t, names)]
    env: dict[str, str] = {}
    while argv:
        if m := ASSIGN_RE.fullmatch(argv[0]):
            env[m.group(1)] = m.group(2)
            argv = argv[1:]
        elif argv[0] == "env":
            argv = argv[1:]
        elif argv[0] in ("flock", "timeout"):
            argv = argv[2:]
        else:
            return Command(doc, line, argv, env)
    names.update(env)  # a line of assignments only: shell variables for the lines below
    return None


def commands(doc: str, text: str) -> list[Command]:
    found: list[Command] = []
    for block in FENCE_RE.finditer(text):
        first = text[: block.start(2)].count("\n") + 1
        names = {"PWD": str(REPO)}
        lines = block.group(2).split("\n")
        i = 0
        while i < len(lines):
            start, logical = i, lines[i]
            while logical.endswith("\\") and i + 1 < len(lines):
                i += 1
                logical = logical[:-1] + " " + lines[i]
            i += 1
            if m := SUBST_RE.fullmatch(logical.strip()):  # VAR=$(cmd): check cmd
                names[m.group(1)] = f"${m.group(1)}"
                logical = m.group(2)
            lexer = shlex.shlex(logical, posix=True, punctuation_chars=";&|")
            lexer.whitespace_split = True
            words: list[str] = []
            for token in [*lexer, ";"]:
                if token in (";", "&&", "|", "||"):
                    if words and (cmd := _command(doc, first + start, words, names)):
                        found.append(cmd)
                    words = []
                else:
                    words.append(token)
    return found


def all_commands() -> list[Command]:
    return [c for doc in DOCS for c in commands(doc, (REPO / "docs" / doc).read_text())]


def _run(argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **(env or {})}
    return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)


def _failed(result: subprocess.CompletedProcess[str], need: str = "") -> str | None:
    if result.returncode == 0 and need in result.stdout:
        return None
    return f"exit {result.returncode}: {(result.stderr or result.stdout).strip()[-800:]}"


def check_module(module: str, args: list[str], env: dict[str, str]) -> str | None:
    if module in CLI_MODULES:
        return check_cli(args, env)
    if module in RUN_WHOLE:
        return _failed(_run([PYTHON, "-m", module, *args], env))
    if not module.startswith(("benchmarks.", "luna_sender.")):
        return f"python -m {module}: not a module of this checkout"
    result = _run([PYTHON, "-c", HOOK, module, *args], env)
    if result.returncode == 0 and MARK not in result.stdout:
        return f"{module} does not parse with argparse: add it to RUN_WHOLE or handle it"
    return _failed(result, MARK)


def check_cli(args: list[str], env: dict[str, str]) -> str | None:
    error = check_module("luna_sender.__main__", args, env)
    subcommands = {"serve", "check-config", "version", "listen", "publish"}
    if error or subcommands.intersection(args) - {"serve"}:
        return error
    # It serves: the same flags and environment must make valid settings.
    argv = [a if a != "serve" else "check-config" for a in args]
    argv += [] if "serve" in args else ["check-config"]
    return _failed(_run([PYTHON, "-m", "luna_sender", *argv], env))


def _is_commit(rev: str) -> str | None:
    shallow = _run(["git", "rev-parse", "--is-shallow-repository"]).stdout.strip()
    if shallow == "true":
        pytest.skip("shallow clone: the documented commits may be outside it")
    result = _run(["git", "cat-file", "-e", f"{rev}^{{commit}}"])
    return None if result.returncode == 0 else f"{rev} is not a commit of this checkout"


def check(cmd: Command) -> str | None:
    """None when ``cmd`` would run verbatim, else why not; skips the ALLOWED ones."""
    text, (word, *args) = shlex.join(cmd.argv), cmd.argv
    for pattern, reason in ALLOWED:
        if re.match(pattern, text):
            pytest.skip(f"{cmd}: {reason}")
    if word in BARE:
        return f"{word!r} is not on PATH after the README's set-up: write .venv/bin/{word}"
    if word == ".venv/bin/luna-sender":
        return check_cli(args, cmd.env)
    if word == ".venv/bin/python" and len(args) >= 2 and args[0] == "-m":
        return check_module(args[1], args[2:], cmd.env)
    if word == ".venv/bin/python" and len(args) == 2 and args[0] == "-c":
        return _failed(_run([PYTHON, "-c", args[1]], cmd.env))
    if word == "make":
        error = _failed(_run(["make", "-n", *args], cmd.env))
        make_vars = {m.group(1): m.group(2) for a in args if (m := ASSIGN_RE.fullmatch(a))}
        if not error and "bench" in args and "ARGS" in make_vars:
            error = check_module("benchmarks.run", shlex.split(make_vars["ARGS"]), cmd.env)
        return error
    if word == "git" and args[:1] == ["archive"] and len(args) == 2:
        return _is_commit(args[1])
    if word == "git" and args[:3] == ["worktree", "add", "--detach"] and len(args) == 5:
        return _is_commit(args[4])
    if word in FILE_UTILS:
        return None
    if word == "rm":  # clearing a scratch folder before unpacking a commit into it
        scratch = args[:1] == ["-rf"] and all(a.startswith("/tmp/") for a in args[1:])
        return None if scratch and len(args) > 1 else "rm outside a /tmp scratch folder"
    return "unclassified command: give it a rule or an ALLOWED reason in this test"


ALL = all_commands()


def test_the_documents_show_commands() -> None:
    assert {c.doc for c in ALL} >= {"performance.md", "deployment.md", "security.md"}, DOCS


@pytest.mark.parametrize(
    "cmd", ALL, ids=[f"{c.doc}:{c.line}:{c.argv[0].split('/')[-1]}" for c in ALL]
)
def test_doc_command_runs_verbatim(cmd: Command) -> None:
    error = check(cmd)
    assert error is None, f"{cmd}\n  {error}"


@pytest.mark.parametrize(
    "line",
    [
        ".venv/bin/python -m benchmarks.run --no-such-flag 1",
        ".venv/bin/python -m benchmarks.run --rounds three",
        "env $B .venv/bin/python -m benchmarks.run --peers luna,no-such-peer",
        ".venv/bin/python -m benchmarks.recovery_ab --workloads W1,W9",
        "make bench ARGS='--workloads W1 --quick --stale'",
        "make no-such-target",
        "git archive 0000000",
        ".venv/bin/luna-sender --no-such-flag",
        "LUNA_SENDER_AUTH__MODE=jwt .venv/bin/luna-sender",  # no secret: invalid settings
        "python -m benchmarks.recovery",
        "rm -rf /work/main",
        "ls",
    ],
)
def test_the_check_catches_a_command_that_would_not_run(line: str) -> None:
    (cmd,) = commands("t.md", f"```sh\nB=X=1\n{line}\n```\n")
    assert check(cmd) is not None, cmd
