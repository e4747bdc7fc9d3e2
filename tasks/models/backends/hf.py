"""Hugging Face `generate` backend: batched, seeded per batch, with a progress bar."""

from __future__ import annotations

import polars as pl

from tasks.models.backends.base import OUTPUT_SCHEMA, SamplingSpec, prefixes
from tasks.models.loading import load_causal_lm, load_tokenizer, render_prompts
from tasks.progress import progress_bar
from tasks.seeds import derive_seed


class HFBackend:
    name = "hf"

    def __init__(self, model_ref: str, batch_size: int = 64) -> None:
        self.tokenizer = load_tokenizer(model_ref)
        self.model = load_causal_lm(model_ref).eval()
        self.batch_size = batch_size

    def _batch(self, texts: list[str], spec: SamplingSpec, seed: int,
               prefix: list[str] | None = None) -> tuple[list[str], list[int], list[str]]:
        import torch

        tok = self.tokenizer
        rendered = render_prompts(tok, texts)
        if prefix:  # prefill: the model continues the assistant turn from the prefix
            rendered = [r + p for r, p in zip(rendered, prefix)]
        enc = tok(rendered, return_tensors="pt", padding=True,
                  add_special_tokens=False).to(self.model.device)
        torch.manual_seed(seed)
        sample = spec.temperature > 0
        with torch.inference_mode():
            out = self.model.generate(
                **enc, do_sample=sample, temperature=spec.temperature if sample else None,
                top_p=spec.top_p if sample else None, top_k=0 if sample else None,
                max_new_tokens=spec.max_new_tokens, num_return_sequences=spec.n,
                pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                stop_strings=list(spec.stop) or None, tokenizer=tok if spec.stop else None)
        new = out[:, enc["input_ids"].shape[1]:]
        is_eos = new == tok.eos_token_id
        has_eos = is_eos.any(dim=1)
        # tokens up to and including the first EOS; everything after it is padding
        n_tok = torch.where(has_eos, is_eos.int().argmax(dim=1) + 1, torch.full_like(has_eos, new.shape[1], dtype=torch.long))
        texts_out = tok.batch_decode(new, skip_special_tokens=True)
        if prefix:
            texts_out = [p + t for p, t in zip((p for p in prefix for _ in range(spec.n)), texts_out)]
        reasons = ["stop" if e else "length" for e in has_eos.tolist()]
        return texts_out, n_tok.tolist(), reasons

    def generate(self, prompts: pl.DataFrame, spec: SamplingSpec, desc: str = "generate") -> pl.DataFrame:
        if "n" in prompts.columns:  # adaptive K: the prompts' own sample counts
            return self._per_n(prompts, spec, desc)
        prompts = prompts.sort("prompt_id")
        ids, texts = prompts["prompt_id"].to_list(), prompts["text"].to_list()
        pre = prefixes(prompts) if "prefix" in prompts.columns else None
        cols: dict[str, list] = {k: [] for k in OUTPUT_SCHEMA}
        with progress_bar(desc, total=len(ids) * spec.n) as advance:
            for b, start in enumerate(range(0, len(ids), self.batch_size)):
                chunk_ids = ids[start:start + self.batch_size]
                seed = derive_seed(spec.seed, "hf-batch", desc, spec.first_batch + b)
                out_text, n_tok, reasons = self._batch(texts[start:start + self.batch_size], spec, seed,
                                                       pre[start:start + self.batch_size] if pre else None)
                cols["prompt_id"] += [p for p in chunk_ids for _ in range(spec.n)]
                cols["sample_idx"] += list(range(spec.n)) * len(chunk_ids)
                cols["text"] += out_text
                cols["n_tokens"] += n_tok
                cols["finish_reason"] += reasons
                cols["seed"] += [seed] * len(out_text)
                advance(len(out_text))
        return pl.DataFrame(cols, schema=OUTPUT_SCHEMA)

    def _per_n(self, prompts: pl.DataFrame, spec: SamplingSpec, desc: str) -> pl.DataFrame:
        """One request per sample count n, ascending, seeded by its own desc (`... n=8`), so a prompt's
        samples depend on the prompts sharing its n, never on the others. A batch holds as many sequences
        as the uniform request's (batch_size x spec.n), so memory stays where it was."""
        from dataclasses import replace

        size, parts = self.batch_size, []
        try:
            for n in sorted(prompts["n"].unique().drop_nulls().to_list()):
                if n < 1:
                    continue
                self.batch_size = max(1, size * spec.n // n)
                group = prompts.filter(pl.col("n") == n).drop("n")
                parts.append(self.generate(group, replace(spec, n=int(n)), desc=f"{desc} n={n}"))
        finally:
            self.batch_size = size
        return pl.concat(parts).sort("prompt_id", "sample_idx") if parts else pl.DataFrame(schema=OUTPUT_SCHEMA)

    closed = False

    def close(self) -> None:
        if not self.closed:  # idempotent, as the vLLM backend
            del self.model
            self.closed = True
