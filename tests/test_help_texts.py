"""Help texts say what an option takes and show each default once (issue 14, item 17)."""
import argparse
import re

import pytest


def _parsers():
    from sf_core.cli.generate import build_parser as generate
    from sf_core.toy.cli import build_parser as toy
    from sf_core.train.cli import build_parser as train

    out = {"generate": generate()}
    for name, top in (("train", train()), ("toy", toy())):
        sub = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
        out.update({f"{name} {cmd}": p for cmd, p in sub.choices.items()})
    return out


@pytest.mark.parametrize("name", sorted(_parsers()))
def test_defaults_are_shown_once_and_never_as_none(name):
    parser = _parsers()[name]
    checked = 0
    for action in parser._actions:
        if not action.help:
            continue
        text = parser._get_formatter()._expand_help(action)  # the option's help as --help prints it
        assert "(default: None)" not in text and "(default: False)" not in text, (action.dest, text)
        assert text.lower().count("default") <= 1 or "defaults" in text.lower(), (action.dest, text)
        checked += 1
    assert checked


def test_generate_help():
    text = " ".join(_parsers()["generate"].format_help().split())
    assert "--prompts FILE a JSON file holding a prompt schedule" in text
    assert "--crf CRF H.264 quality (lower = better, 0 = lossless) (default: 18)" in text
    assert "--transition TRANSITION blend old -> new prompt over this many chunks (default: 0)" in text
