"""bench/_common.py: the tables the benchmark scripts print."""

from bench._common import print_table


def test_wide_table_is_not_cut_when_piped(capsys):
    header = ["iteration"] + [f"B-STaR column {i}" for i in range(12)]
    print_table("wide", header, [[0] + [0.123456] * 12])
    out = capsys.readouterr().out
    assert all(h in out for h in header)
    assert out.count("0.123") == 12 and "…" not in out
