"""The docs cannot drift: every repo path written in README.md and docs/*.md exists, and every `huse …` /
`python -m huse_core …` command line in them names a real subcommand and only flags its parser accepts."""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
from pathlib import Path

from huse_core.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# Paths the user (or the app) creates, so they are not in the repository: prefix -> why it may be absent.
USER_CREATED = {
    "data/": "catalogues: `huse demo-data` and the app's first start write data/demo",
    "runs/": "trained runs: `huse train --out runs/...` and the app's first start write them",
    ".huse_cache/": "decoded photos and features, written beside a catalogue on first use",
}
PLACEHOLDER = re.compile(r"[<>*{}…]|\.\.\.|^[A-Z][A-Z_0-9]*$")  # <id>, *.json, …, RUN: not literal path segments
SEPARATORS = {"&&", "||", "|", ";", "&", ">", "2>", "2>&1", ")"}


def _top_level() -> set[str]:
    """The repository's top-level entries as git tracks them (a listing of the folder where git is missing)."""
    try:
        out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
        names = {line.split("/")[0] for line in out.splitlines() if line}
    except (OSError, subprocess.CalledProcessError):
        names = {p.name for p in ROOT.iterdir()}
    return names | {"docs"}


def split_markdown(text: str) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """(fenced code lines with their line numbers, continuation lines joined; inline code spans with theirs,
    a span broken over two lines read as one)."""
    code, prose, fenced, pending = [], [], False, None
    for no, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            prose.append("")
            continue
        prose.append("" if fenced else line)
        if not fenced:
            continue
        start, joined = pending if pending else (no, "")
        if line.rstrip().endswith("\\"):
            pending = (start, joined + line.rstrip()[:-1] + " ")
        else:
            code.append((start, joined + line))
            pending = None
    prose_text = "\n".join(prose)
    inline = [(prose_text.count("\n", 0, m.start()) + 1, m.group(1).replace("\n", " "))
              for m in re.finditer(r"`((?:[^`\n]|\n(?!\n))+)`", prose_text)]
    return code, inline


def path_problems(doc: Path, text: str, top: set[str]) -> list[str]:
    """Repo paths in the text (links, and any token starting with a top-level entry) that do not exist."""
    problems = []
    tops = "|".join(re.escape(t) for t in sorted(top, key=len, reverse=True))
    token = re.compile(rf"(?<![\w./~-])((?:{tops})(?:/[^\s`'\"()\[\]|,;]*)?)")
    for no, line in enumerate(text.splitlines(), 1):
        for target in re.findall(r"\]\(([^)\s]+)\)", line):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            path = (doc.parent / target.split("#")[0]).resolve()
            rel = path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)
            if not path.exists():
                problems.append(f"{doc.name}:{no}: link to {target} ({rel} does not exist)")
        for raw in token.findall(re.sub(r"\]\([^)\s]+\)", "]", line)):  # link targets: checked just above
            path = _literal_part(raw)
            if "/" not in raw and not (ROOT / path).is_file():
                continue  # a bare word such as "tests" or "bench" in prose; files at the top are checked below
            if path and not (ROOT / path).exists():
                problems.append(f"{doc.name}:{no}: {raw} does not exist")
    return problems


def _literal_part(raw: str) -> str:
    """The path up to its first placeholder segment, without trailing punctuation or a `:func` / `#anchor`."""
    raw = re.split(r"::|#", raw)[0].rstrip(".:")
    raw = re.sub(r":\w+$", "", raw)
    kept = []
    for part in raw.split("/"):
        if PLACEHOLDER.search(part):
            break
        kept.append(part)
    return "/".join(kept)


def _actions(parser: argparse.ArgumentParser) -> dict[str, dict[str, argparse.Action]]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {name: p._option_string_actions for name, p in sub.choices.items()}


# `huse` where a command starts (line start, after && ; | or VAR=value), or `-m huse_core` anywhere (python, torchrun)
COMMAND = re.compile(r"(?:(?:^|&&|\|\||;|\|)\s*(?:[A-Z_]+=\S*\s+)*huse|-m huse_core)(?=\s|$)((?:(?!&&|\|\||;).)*)")


