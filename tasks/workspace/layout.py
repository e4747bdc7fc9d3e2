"""Where everything lives inside a workspace. dvc.yaml uses the same paths (a test checks it)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from tasks.errors import WorkspaceError

ITERATION_ID = re.compile(r"^[0-9]{4}\Z")


def iteration_id(value: str | int) -> str:
    """Normalise 3, '3' or '0003' to '0003'; reject anything else (no path tricks)."""
    text = str(value)
    if text.isascii() and text.isdigit() and len(text) <= 4:
        return f"{int(text):04d}"
    raise WorkspaceError(f"invalid iteration id {text!r}.", field="iteration", fix="use a number such as 1 or 0001.")


def tag_for(it: str) -> str:
    return f"iter-{it}"


@dataclass(frozen=True)
class Layout:
    root: Path

    @property
    def recipe(self) -> Path:
        """The resolved recipe the workspace was initialised with (DVC params of bootstrap stages)."""
        return self.root / "flywheel.yaml"

    @property
    def iterations_vars(self) -> Path:
        """Per-iteration variables (parent, training init) that dvc.yaml's foreach expands."""
        return self.root / "iterations.yaml"

    @property
    def prompts(self) -> Path:
        return self.root / "data" / "prompts" / "prompts.parquet"

    @property
    def base_model(self) -> Path:
        return self.root / "models" / "base"

    @property
    def reward_model(self) -> Path:
        return self.root / "models" / "reward"

    @property
    def records(self) -> Path:
        return self.root / "records"

    @property
    def state_dir(self) -> Path:
        return self.root / ".flywheel"

    @property
    def lock(self) -> Path:
        return self.state_dir / "run.lock"

    def model(self, it: str) -> Path:
        return self.root / "models" / it

    def iter_dir(self, it: str) -> Path:
        if not (isinstance(it, str) and ITERATION_ID.fullmatch(it)):
            raise WorkspaceError(f"invalid iteration id {it!r}.", fix="use four digits, e.g. 0001.")
        return self.root / "data" / "iterations" / it

    def params(self, it: str) -> Path:
        return self.iter_dir(it) / "params.yaml"

    def calibration(self, it: str) -> Path:
        return self.iter_dir(it) / "calibration.parquet"

    def choice(self, it: str) -> Path:
        return self.iter_dir(it) / "choice.json"

    def samples(self, it: str) -> Path:
        return self.iter_dir(it) / "samples.parquet"

    def allocation(self, it: str) -> Path:
        """Samples per pool prompt and why (adaptive K; uniform when allocation is off)."""
        return self.iter_dir(it) / "allocation.parquet"

    def scored(self, it: str) -> Path:
        return self.iter_dir(it) / "scored.parquet"

    def judged(self, it: str) -> Path:
        return self.iter_dir(it) / "judged.parquet"

    def metrics(self, it: str) -> Path:
        return self.iter_dir(it) / "metrics.json"

    def gate(self, it: str) -> Path:
        return self.iter_dir(it) / "gate.json"

    def selected(self, it: str) -> Path:
        return self.iter_dir(it) / "selected.parquet"

    def probe(self, it: str) -> Path:
        """The probe samples and scores behind the calibration grid (empty when calibration is off)."""
        return self.iter_dir(it) / "probe.parquet"

    def threshold(self, it: str) -> Path:
        """The threshold select applied and where it came from (the probe, or the full-set re-sweep)."""
        return self.iter_dir(it) / "threshold.json"

    def calibration_full(self, it: str) -> Path:
        """The threshold sweep on the iteration's full scored set (empty unless calibrate.threshold_from full)."""
        return self.iter_dir(it) / "calibration_full.parquet"

    def eval(self, it: str) -> Path:
        return self.iter_dir(it) / "eval.json"

    def eval_samples(self, it: str) -> Path:
        return self.iter_dir(it) / "eval_samples.parquet"

    def promotion(self, it: str) -> Path:
        return self.iter_dir(it) / "promotion.json"

    def data_docs(self, it: str) -> Path:
        """Great Expectations Data Docs of the iteration's gate (derived, not versioned)."""
        return self.root / "reports" / "data_docs" / it

    def record(self, it: str) -> Path:
        return self.records / f"{it}.json"

    def rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def declares(self, path: Path) -> bool:
        """Whether the workspace's own dvc.yaml declares `path` as a stage output. Outputs added by a later
        release are written only where declared: a workspace keeps the dvc.yaml it was created with, and
        an undeclared file there would be picked up by its git commit instead of DVC."""
        return declared_out(self.root / "dvc.yaml", self.rel(path))


_VAR = re.compile(r"\\\$\\\{[^}]*\\\}")  # a ${...} variable, as re.escape writes it


def declared_out(dvc_yaml: Path, rel: str) -> bool:
    """`rel` matches an out of some stage in `dvc_yaml` (`${...}` variables match one path segment)."""
    import yaml

    if not dvc_yaml.is_file():
        return False
    stages = (yaml.safe_load(dvc_yaml.read_text(encoding="utf-8")) or {}).get("stages") or {}
    for stage in stages.values():
        body = (stage or {}).get("do", stage) or {}
        for out in body.get("outs") or ():
            name = next(iter(out)) if isinstance(out, dict) else str(out)
            if re.fullmatch(_VAR.sub(r"[^/]+", re.escape(name)), rel):
                return True
    return False
