"""Load a machine the way a shared box is loaded while a nightly run goes: other processes start
vLLM CPU engines and sample, run torch training steps, and write files heavily.

`python -m tests.support.machine_load MODEL_DIR SCRATCH SECONDS` runs all three for at most SECONDS
and then stops by itself.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import time
from pathlib import Path


def _engines(model: str, until: float) -> None:
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    try:
        from vllm import LLM, SamplingParams
    except Exception:  # noqa: BLE001 - without vLLM the other two loads still run
        return
    while time.monotonic() < until:
        llm = LLM(model=model, dtype="float32", max_model_len=256, enforce_eager=True, enable_chunked_prefill=False)
        llm.generate(["1+2="] * 64, SamplingParams(n=4, temperature=1.0, max_tokens=48, seed=1), use_tqdm=False)
        del llm


def _training(model: str, until: float) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    net = AutoModelForCausalLM.from_pretrained(model)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    while time.monotonic() < until:
        ids = torch.randint(4, 90, (32, 64))
        net(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()


def _file_io(scratch: Path, until: float) -> None:
    block = os.urandom(1 << 20)
    path = scratch / "io-load.bin"
    while time.monotonic() < until:
        with open(path, "wb") as f:
            for _ in range(128):
                f.write(block)
            f.flush()
            os.fsync(f.fileno())
        path.read_bytes()
    path.unlink(missing_ok=True)


def main(model: str, scratch: str, seconds: float) -> None:
    until = time.monotonic() + seconds
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_engines, args=(model, until)), ctx.Process(target=_training, args=(model, until)),
             ctx.Process(target=_file_io, args=(Path(scratch), until))]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=max(1.0, until - time.monotonic() + 60))
        if p.is_alive():
            p.kill()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]))