def command_problems(where: str, line: str, commands: dict[str, dict[str, argparse.Action]]) -> list[str]:
    """Each `huse SUB --flag …` in one line of code: a real subcommand, only its flags, values among its choices."""
    problems = []
    for match in COMMAND.finditer(line):
        try:
            tokens = shlex.split(match.group(1), comments=True)
        except ValueError as err:
            problems.append(f"{where}: cannot split {match.group(0).strip()!r}: {err}")
            continue
        if not tokens or PLACEHOLDER.search(tokens[0]) or tokens[0] in SEPARATORS:
            continue  # `huse …`, `huse <command> --help`
        if tokens[0] in ("-h", "--help"):
            continue
        if tokens[0] not in commands:
            problems.append(f"{where}: `{tokens[0]}` is not a subcommand (known: {', '.join(sorted(commands))})")
            continue
        options = commands[tokens[0]]
        for i, tok in enumerate(tokens[1:], 1):
            if tok in SEPARATORS or tok.endswith(";"):
                break
            if not tok.startswith("-") or re.match(r"-\d", tok) or tok in ("-", "--"):
                continue
            flag, _, inline_value = tok.partition("=")
            if flag not in options:
                problems.append(f"{where}: `{tokens[0]}` has no flag {flag}")
                continue
            action = options[flag]
            value = inline_value or (tokens[i + 1] if i + 1 < len(tokens) else "")
            if action.choices and value and not PLACEHOLDER.search(value) and value not in action.choices:
                problems.append(f"{where}: `{tokens[0]} {flag}` takes {sorted(action.choices)}, not {value!r}")
    for script in re.findall(r"python3? (bench/\S+\.py)", line):
        if not (ROOT / script).is_file():
            problems.append(f"{where}: {script} does not exist")
    return problems


def doc_problems(doc: Path, text: str) -> list[str]:
    commands = _actions(build_parser())
    code, inline = split_markdown(text)
    problems = path_problems(doc, text, _top_level())
    for no, line in code + inline:
        problems += command_problems(f"{doc.relative_to(ROOT)}:{no}", line, commands)
    return problems


def test_docs_paths_and_commands_exist():
    assert (ROOT / "docs" / "index.md").is_file(), "docs/index.md lists the guides"
    problems = [p for doc in DOCS for p in doc_problems(doc, doc.read_text(encoding="utf-8"))]
    assert not problems, "docs out of step with the code:\n" + "\n".join(problems)


def test_the_check_catches_what_drifts():
    """The checker itself: a bogus flag, an unknown subcommand, a wrong choice and a missing file are reported,
    and placeholders, quoted values and `huse` as an argument's value are not."""
    text = "\n".join([
        "```bash",
        "huse train --catalog data/demo/metadata.csv --out runs/demo --no-such-flag 3",
        "python -m huse_core frobnicate --run runs/demo",
        "torchrun --standalone --nproc_per_node 2 -m huse_core index --run RUN \\",
        "    --backend nosuch",
        "python bench/no_such_bench.py --run RUN",
        "torchrun --rdzv_id huse -m huse_core train --catalog c.csv --out r && huse index --run r --n-tree 3",
        "```",
        "Then `huse search --run runs/demo",
        "--txt shoes` and see huse_core/no_such_module.py or [x](docs/nope.md).",
        "Fine: `huse train --help`, `HUSE_RUN=r huse search --run r --text x`, `huse …`, runs/demo,",
        "`huse search --run RUN --text \"a|b\" --filter gender=Men # a comment --not-a-flag`.",
    ])
    problems = doc_problems(ROOT / "README.md", text)
    expected = ["--no-such-flag", "frobnicate", "nosuch", "no_such_bench.py", "--n-tree", "--txt",
                "no_such_module.py", "docs/nope.md"]
    for word in expected:
        assert any(word in p for p in problems), f"{word} not reported: {problems}"
    assert len(problems) == len(expected) + 1, problems  # no_such_bench.py: once as a path, once as a command
