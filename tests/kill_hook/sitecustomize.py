"""Test-only: SIGKILL this process's whole group at an exact moment of a `flywheel run`.

tests/killing.py puts this folder on PYTHONPATH for one run; it is never shipped. The moment is
FLYWHEEL_TEST_KILL = `EVENT|REGEX|N`, optionally followed by `>EVENT|REGEX|N` steps: each step
waits for the N-th audit event EVENT (PEP 578: `os.rename` is os.replace, `open`, `fcntl.ioctl`,
`subprocess.Popen`) whose joined arguments match REGEX; at the last step the group gets SIGKILL
before the call proceeds. Each Python process of the run (stage processes too) counts on its own.
"""

import os
import re
import signal
import sys

_SPEC = os.environ.get("FLYWHEEL_TEST_KILL")

if _SPEC:
    _steps = [(e, re.compile(r), int(n)) for e, r, n in (part.split("|") for part in _SPEC.split(">"))]
    _state = {"step": 0, "seen": 0}

    def _hook(event: str, args: tuple) -> None:
        name, regex, nth = _steps[_state["step"]]
        if event != name or not regex.search(" ".join(map(str, args))):
            return
        _state["seen"] += 1
        if _state["seen"] < nth:
            return
        if _state["step"] == len(_steps) - 1:
            os.killpg(0, signal.SIGKILL)
        _state["step"], _state["seen"] = _state["step"] + 1, 0

    sys.addaudithook(_hook)
