#!/usr/bin/env python3
"""Cross-machine bits check: train the embedded default's tiny model and print its checkpoint hash.

    python bench/portable_bits.py                 # portable CPU path: the hash must equal
                                                  #   docs/results/portable_bits.json on any x86-64 machine
    python bench/portable_bits.py --compare       # portable against native, side by side: hashes, wall
                                                  #   time and the portable/native time ratio
    python bench/portable_bits.py --path native   # the libraries' own kernels (machine-dependent bits)

Only torch, transformers and tokenizers are needed (no vLLM, Prefect, DVC or pydantic), so it runs on
any machine, a GPU machine's CPUs included. It builds the default recipe's tiny Llama (hidden 128, 4
layers, 4 heads of 32, 2 KV heads, intermediate 256, tied embeddings) with torch's seeded initialisation,
then trains it for `--steps` steps of AdamW on character-level arithmetic chains made by a fixed,
seeded generator, as the warm-up does, and hashes every weight's bytes. Each run is a fresh process
started with the CPU path's environment (tasks/numerics/portable.py), as a stage process is.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tasks.numerics import portable  # noqa: E402 - standard library only
from tasks.numerics.fingerprint import cpu  # noqa: E402

# The shipped default's model (configs/tiny-arith.yaml; tests/unit/bench checks they agree).
MODEL = dict(hidden_size=128, num_layers=4, num_heads=4, num_kv_heads=2, head_dim=32, intermediate_size=256,
             max_position_embeddings=256)
CHARS = [chr(c) for c in range(32, 127)] + ["\n"]
SPECIALS = ["<pad>", "<unk>", "<s>", "</s>"]


def examples(n: int, seed: int) -> list[str]:
    """Arithmetic chains in the default's target format, from a seeded pure-Python generator."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        value, chain = rng.randint(2, 9), []
        for _ in range(rng.randint(1, 4)):
            b = rng.randint(1, 9)
            op = "+" if rng.random() < 0.5 or value - b < 0 else "-"
            new = value + b if op == "+" else value - b
            chain.append(f"{value}{op}{b}={new}.")
            value = new
        out.append(f"Q{len(chain)}\nA: {' '.join(chain)} Answer: {value}")
    return out


def train(steps: int, batch: int, seed: int) -> dict:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    vocab = {t: i for i, t in enumerate(SPECIALS + CHARS)}
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=MODEL["hidden_size"],
                         intermediate_size=MODEL["intermediate_size"], num_hidden_layers=MODEL["num_layers"],
                         num_attention_heads=MODEL["num_heads"], num_key_value_heads=MODEL["num_kv_heads"],
                         head_dim=MODEL["head_dim"], max_position_embeddings=MODEL["max_position_embeddings"],
                         tie_word_embeddings=True, pad_token_id=0, bos_token_id=2, eos_token_id=3)
    model = LlamaForCausalLM(config)
    model.train()
    optim = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0, foreach=False)
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda s: 1.0 - s / max(steps, 1))
    texts = examples(steps * batch, seed)
    losses = []
    started = time.perf_counter()
    for step in range(steps):
        rows = [[vocab.get(c, 1) for c in t] + [3] for t in texts[step * batch:(step + 1) * batch]]
        width = max(map(len, rows))
        ids = torch.zeros((len(rows), width), dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, :len(r)] = torch.tensor(r)
            labels[i, :len(r)] = torch.tensor(r)
            mask[i, :len(r)] = 1
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        sched.step()
        optim.zero_grad(set_to_none=True)
        losses.append(loss.item())
    wall = time.perf_counter() - started
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().numpy().tobytes())
    return {"hash": digest.hexdigest(), "final_loss": round(losses[-1], 6), "train_s": round(wall, 2),
            "capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(),
            "torch": torch.__version__}


def child(path: str, steps: int, batch: int, seed: int, threads: int) -> dict:
    """One run in a fresh process started with `path`'s environment, as a stage process is."""
    env = portable.apply(portable.cpu_path_env(path), dict(os.environ))
    # threads sleep while they wait (as in a stage process): spinning ones crawl on a busy machine
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), OMP_WAIT_POLICY="PASSIVE")
    cmd = [sys.executable, __file__, "--inner", "--steps", str(steps), "--batch", str(batch), "--seed", str(seed)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return {"path": path, **json.loads(out.strip().splitlines()[-1])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--path", choices=[portable.PORTABLE, portable.NATIVE], default=portable.PORTABLE)
    ap.add_argument("--compare", action="store_true", help="portable and native side by side, --repeats each")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads (the bits depend on it: keep 2 "
                                                           "to compare with the committed hash)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inner:
        print(json.dumps(train(args.steps, args.batch, args.seed)))
        return
    paths = [portable.PORTABLE, portable.NATIVE] if args.compare else [args.path]
    runs = [child(p, args.steps, args.batch, args.seed, args.threads) for _ in range(args.repeats) for p in paths]
    machine = cpu()
    print(f"cpu: {machine['model']} ({machine['vendor']} {machine['family_model_stepping']}); "
          f"flags: {' '.join(machine['flags'])}")
    print(f"{'path':<9} {'capability':<10} {'threads':>7} {'train s':>8}  {'final loss':>10}  hash")
    for r in runs:
        print(f"{r['path']:<9} {r['capability']:<10} {r['threads']:>7} {r['train_s']:>8.2f}  {r['final_loss']:>10.6f}"
              f"  {r['hash']}")
    if args.compare:
        best = {p: min(r["train_s"] for r in runs if r["path"] == p) for p in paths}
        print(f"portable/native train time (best of {args.repeats}): {best['portable'] / best['native']:.3f}")
        print(f"portable hash {'equals' if len({r['hash'] for r in runs if r['path'] == 'portable'}) == 1 else 'VARIES ACROSS'}"
              f" its repeats; native {'equals' if runs[0]['hash'] == runs[1]['hash'] else 'differs from'} portable")
    if args.json:
        args.json.write_text(json.dumps({"cpu": machine, "steps": args.steps, "batch": args.batch, "seed": args.seed,
                                         "runs": runs}, indent=2) + "\n")


if __name__ == "__main__":
    main()
