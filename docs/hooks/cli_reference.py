"""MkDocs hook: the command-line reference is generated from the argparse definitions at build time, so
the page cannot drift from `higgs-lora COMMAND --help`. A page containing the marker line
`<!-- cli-reference -->` gets, in its place, every command with its usage, description and options."""
from __future__ import annotations

import argparse

MARKER = "<!-- cli-reference -->"


def _options_table(parser: argparse.ArgumentParser) -> list[str]:
    rows = []
    for action in parser._actions:  # argparse has no public listing of a parser's arguments
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        names = ", ".join(f"`{s}`" for s in action.option_strings) or f"`{action.metavar or action.dest}`"
        if action.option_strings and action.nargs != 0:
            metavar = action.metavar or (action.dest.upper() if not action.choices else "|".join(map(str, action.choices)))
            names += f" `{metavar}`"
        text = (action.help or "").replace("|", "\\|").replace("\n", " ")
        if "%(" in text:
            text = text % {**vars(action), "prog": parser.prog}
        if action.default not in (None, False, argparse.SUPPRESS) and action.option_strings and "default" not in text:
            text += f" (default: `{action.default}`)"
        rows.append(f"| {names} | {text} |")
    return ["| argument | meaning |", "|---|---|", *rows] if rows else []


def cli_reference() -> str:
    from higgs_lora.cli import build_parser
    parser, _ = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {c.dest: c.help for c in sub._choices_actions}
    out = []
    for name, command in sub.choices.items():
        out += [f"## `higgs-lora {name}`", "", helps.get(name) or "", "",
                "```text", command.format_usage().strip(), "```", ""]
        if command.description:
            out += [command.description, ""]
        out += [*_options_table(command), ""]
    return "\n".join(out)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if MARKER in markdown:
        markdown = markdown.replace(MARKER, cli_reference())
    return markdown
