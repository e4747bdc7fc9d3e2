"""The machine fingerprint in the run record, and the one-line verdict `reproduce` gives before compute."""

from __future__ import annotations

import copy

from tasks.audit.reproduce import check_numerics
from tasks.config.recipe import NumericsConfig
from tasks.numerics.fingerprint import bits_can_match, fingerprint
from tasks.numerics.state import record

INTEL = {"arch": "x86_64", "vendor": "GenuineIntel", "model": "Intel(R) Xeon(R) Platinum 8375C",
         "family_model_stepping": "6/106/6", "flags": ["avx", "avx2", "avx512f", "fma"]}
OLD_ARM = {"arch": "aarch64", "vendor": "ARM", "model": "Neoverse-N1", "family_model_stepping": "?/?/?", "flags": []}


def _with_cpu(rec: dict, cpu: dict) -> dict:
    out = copy.deepcopy(rec)
    out["machine"]["cpu"] = cpu
    return out


def test_the_record_names_the_cpu_the_libraries_and_the_path():
    fp = fingerprint()
    assert fp["cpu"]["vendor"] and fp["cpu"]["model"] and "avx2" in fp["cpu"]["flags"]
    assert fp["libraries"]["mkl"] and fp["libraries"]["onednn"].startswith("v") and fp["gpu"] is None
    rec = record(NumericsConfig(cpu_path="portable"))
    assert rec["cpu_path"] == "portable" and rec["cpu_capability"] == "AVX2"
    assert rec["machine"]["libraries"]["mkl_cbwr"] == "AVX2,STRICT"
    native = record(NumericsConfig(cpu_path="native"))
    assert native["machine"]["libraries"]["mkl_cbwr"] == "auto" and native["cpu_capability"] != ""


def test_portable_bits_can_match_on_another_cpu_family():
    here = record(NumericsConfig(cpu_path="portable"))
    ok, reason = bits_can_match(_with_cpu(here, INTEL), here)
    assert ok and "Xeon" in reason and "portable" in reason


def test_portable_bits_cannot_match_without_avx2_or_off_x86():
    rec = record(NumericsConfig(cpu_path="portable"))
    ok, reason = bits_can_match(rec, _with_cpu(rec, {**INTEL, "flags": ["avx"]}))
    assert not ok and "avx2" in reason
    ok, reason = bits_can_match(rec, _with_cpu(rec, OLD_ARM))
    assert not ok and "aarch64" in reason


def test_native_bits_need_the_same_kind_of_cpu():
    here = record(NumericsConfig(cpu_path="native"))
    assert bits_can_match(here, here)[0]
    ok, reason = bits_can_match(_with_cpu(here, INTEL), here)
    assert not ok and "not Intel(R) Xeon" in reason


def test_a_gpu_run_needs_the_same_gpu_and_software():
    rec = record(NumericsConfig(cpu_path="portable"))
    gpu = {"name": "NVIDIA H100", "driver": "550.1", "cuda": "12.8", "cudnn": 90100, "nccl": "2.21.5", "count": 1}
    on_gpu = copy.deepcopy(rec)
    on_gpu["machine"]["gpu"] = gpu
    ok, reason = bits_can_match(on_gpu, rec)
    assert not ok and "H100" in reason and "no GPU" in reason
    other = copy.deepcopy(on_gpu)
    other["machine"]["gpu"] = {**gpu, "driver": "560.0"}
    assert not bits_can_match(on_gpu, other)[0] and bits_can_match(on_gpu, copy.deepcopy(on_gpu))[0]


def test_a_record_from_before_the_portable_path_is_named_as_such_before_any_compute():
    """Old records keep only ATen's capability: the same one is tried with a one-line warning, another
    refused (tests/test_previous_release.py runs such a record end to end)."""
    import pytest

    from tasks.audit.reproduce import VersionDriftError

    here = record(NumericsConfig(cpu_path="native"))
    old = {k: here[k] for k in ("threads", "interop_threads", "deterministic", "flush_denormal", "matmul_precision",
                                "cores", "cpu_capability", "mkldnn")}
    notes = check_numerics({"numerics": old}, allow_drift=False)
    line = [n for n in notes if n.startswith("bits may not match")]
    assert len(line) == 1 and "recorded before the portable CPU path" in line[0] and "\n" not in line[0]
    with pytest.raises(VersionDriftError, match="cpu_capability"):
        check_numerics({"numerics": {**old, "cpu_capability": "AVX512_AMX"}}, allow_drift=False)


def test_a_portable_record_from_another_cpu_says_the_bits_can_match():
    here = record(NumericsConfig(cpu_path="portable"))
    notes = check_numerics({"numerics": _with_cpu(here, INTEL)}, allow_drift=False)
    assert any(n.startswith("bits can match") and "Xeon" in n for n in notes)
