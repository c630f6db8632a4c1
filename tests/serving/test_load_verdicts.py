"""How bench/load.py judges issue 12's targets from several rounds: medians of figures taken within a
round, every round kept, and runs that measured nothing left out."""

from __future__ import annotations

from typing import Any

from bench.load import interleaved, median_rows, verdicts


def run(
    server: str, clients: int, repeat: int, rps: float, p50: float = 1.0, p99: float = 20.0
) -> dict[str, Any]:
    return {
        "server": server,
        "images_per_request": 1,
        "clients": clients,
        "repeat": repeat,
        "requests": int(rps),
        "requests_per_s": rps,
        "images_per_s": rps,
        "cpu_cores": 1.0,
        "cpu_ms_per_request": 0.5,
        "p50_ms": p50,
        "p95_ms": p99,
        "p99_ms": p99,
        "errors": 0,
        "idle_rss_mb": 100.0,
        "peak_rss_mb": 120.0,
    }


def test_rounds_alternate_their_order():
    assert interleaved(["a", "b", "c"], 3) == [
        (1, "a"), (1, "b"), (1, "c"),
        (2, "c"), (2, "b"), (2, "a"),
        (3, "a"), (3, "b"), (3, "c"),
    ]  # fmt: skip


def test_the_speedup_is_the_median_of_each_rounds_ratio():
    # Per round 2.0, 1.0, 1.5: median 1.5. The ratio of the medians (2,000 / 1,000) would claim 2.0.
    on = [2000.0, 1000.0, 3000.0]
    off = [1000.0, 1000.0, 2000.0]
    rows = [run("sagemaker on", 32, n + 1, rps) for n, rps in enumerate(on)]
    rows += [run("sagemaker off", 32, n + 1, rps) for n, rps in enumerate(off)]
    speedup = verdicts(rows)["sagemaker"]["speedup_at_32"]
    assert speedup["value"] == 1.5
    assert speedup["met"]
    assert speedup["rounds"] == [2.0, 1.0, 1.5]
    assert speedup["met_in_rounds"] == "2 of 3"


def test_p99_and_the_lone_request_are_judged_on_medians():
    rows = []
    for n, (p99, p50_on, p50_off) in enumerate([(24.0, 1.0, 1.0), (40.0, 1.5, 1.0), (26.0, 1.05, 1.0)]):
        rows += [run("vertex on", 32, n + 1, 2000, p99=p99), run("vertex off", 32, n + 1, 1000)]
        rows += [run("vertex on", 1, n + 1, 900, p50=p50_on), run("vertex off", 1, n + 1, 900, p50=p50_off)]
    judged = verdicts(rows)["vertex"]
    assert judged["p99_at_32_ms"]["value"] == 26.0
    assert not judged["p99_at_32_ms"]["met"]
    assert judged["p99_at_32_ms"]["met_in_rounds"] == "1 of 3"
    assert judged["lone_request"]["p50_on_ms"] == 1.05  # one slow round does not decide it
    assert judged["lone_request"]["met"]


def lone_request_rows(p50_on_ms: float, p50_off_ms: float) -> list[dict[str, Any]]:
    """One round at 32 clients (a flavor is judged only with those) and one at 1 client with these p50s."""
    return [
        run("sagemaker on", 32, 1, 2000),
        run("sagemaker off", 32, 1, 1000),
        run("sagemaker on", 1, 1, 900, p50=p50_on_ms),
        run("sagemaker off", 1, 1, 900, p50=p50_off_ms),
    ]


def test_a_lone_request_slower_with_batching_than_the_noise_allows_misses_its_target():
    # The allowance is 0.2 ms or 10 % of batching off's p50, whichever is larger.
    assert not verdicts(lone_request_rows(1.25, 1.0))["sagemaker"]["lone_request"]["met"]
    assert verdicts(lone_request_rows(1.15, 1.0))["sagemaker"]["lone_request"]["met"]
    # At 5 ms the 10 % (0.5 ms) is the allowance, not the 0.2 ms floor.
    assert verdicts(lone_request_rows(5.4, 5.0))["sagemaker"]["lone_request"]["met"]
    assert not verdicts(lone_request_rows(5.6, 5.0))["sagemaker"]["lone_request"]["met"]


