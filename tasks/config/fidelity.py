"""Which rules B-STaR's choice follows: this project's, the reference code's, or a legacy workspace's.

`calibrate.fidelity` names the rules; `reward.arithmetic` how the score is computed. Both are frozen
into a workspace at `flywheel init` (tasks/config/recipe.py `freeze_fidelity`), so a workspace recorded before they existed (both unset) keeps
the rules it was recorded with and still reproduces bit for bit (docs/decisions/0007).

The reference is hkust-nlp/B-STaR at a0f5d95 (train_code/determine_hyper.py and
train_code/metric_modiacc_auto.py); line numbers below are that commit's.
"""

from __future__ import annotations

from typing import Any, Literal

Fidelity = Literal["ours", "reference", "legacy"]
Arithmetic = Literal["float64", "reference", "float32"]


def _reference_grid() -> list[float]:
    """The thresholds the reference sweeps, with its float drift: `hyper_param = -1.0`, then
    `hyper_param += 0.01` until it exceeds 1.0 (metric_modiacc_auto.py 433, 474-477; determine_hyper.py
    162, 171-174). The drift ends the sweep at 0.9900000000000014: 1.0 itself is never tried."""
    out, h = [], -1.0
    while True:
        out.append(h)
        h += 0.01
        if h > 1.0:
            return out


REFERENCE_GRID: list[float] = _reference_grid()
# settings the reference code fixes: the mean over queries of the selected set (cal_modi_acc_soft,
# determine_hyper.py 100-135), the sweep on the whole sampled set at the chosen temperature
# (train_bstar.sh then metric_modiacc_auto.py), the official solution appended to every query's
# candidates with score 1.0 and kept in the training set (metric_modiacc_auto.py 104, 483-485), n* = 8
# (determine_hyper.py 129-133)
REFERENCE_FIXED: dict[str, Any] = {"average_over": "selected", "threshold_from": "full",
                                   "inject_reference": "train", "reference_score": 1.0, "n_star": 8,
                                   "thresholds": REFERENCE_GRID}
REFERENCE_WEIGHT = 0.2  # final_score = prm_score / 5.0 + orm_score (metric_modiacc_auto.py 101)


def fix_reference_settings(data: Any) -> Any:
    """A calibrate section with fidelity `reference`: the reference's fixed settings filled in, and a
    one-line error naming any the recipe sets to something else."""
    if not isinstance(data, dict) or data.get("fidelity") != "reference":
        return data
    for key, value in REFERENCE_FIXED.items():
        if key in data and data[key] != value:
            shown = "its grid" if key == "thresholds" else repr(value)
            raise ValueError(f"calibrate.fidelity 'reference' fixes {key} at {shown} (the B-STaR reference "
                             f"code's); remove calibrate.{key} or set calibrate.fidelity to 'ours'")
    return {**data, **{k: v for k, v in REFERENCE_FIXED.items() if k not in data}}


def tie_lowest(fidelity: Fidelity | None) -> bool:
    """Ties on the best balance score go to the lowest threshold under the reference's rules (its strict `>`
    in metric_modiacc_auto.py 460 and determine_hyper.py 168); to the highest under ours and legacy: a tie
    on the probe means the probe cannot tell the thresholds apart, and the pool's samples in the gap are
    the ones the higher threshold keeps out (docs/decisions/0007)."""
    return fidelity == "reference"
