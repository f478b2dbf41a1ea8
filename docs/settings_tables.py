"""Write the GRPO-λ settings tables of the documentation from :mod:`verl_lambda.core.settings`.

    python docs/settings_tables.py           # rewrite the tables in place
    python docs/settings_tables.py --check   # exit 1 (and name the file) when a table is out of date

A table lives between ``<!-- settings-table: KIND -->`` and ``<!-- /settings-table -->`` in a
Markdown file; KIND is ``verl`` (config keys), ``openrlhf`` (flags and environment variables) or
``demo`` (``verl-lambda demo``'s flags).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from verl_lambda.core.settings import GRPOLambdaSettings, env_var, setting_fields
from verl_lambda.verl.keys import config_key

ROOT = Path(__file__).resolve().parents[1]
FILES = ["README.md", "docs/grpo_lambda.md", "docs/openrlhf.md", "docs/demo.md"]
BLOCK = re.compile(r"(<!-- settings-table: (\w+) -->\n)(.*?)(<!-- /settings-table -->)", re.S)


def _default(value, none_word: str) -> str:
    return none_word if value is None else f"`{value}`"


def _layout(kind: str):
    """How ``kind`` names a setting (its leading columns), how its users write "none", and whether the
    table cites each setting's source."""
    if kind == "verl":
        return [("key", lambda f: f"`{config_key(f.name)}`")], "null", True
    if kind == "openrlhf":
        return (
            [("flag", lambda f: f"`--lambda.{f.name}`"), ("environment variable", lambda f: f"`{env_var(f.name)}`")],
            "none",
            False,
        )
    if kind == "demo":
        from verl_lambda.demo.cli import setting_flag

        return [("flag", lambda f: f"`{setting_flag(f.name)}`")], "none", False
    raise ValueError(f"unknown settings table {kind!r}")


def table(kind: str) -> str:
    """The Markdown table of every setting for ``kind`` (``verl``, ``openrlhf`` or ``demo``)."""
    names, none_word, with_source = _layout(kind)
    defaults = GRPOLambdaSettings().values()
    headers = [header for header, _ in names] + ["default", "allowed", "meaning"] + ["source"] * with_source
    rows = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    for f in setting_fields():
        cells = [name(f) for _, name in names] + [
            _default(defaults[f.name], f"`{none_word}`"),
            f.metadata["allowed"].describe(none_word),
            f.metadata["help"],
        ]
        rows.append("| " + " | ".join(cells + [f.metadata["source"]] * with_source) + " |")
    return "\n".join(rows) + "\n"


def render(text: str) -> str:
    """``text`` with every settings table replaced by the current one."""
    return BLOCK.sub(lambda m: m.group(1) + table(m.group(2)) + m.group(4), text)


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for name in FILES:
        path = ROOT / name
        text = path.read_text(encoding="utf-8")
        new = render(text)
        if new != text:
            stale.append(name)
            if not check:
                path.write_text(new, encoding="utf-8")
    if check and stale:
        print(f"settings tables out of date in {', '.join(stale)}: run python docs/settings_tables.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