def test_one_failed_request_in_any_run_fails_the_zero_errors_target():
    rows = lone_request_rows(1.0, 1.0)
    assert verdicts(rows)["zero_errors"] == {"errors": 0, "met": True}
    rows[2] = {**rows[2], "errors": 1}  # the lone client's run, with batching on
    assert verdicts(rows)["zero_errors"] == {"errors": 1, "met": False}


def test_a_round_that_measured_nothing_is_left_out():
    rows = [run("watsonx on", 32, 1, 3000), run("watsonx off", 32, 1, 1000)]
    rows += [run("watsonx on", 32, 2, 0), run("watsonx off", 32, 2, 1000)]  # no request completed
    speedup = verdicts(rows)["watsonx"]["speedup_at_32"]
    assert speedup["rounds"] == [3.0]
    assert speedup["met_in_rounds"] == "1 of 1"


def test_memory_is_judged_on_the_worst_round():
    rows = [run("watsonx on", 32, 1, 3000), run("watsonx off", 32, 1, 1000)]
    for n, peak in enumerate([120.0, 160.0, 130.0]):
        rows.append({**run("watsonx on", 128, n + 1, 3000), "peak_rss_mb": peak})
    memory = verdicts(rows)["watsonx"]["peak_rss_vs_idle"]
    assert memory["value"] == 1.6
    assert not memory["met"]


def test_watsonx_against_kserve_needs_both_the_ratio_and_a_lower_p99():
    rows = []
    for n, (ours, peer, p99_ours, p99_peer) in enumerate(
        [(3000, 1500, 20, 40), (3000, 1800, 22, 30), (2800, 1400, 21, 35)]
    ):
        rows += [
            run("watsonx on", 32, n + 1, ours, p99=p99_ours),
            run("kserve", 32, n + 1, peer, p99=p99_peer),
        ]
    against = verdicts(rows)["watsonx_vs_kserve_at_32"]
    assert against["throughput_ratio"] == 2.0
    assert against["p99_ms"] == {"watsonx": 21, "kserve": 35}
    assert against["met"]
    assert [r["throughput_ratio"] for r in against["rounds"]] == [2.0, 1.67, 2.0]


def test_the_table_gives_each_level_its_median_and_every_round():
    rows = [
        run("vertex on", 32, n + 1, rps, p99=p99)
        for n, (rps, p99) in enumerate([(1500, 30), (1100, 50), (1300, 33)])
    ]
    rows[1] = {**rows[1], "errors": 2, "peak_rss_mb": 140.0}
    (level,) = median_rows(rows)
    assert level["requests_per_s"] == 1300
    assert level["requests_per_s_rounds"] == [1500, 1100, 1300]
    assert level["p99_ms"] == 33
    assert level["errors"] == 2
    assert level["peak_rss_mb"] == 140.0


def test_the_ceiling_is_the_model_free_server_over_batching_off_in_each_round():
    rows = []
    rounds = [(1100.0, 1300.0, 1000.0), (1000.0, 1200.0, 1000.0), (900.0, 1260.0, 900.0)]
    for n, (on, free, off) in enumerate(rounds):
        rows += [run("watsonx on", 32, n + 1, on), run("watsonx off", 32, n + 1, off)]
        rows.append(run("watsonx model-free", 32, n + 1, free))
    judged = verdicts(rows)["watsonx"]
    assert judged["model_free_ceiling_at_32"]["rounds"] == [1.3, 1.2, 1.4]
    assert judged["model_free_ceiling_at_32"]["value"] == 1.3
    # A 1.5x speedup is above what removing the model call altogether gave.
    assert not judged["model_free_ceiling_at_32"]["speedup_target_below_ceiling"]
    assert not judged["speedup_at_32"]["met"]
    assert judged["speedup_at_32"]["rounds"] == [1.1, 1.0, 1.0]  # the ceiling's rows are not batching's


def test_without_a_model_free_server_there_is_no_ceiling():
    rows = [run("sagemaker on", 32, 1, 3000), run("sagemaker off", 32, 1, 1000)]
    assert verdicts(rows)["sagemaker"]["model_free_ceiling_at_32"] is None
