"""A line-by-line port of the B-STaR reference code's choice of temperature and threshold.

The reference is hkust-nlp/B-STaR at a0f5d95eaba692327be71bb57716f621024af4ec: train_code/determine_hyper.py
chooses the temperature, train_code/metric_modiacc_auto.py the threshold. Every ported function names the
lines it follows. The port reads in-memory lists where the reference reads JSON-lines files, and it is
otherwise kept step for step (the set whose order decides the float sums included), so that whatever it
computes is what the reference computes. tests/unit/metrics/test_bstar_reference_port.py checks
calibrate.fidelity `reference` against it; bench/bstar_fidelity.py runs it on a workspace's samples.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

MARK = "\n\n# Answer\n\n"  # the reference's final-answer marker
NO_CAP = 10**9  # a target_size the deduplicated set never reaches: max_samples runs up to 64


# ================================================================ the port
def process_data(input_lines: list[dict], ref_lines: list[dict], rng: random.Random) -> list[dict]:
    """determine_hyper.py 15-54 (= metric_modiacc_auto.py 48-86). The two files are given as their parsed
    lines; the reference's unseeded `random.shuffle` (38) is `rng.shuffle` here, to show order does not
    matter where no cap binds."""
    infer_dict = {}  # 24-26: official response by prompt
    for line in ref_lines:
        infer_dict[line["prompt"]] = line["response"]
    data_json = [dict(line) for line in input_lines]  # 28-36: one record per line
    rng.shuffle(data_json)  # 38
    trn_data: dict = {}  # 40-48: samples grouped by idx, each with its prompt's official response
    for line in data_json:
        sample = {"output": line["output"], "reward": line["reward"], "response": infer_dict[line["prompt"]]}
        if line["idx"] in trn_data:
            trn_data[line["idx"]]["sample_list"].append(sample)
        else:
            trn_data[line["idx"]] = {"prompt": line["prompt"], "sample_list": [sample]}
    trn_list = []  # 50-52
    for key in trn_data:
        trn_list.append(trn_data[key])
    return trn_list


def get_unique_trn_json(max_samples: int, trn_data: list[dict], score_threshold: float) -> list[dict]:
    """metric_modiacc_auto.py 88-128 (= determine_hyper.py 56-96)."""
    trn_json = []
    final_answer = None  # not in the reference: there, a first query with no answered sample raises at 104
    for item in trn_data:  # 90
        solutions = []
        for sample in item["sample_list"]:  # 92
            if MARK in sample["output"]:  # 93: a sample without a final answer is no candidate
                final_answer = sample["output"].split(MARK)[-1]  # 94
                prm_score = min(sample["reward"])  # 95
                orm_score = 0.0  # 97-99: string match of the final answers
                if sample["output"].split(MARK)[-1] == sample["response"].split(MARK)[-1]:
                    orm_score = 1.0
                final_score = prm_score / 5.0 + orm_score  # 101
                solutions.append({"final_answer": final_answer, "prm_score": prm_score, "output": sample["output"],
                                  "score": final_score})  # 102
        # 104: the official response (of the loop's last sample) joins at score 1.0
        solutions.append({"final_answer": final_answer, "prm_score": 0.0, "output": sample["response"],
                          "score": 1.0})
        if len(solutions) == 0:  # 105-106 (never: the official response was just appended)
            continue
        solutions_sorted = sorted(solutions, key=lambda s: s["score"], reverse=True)  # 108: stable
        idx = 0  # 109
        temp_input = item["prompt"].split("\n\n# Solution\n\n")[0]  # 110-111: the query text
        temp_input = temp_input.split("# Question\n\n")[-1]
        for solu in solutions_sorted:  # 113-118: above the threshold, at most max_samples (copies count)
            if solu["score"] > score_threshold:
                trn_json.append({"query": temp_input, "output": solu["output"], "response": sample["response"],
                                 "reward": solu["prm_score"]})
                idx += 1
                if idx >= max_samples:
                    break
    unique_trn_json = []  # 120-128: drop repeated (query, output) pairs, the first stays
    seen = set()
    for item in trn_json:
        identifier = (item["query"], item["output"])
        if identifier not in seen:
            seen.add(identifier)
            unique_trn_json.append(item)
    return unique_trn_json


def cal_modi_acc_soft(data_json: list[dict]) -> float:
    """metric_modiacc_auto.py 10-46 (= determine_hyper.py 100-135). The per-query values are averaged in the
    iteration order of a set of query strings (11-17), so the float mean's last bits follow Python's string
    hashing (PYTHONHASHSEED), as in the reference."""
    unique_set = set()  # 11-13
    for item in data_json:
        unique_set.add(item["query"])
    unique_dict: dict = {}  # 14-17
    for query in unique_set:
        unique_dict[query] = []
    for item in data_json:  # 20-21
        unique_dict[item["query"]].append({"output": item["output"], "response": item["response"]})
    correct_num, actual_num, correct_ratio = [], [], []  # 23-26
    for query in unique_dict:  # 29-37
        temp_count = 0
        for output in unique_dict[query]:
            if output["output"].split(MARK)[-1] == output["response"].split(MARK)[-1]:
                temp_count = temp_count + 1
        correct_num.append(temp_count)
        actual_num.append(len(unique_dict[query]))
        correct_ratio.append(temp_count / len(unique_dict[query]))
    modi_acc_list = []  # 38-44: n* = 8
    for num, ratio in zip(correct_num, correct_ratio):
        if num >= 8:
            modi_acc_list.append(ratio)
        else:
            modi_acc_list.append((num * ratio) / 8)
    return np.mean(modi_acc_list)  # 46


def find_rewardbase(ana_list: list[dict], reward_base: float, target_size: int) -> tuple[float, list[dict]]:
    """determine_hyper.py 139-153 (= metric_modiacc_auto.py 376-400, whose other statistics (uniformity,
    diversity, entropy) do not take part in the choice and are left out). Returns the balance and the
    capped, deduplicated set it was computed on."""
    max_samples = 1  # 140-148: the cap grows until the set reaches target_size, 64 tries at most
    max_iterations = 64
    iteration = 0
    # not in the reference, a shortcut that changes no result: once max_samples covers every query's
    # candidates (its samples and the official response), every later try returns the same set
    longest = max(len(item["sample_list"]) + 1 for item in ana_list)
    while iteration < max_iterations:
        unique_trn_json = get_unique_trn_json(max_samples, ana_list, reward_base)
        if len(unique_trn_json) >= target_size:
            break
        if max_samples >= longest:
            break
        max_samples += 1
        iteration += 1
    modi_acc = cal_modi_acc_soft(unique_trn_json)  # 150
    return modi_acc, unique_trn_json  # 151 shuffles the set after use: no effect on the result


def find_strategy(ana_list: list[dict], target_size: int) -> tuple[float, float, list[tuple[float, float, list]]]:
    """determine_hyper.py 157-176 (the best balance, which chooses the temperature) and metric_modiacc_auto.py
    433, 453-477 (the same sweep, whose best_hyper is the threshold). Strict `>` keeps the first, lowest,
    threshold among ties. Returns (max_modi_acc, best_hyper, [(hyper_param, modi_acc, set)...])."""
    hyper_param = -1.0  # 162 / 433
    max_modi_acc = float("-inf")  # 164 / 455
    best_hyper = None
    cells = []
    while True:  # 166-174 / 457-477
        modi_acc, unique_trn_json = find_rewardbase(ana_list, hyper_param, target_size)
        cells.append((hyper_param, modi_acc, unique_trn_json))
        if modi_acc > max_modi_acc:
            max_modi_acc = modi_acc
            best_hyper = hyper_param
        hyper_param += 0.01
        if hyper_param > 1.0:
            break
    return max_modi_acc, best_hyper, cells


@dataclass
class PortChoice:
    temperature: float
    threshold: float
    balance: float
    # per temperature: [(threshold, modi_acc, n_unique, exact modi_acc), ...] in sweep order
    cells: dict[float, list[tuple[float, float, int, Fraction]]]


def determine_hyper(per_temperature: dict[float, tuple[list[dict], list[dict]]], target_size: int,
                    shuffle_seed: int = 0, exact: bool = True) -> PortChoice:
    """determine_hyper.py 179-189, 203-224: one sweep per temperature (the files of a temperature: its
    samples, its official responses), the temperatures in the order given (ascending here); the first
    temperature whose best balance equals the maximum (`list.index`, 223). The threshold is the sweep's
    best_hyper at that temperature (metric_modiacc_auto.py on the same samples). `exact` also records each
    cell's balance in exact rational arithmetic (not in the reference: the oracle that tells float
    near-ties apart)."""
    temps = list(per_temperature)
    effect_values, best_hypers, cells = [], [], {}
    for i, temp in enumerate(temps):  # 183-187
        input_lines, ref_lines = per_temperature[temp]
        ana_list = process_data(input_lines, ref_lines, random.Random(shuffle_seed * 1000 + i))
        max_modi_acc, best_hyper, swept = find_strategy(ana_list, target_size)
        effect_values.append(max_modi_acc)
        best_hypers.append(best_hyper)
        cells[temp] = [(thr, acc, len(unique), exact_modi_acc(unique) if exact else None)
                       for thr, acc, unique in swept]
    max_effect_index = effect_values.index(max(effect_values))  # 223
    return PortChoice(temps[max_effect_index], best_hypers[max_effect_index], effect_values[max_effect_index], cells)


def exact_modi_acc(unique_trn_json: list[dict]) -> Fraction:
    """cal_modi_acc_soft's value in exact arithmetic (an oracle, not a port): mean over queries of
    min(c/8, 1) * c/n."""
    per: dict[str, list[int]] = {}
    for item in unique_trn_json:
        c_n = per.setdefault(item["query"], [0, 0])
        c_n[0] += item["output"].split(MARK)[-1] == item["response"].split(MARK)[-1]
        c_n[1] += 1
    values = [min(Fraction(c, 8), Fraction(1)) * Fraction(c, n) for c, n in per.values()]
    return sum(values, Fraction(0)) / len(values)
