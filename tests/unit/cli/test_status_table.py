"""The iteration table fits the terminal it is printed on: columns are left out, never cut to ellipses."""

from __future__ import annotations

import io

from rich.console import Console

from flywheel.common import print_status

RECORD = {"iteration": "0001", "status": "completed", "parent": "0000", "choice": {"temperature": 0.8},
          "eval": {"pass@1": 0.4833, "pass@8": 0.563}, "promotion": {"promoted": True}, "gate": {"passed": True}}


def _printed(width: int, terminal: bool) -> str:
    out = io.StringIO()
    print_status([RECORD], Console(file=out, width=width, force_terminal=terminal, color_system=None))
    return out.getvalue()


def test_a_narrow_terminal_gets_whole_columns():
    text = _printed(80, terminal=True)
    assert "…" not in text and "iteration" in text and "test_pass@1" in text and "0.483" in text
    assert "columns left out" in text and max(len(line) for line in text.splitlines()) <= 80


def test_a_pipe_gets_every_column():
    text = _printed(80, terminal=False)
    assert "peak_MB" in text and "gen_tok/s" in text and "columns left out" not in text
