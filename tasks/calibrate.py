"""Stage `calibrate`: choose this iteration's sampling temperature and reward threshold.

With balancing off the choice is the recipe's fixed pair (STaR / online RFT behaviour).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from tasks.atomic import write_json
from tasks.config import Recipe
from tasks.schema import CALIBRATION, write_table



def fixed_choice(recipe: Recipe) -> tuple[pl.DataFrame, dict]:
    choice = {"temperature": recipe.generate.temperature, "threshold": recipe.select.threshold,
              "calibrated": False}
    grid = pl.DataFrame([{"temperature": choice["temperature"], "threshold": choice["threshold"],
                          "balance_score": None, "pass_at_k": None, "distinct_ratio": None, "n_selected": None,
                          "chosen": True}], schema=CALIBRATION.schema)
    return grid, choice


def calibrate(recipe: Recipe, out_table: Path, out_choice: Path) -> dict:
    grid, choice = fixed_choice(recipe)
    write_table(grid, out_table, CALIBRATION)
    write_json(out_choice, choice)
    return choice
