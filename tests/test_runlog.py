"""The console of `flywheel run` (flywheel/runlog.py): one line per stage, the iteration table, and
everything else in the run's log file."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from flywheel.runlog import StageConsole, _fds_to, stage_line
from tasks.pipeline import BOOTSTRAP_STAGES, ITERATION_STAGES

LINE = re.compile(r"^(bootstrap|iteration \d+/\d+) +(\S+) +(\d+\.\d) s(?:  (.+))?$")


def _stage_lines(stdout: str) -> list[re.Match]:
    return [m for m in map(LINE.match, stdout.splitlines()) if m]


def test_a_piped_run_prints_one_line_per_finished_stage_then_the_table(micro_workspace):
    stdout = (micro_workspace.parent / "run.stdout").read_text()
    stderr = (micro_workspace.parent / "run.stderr").read_text()
    lines = stdout.splitlines()
    stages = _stage_lines(stdout)
    expected = [*BOOTSTRAP_STAGES, *(f"{s}@{it}" for it in ("0001", "0002") for s in ITERATION_STAGES)]
    assert [m[2] for m in stages] == expected
    assert [m[1] for m in stages] == ["bootstrap"] * 5 + ["iteration 1/2"] * 8 + ["iteration 2/2"] * 8
    assert lines[0] == f"Creating workspace {micro_workspace}"
    table = lines[1 + len(stages):]
    assert "flywheel iterations" in table[0] and len(table) == 8  # title, header between 2 rules, 3 rows, 1 rule
    assert not stderr.strip(), stderr  # no library noise, no warnings
    assert "You can now commit" not in stdout and "WARNING" not in stdout


def test_the_key_figures_are_the_stage_outputs(micro_workspace):
    stages = {m[2]: m for m in _stage_lines((micro_workspace.parent / "run.stdout").read_text())}
    it = micro_workspace / "data" / "iterations" / "0001"
    samples = pl.read_parquet(it / "samples.parquet")
    scored = pl.read_parquet(it / "scored.parquet")
    assert stages["generate@0001"][4] == f"samples {samples.height}"
    assert stages["score@0001"][4] == f"correct {scored['correct'].sum()}/{scored.height}"
    assert stages["select@0001"][4] == f"selected {pl.read_parquet(it / 'selected.parquet').height}"
    assert stages["evaluate@0001"][4] == f"pass@1 {json.loads((it / 'eval.json').read_text())['pass@1']:.3f}"
    assert re.fullmatch(r"loss \d+\.\d{4}, 2 steps", stages["train@0001"][4])
    cost = json.loads((micro_workspace / "records" / "0001.json").read_text())["cost"]["stages"]
    for name in ITERATION_STAGES:  # the printed wall time is the one the cost report records
        assert float(stages[f"{name}@0001"][3]) == pytest.approx(cost[name]["wall_s"], abs=0.051)


def test_third_party_output_and_logs_go_to_the_run_log(micro_workspace):
    logs = sorted((micro_workspace / ".flywheel" / "logs").glob("*-run-*.log"))
    assert len(logs) == 1
    text = logs[0].read_text()
    assert "You can now commit the changes to git" in text  # DVC's, from creating the workspace
    assert "Beginning flow run" in text  # Prefect's engine
    assert "generate@0001 finished in" in text  # the stage events themselves


def test_plain_lines_and_a_live_line_render_the_same_events():
    events = [{"event": "iteration-start", "iteration": "0001", "index": 1, "count": 2},
              {"event": "stage-start", "stage": "generate", "iteration": "0001", "index": 1, "total": 8},
              {"event": "stage-end", "stage": "generate", "iteration": "0001", "index": 1, "total": 8,
               "wall_s": 10.64, "figure": "samples 32", "skipped": False}]
    want = "iteration 1/2   generate@0001      10.6 s  samples 32"
    for live in (False, True):
        out = io.StringIO()
        console = StageConsole(out, live=live)
        console.handle(logging.LogRecord("flows.progress", logging.INFO, __file__, 0, "no event", (), None))
        for e in events:
            record = logging.LogRecord("flows.progress", logging.INFO, __file__, 0, "x", (), None)
            record.flywheel_event = e
            console.handle(record)
        console.stop()
        text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue())
        finished = [ln.strip("\r") for ln in text.splitlines() if "generate@0001" in ln and " s  " in ln]
        assert finished == [("✓ " if live else "") + want], text
    assert stage_line({**events[2], "stage": "warmup", "iteration": "0000"}, "bootstrap").split()[:2] == \
        ["bootstrap", "warmup"]


def test_child_processes_write_into_the_log_not_the_console(tmp_path):
    log = tmp_path / "run.log"
    code = "import sys; print('child out'); print('child err', file=sys.stderr)"
    with _fds_to(log) as console:
        subprocess.run([sys.executable, "-c", code], check=True)
        os.write(2, b"parent fd 2\n")
        console.write("console line\n")
    text = log.read_text()
    assert "child out" in text and "child err" in text and "parent fd 2" in text
    assert "console line" not in text


@pytest.mark.slow
def test_a_terminal_shows_one_summary_line_per_stage(tmp_path):
    """A real pseudo-terminal, with a stage process per stage (the shipped default)."""
    import pty

    from tests.conftest import write_recipe

    recipe = write_recipe(tmp_path / "micro.yaml", {"numerics.isolate_stages": True})
    main, child = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "flywheel", "run", "-w", str(tmp_path / "ws"), "-c", str(recipe),
                             "-n", "1"], stdout=child, stderr=child, stdin=subprocess.DEVNULL,
                            env={**os.environ, "COLUMNS": "120"})
    os.close(child)
    chunks = []
    while True:
        try:
            data = os.read(main, 65536)
        except OSError:  # the terminal closed: the run is over
            break
        if not data:
            break
        chunks.append(data)
    assert proc.wait(timeout=900) == 0
    raw = b"".join(chunks).decode("utf-8", "replace")
    done = [ln for ln in re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", raw).replace("\r", "\n").splitlines()
            if ln.startswith("✓ ")]
    assert len(done) == len(BOOTSTRAP_STAGES) + len(ITERATION_STAGES)
    assert all(LINE.match(ln[2:]) for ln in done), done
    assert "flywheel iterations" in raw and "You can now commit" not in raw
    log = next((tmp_path / "ws" / ".flywheel" / "logs").glob("*-run-*.log")).read_text()
    assert "Beginning flow run" in log


@pytest.mark.parametrize("verbose", [False, True])
def test_verbose_shows_the_libraries_output_which_otherwise_goes_to_the_log(tmp_path, capfd, verbose):
    from flywheel.runlog import run_log
    from tasks.workspace.layout import Layout

    event = {"event": "stage-end", "stage": "select", "iteration": "0001", "index": 3, "total": 8, "wall_s": 1.25,
             "figure": "selected 7", "skipped": False}
    capfd.readouterr()
    with run_log(Layout(tmp_path), "run", verbose=verbose) as path:
        os.write(2, b"a library writes to fd 2\n")
        subprocess.run([sys.executable, "-c", "print('a stage process prints')"], check=True)
        logging.getLogger("tasks.stages.select").info("a detail for the log")
        logging.getLogger("flows.progress").info("select@0001 finished", extra={"flywheel_event": event})
    out, err = capfd.readouterr()
    text = path.read_text()
    line = stage_line(event, "bootstrap")
    assert line.split() == ["bootstrap", "select@0001", "1.2", "s", "selected", "7"]
    assert out.splitlines()[-1] == line
    assert "a detail for the log" in text and "select@0001 finished" in text
    noise = ("a library writes to fd 2", "a stage process prints")
    if verbose:
        assert all(n in out + err for n in noise) and not any(n in text for n in noise)
    else:
        assert all(n in text for n in noise) and not any(n in out + err for n in noise)
        assert out.splitlines() == [line]
