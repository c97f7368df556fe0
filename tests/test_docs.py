"""Every command the README and docs/ show runs as written: each program invocation in their
shell blocks (fenced ```bash blocks and indented blocks) parses with that program's own
parser (unknown flags, bad choices and missing arguments fail here), and every relative
link points at a file that exists."""

import pathlib
import re
import shlex

import pytest

from tfdqn_trainer import config as config_lib
from tfdqn_trainer.commands import evaluate, export, plot

REPO = pathlib.Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def _parse_train(argv):
    config_lib.parse_args(argv)


PARSERS = {
    "train": _parse_train,
    "apex": _parse_train,  # one Config: Ape-X's settings are its fields
    "evaluate": lambda argv: evaluate.build_parser().parse_args(argv),
    "plot": lambda argv: plot.build_parser().parse_args(argv),
    "export": lambda argv: export.build_parser().parse_args(argv),
}


def _shell_lines(text):
    """The lines of a page's shell blocks, continuation lines joined."""
    blocks = re.findall(r"```(?:bash|sh)\n(.*?)```", text, re.S)
    indented = re.findall(r"(?:^|\n\n)((?:    \S.*\n?)+)", text)
    lines = []
    for block in blocks + [re.sub(r"^    ", "", b, flags=re.M) for b in indented]:
        block = re.sub(r"\\\n\s*", " ", block)
        lines += [line.split("#")[0].strip() for line in block.splitlines()]
    return [line for line in lines if line]


def _invocations(line):
    """(program, argv) of each train/apex/evaluate/plot invocation on a shell line."""
    found = []
    for segment in re.split(r"&&|;|\|", line):
        try:
            words = shlex.split(segment)
        except ValueError:
            continue
        for i, word in enumerate(words):
            match = (re.fullmatch(r"tfdqn-(train|apex|evaluate|plot|export)", word)
                     or (word.startswith("python/") and i > 0 and words[i - 1] == "python"
                         and re.fullmatch(r"python/(train|apex|evaluate|plot|export)\.py",
                                          word)))
            if match:
                found.append((match.group(1), words[i + 1:]))
                break
    return found


COMMANDS = [(page.name, program, argv) for page in PAGES
            for line in _shell_lines(page.read_text())
            for program, argv in _invocations(line)]


def test_the_pages_show_commands():
    programs = {program for _, program, _ in COMMANDS}
    assert programs == set(PARSERS), programs  # the extraction finds each program
    assert len(COMMANDS) >= 15


@pytest.mark.parametrize("page, program, argv", COMMANDS,
                         ids=[f"{p}:{prog}:{' '.join(a)[:40]}" for p, prog, a in COMMANDS])
def test_documented_command_parses(page, program, argv):
    try:
        PARSERS[program](argv)
    except SystemExit as e:  # argparse's way of refusing
        pytest.fail(f"{page}: `{program} {' '.join(argv)}` does not parse (exit {e.code})")


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_relative_links_point_at_files(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # code is not links
    text = re.sub(r"`[^`]*`", "", text)
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if re.match(r"[a-z]+://", target):
            continue
        assert (page.parent / target).exists(), f"{page.name}: broken link {target}"
