"""Resumable training: Trainer checkpoints in a scratch folder that survives a crash.

The folder is keyed by everything that determines the run (init model, examples, config, seed);
a checkpoint left by a different run is discarded rather than resumed. After the final model is
saved the folder is deleted, so it never reaches DVC.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

from tasks.workspace.atomic import write_text

KEY_FILE = "run-key"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def default_checkpoint_dir(out_dir: Path) -> Path:
    """Beside the output, hidden; crash recovery only removes `.tmp-`/`.old-` leftovers, not this."""
    return out_dir.with_name(f".{out_dir.name}.resume")


def run_key(init_fingerprint: str, examples: list[dict[str, list[int]]], cfg_json: str, seed: int) -> str:
    digest = hashlib.sha256()
    for part in (init_fingerprint, cfg_json, str(seed), json.dumps(examples, separators=(",", ":"))):
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()


def latest_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint: the Trainer writes trainer_state.json last."""
    done = [p for p in folder.glob("checkpoint-*")
            if _CHECKPOINT.match(p.name) and (p / "trainer_state.json").is_file()]
    return max(done, key=lambda p: int(_CHECKPOINT.match(p.name).group(1))) if done else None


def prepare(folder: Path, key: str) -> Path | None:
    """Make `folder` this run's checkpoint folder; return the checkpoint to resume from, if any."""
    key_file = folder / KEY_FILE
    if folder.exists() and (not key_file.is_file() or key_file.read_text() != key):
        shutil.rmtree(folder)  # another run's checkpoints: resuming them would train the wrong thing
    folder.mkdir(parents=True, exist_ok=True)
    write_text(key_file, key)
    return latest_checkpoint(folder)


def clear(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


def start_point(folder: Path, key: str, args) -> Path | None:
    """The checkpoint a training run resumes from: the main process first clears checkpoints of a
    different run (`key`), every process then waits and reads the latest one left (None: start fresh)."""
    if args.process_index == 0:
        prepare(folder, key)
    args.distributed_state.wait_for_everyone()
    return latest_checkpoint(folder)
