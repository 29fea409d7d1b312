"""earshot emulate's scripted function calls (``--call TURN:NAME:JSON``)."""

from __future__ import annotations

import argparse

import pytest

from earshot.emulator.cli import build_parser, parse_call
from earshot.emulator.options import FunctionCall


def test_a_call_is_parsed_with_its_turn_and_arguments() -> None:
    assert parse_call('2:set_timer:{"seconds": 10, "label": "tea"}') == (
        2,
        FunctionCall("set_timer", {"seconds": 10, "label": "tea"}),
    )
    assert parse_call("1:list_timers:") == (1, FunctionCall("list_timers", {}))
    args = build_parser().parse_args(["--call", '1:set_timer:{"seconds": 5}', "--reply", "Okay."])
    assert dict(args.call) == {1: FunctionCall("set_timer", {"seconds": 5})}


@pytest.mark.parametrize("bad", ["set_timer", "0:set_timer:{}", "x:set_timer:{}", "1::{}", "1:f:[1]", "1:f:{nope"])
def test_a_bad_call_is_refused_with_its_reason(bad: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_call(bad)
