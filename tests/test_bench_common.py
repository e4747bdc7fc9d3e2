"""bench/_common.py: the tables the benchmark scripts print."""

from bench._common import print_table


def test_wide_table_is_not_cut_when_piped(capsys):
    header = ["iteration"] + [f"B-STaR column {i}" for i in range(12)]
    print_table("wide", header, [[0] + [0.123456] * 12])
    out = capsys.readouterr().out
    assert all(h in out for h in header)
    assert out.count("0.123") == 12 and "…" not in out


def _arm(root, recipe):
    from bench._common import SHARED
    from tasks.config.loading import write_recipe

    for rel in (*SHARED, "models/reward"):
        (root / rel).mkdir(parents=True)
        (root / rel / "marker").write_text(rel)
    write_recipe(recipe, root / "flywheel.yaml")


def test_iteration_zero_is_copied_only_from_an_arm_with_the_same_bootstrap(tmp_path):
    import pytest

    from bench._common import SHARED, copy_iteration_zero
    from tasks.config.loading import load_recipe
    from tasks.workspace.layout import Layout
    from tests.conftest import ROOT

    recipe = load_recipe(ROOT / "configs" / "tiny-arith.yaml")
    _arm(tmp_path / "source", recipe)
    same = Layout(tmp_path / "same")
    assert copy_iteration_zero(same, recipe, tmp_path / "source") is True
    assert all((same.root / rel / "marker").read_text() == rel for rel in (*SHARED, "models/reward"))

    other_verifier = recipe.model_copy(update={"reward": recipe.reward.model_copy(update={"source": "none"})})
    rebuilt = Layout(tmp_path / "rebuilt")
    assert copy_iteration_zero(rebuilt, other_verifier, tmp_path / "source") is False
    assert (rebuilt.root / "models/0000/marker").is_file() and not rebuilt.reward_model.exists()

    other_seed = recipe.model_copy(update={"run": recipe.run.model_copy(update={"seed": 7})})
    with pytest.raises(SystemExit, match=r"other \['run.seed'\] settings"):
        copy_iteration_zero(Layout(tmp_path / "refused"), other_seed, tmp_path / "source")
    assert not (tmp_path / "refused").exists()  # refused before anything is copied
