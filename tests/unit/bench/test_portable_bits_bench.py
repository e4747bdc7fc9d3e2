"""bench/portable_bits.py: it trains the shipped default's model, and this machine gives the committed hash."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml

from tests.conftest import ROOT

BENCH = ROOT / "bench" / "portable_bits.py"
COMMITTED = ROOT / "docs" / "results" / "portable_bits.json"


def test_the_bench_builds_the_shipped_default_model():
    sys.path.insert(0, str(ROOT / "bench"))
    import portable_bits

    from tasks.config.recipe import TinyLlamaInit

    shipped = yaml.safe_load((ROOT / "configs" / "tiny-arith.yaml").read_text())["model"]["init"]
    model = {**TinyLlamaInit().model_dump(exclude={"type"}), **{k: v for k, v in shipped.items() if k != "type"}}
    assert portable_bits.MODEL == model


def test_this_machine_gives_the_committed_portable_hash():
    """The cross-machine guarantee, checked wherever the suite runs: the portable path's checkpoint
    hash is the one committed from the machine named in the file."""
    committed = json.loads(COMMITTED.read_text())
    run = committed["runs"][0]
    assert run["path"] == "portable" and run["capability"] == "AVX2"
    out = subprocess.run([sys.executable, str(BENCH), "--steps", str(committed["steps"]), "--batch",
                          str(committed["batch"]), "--seed", str(committed["seed"]), "--threads", str(run["threads"])],
                         capture_output=True, text=True, check=True, cwd=ROOT)
    assert run["hash"] in out.stdout, (f"this machine's portable hash differs from the one committed on "
                                       f"{committed['cpu']['model']}:\n{out.stdout}")
