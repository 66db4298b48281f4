"""benchmarks/target_rule.py: issue 14's rule (3 of 4 metrics, VIF among them) on a bench's means and PEERS.md."""

from __future__ import annotations

import json

import pytest

from .conftest import benchmark_module, shared_path

rule = benchmark_module("target_rule")


def scores(mi, vif, qabf, ssim):
    return {"MI": mi, "VIF": vif, "Qabf": qabf, "SSIM": ssim}


def test_three_wins_must_include_vif():
    a = scores(2.0, 0.6, 0.5, 1.4)
    assert rule.beats(a, scores(1.0, 0.5, 0.4, 1.5))  # MI, VIF, Qabf
    assert not rule.beats(a, scores(1.0, 0.7, 0.4, 1.3))  # three wins, but not VIF
    assert not rule.beats(a, scores(1.0, 0.5, 0.6, 1.5))  # VIF and one more only
    assert not rule.beats(a, a)  # a tie is not a win


def test_bench_means_average_over_the_images(tmp_path):
    config = {"methods": [{"label": "m"}], "datasets": {"S": "S"}, "metrics": ["MI", "VIF", "Qcb"]}
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "results.csv").write_text(
        "dataset,image,method,metric,value\n"
        "S,1,m,MI,1.0\nS,2,m,MI,2.0\nS,1,m,VIF,0.5\nS,2,m,VIF,nan\nS,1,m,Qcb,9\n"
    )
    means, counts = rule.bench_means(tmp_path)
    assert means["S"]["m"] == {"MI": 1.5, "VIF": 0.5}  # NaN left out, metrics outside the four ignored
    assert counts["S", "m"] == 2


def test_peers_tables_are_read_with_bold_marks_and_set_aliases(tmp_path):
    path = tmp_path / "PEERS.md"
    path.write_text(
        "# intro\n\n### LLVIP_test (2 pairs)\n\n| metric | A | B |\n|---|---:|---:|\n"
        "| MI | 1.5 | **2.5** |\n| VIF | **0.6** | 0.4 |\n| Qabf | 0.5 | 0.5 |\n| SSIM | 1.4 | 1.3 |\n\n## Speed\n| method | seconds |\n"
    )
    means = rule.peers_means(path)
    assert set(means) == {"LLVIP"}
    assert means["LLVIP"]["B"] == scores(2.5, 0.4, 0.5, 1.3)
    path.write_text("### S\n| metric | A |\n| MI | n/a |\n")
    with pytest.raises(rule.RuleError, match=r"S, A, MI: 'n/a' is not a number"):
        rule.peers_means(path)


def test_report_names_what_blocks_each_method(tmp_path):
    merged = rule.merge(
        {"S": {"net": scores(1.0, 0.6, 0.5, 1.4), "avg": scores(1.2, 0.3, 0.3, 1.5)}},
        {"S": {"pub": scores(0.9, 0.5, 0.4, 1.3), "net": scores(0, 0, 0, 0)}},  # the bench's own scores win
        drop=set(),
    )
    text = rule.report(merged, None, {("S", "net"): 12, ("S", "avg"): 12})
    assert "| net | 12 | 1 of 2 | avg (MI, SSIM) |" in text
    assert "| pub | published | 0 of 2 |" in text
    assert "Methods that meet the rule on S: none." in text


def test_missing_bench_folder_is_one_line(tmp_path, capsys):
    assert rule.main([str(tmp_path / "nowhere")]) == 2
    assert "results.csv: not found" in capsys.readouterr().err


def test_the_shared_peers_tables():
    """../shared/PEERS.md: the three val sets and DIDFuse's published TNO21 VIF (0.538)."""
    means = rule.peers_means(shared_path("PEERS.md"))
    assert set(means) == {"TNO21", "RoadScene50", "LLVIP"}
    assert means["TNO21"]["DIDFuse"]["VIF"] == pytest.approx(0.538)
    assert "LRRNet" not in means["LLVIP"] and len(means["TNO21"]) == 7
