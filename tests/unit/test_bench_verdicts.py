"""bench/api.py reports the median of a scenario's runs, fails a row on an error in any, and
starts its cache-miss runs without cached answers."""

from __future__ import annotations

from pathlib import Path

import redis

from app.services.pages import TOTALS
from app.services.task_logs import DAY_ENTRIES
from app.services.tasks import LIST_IDS
from bench.api import Row, Scenario, WrkResult, forget_answers, median_run, verdicts
from tests.reliability.helpers import running_redis


def run(rps: float, p99_ms: float = 10.0, non_2xx: int = 0) -> WrkResult:
    return WrkResult(
        requests=int(rps * 10),
        rps=rps,
        p50_ms=1.0,
        p99_ms=p99_ms,
        non_2xx=non_2xx,
        socket_errors=0,
        statuses="",
    )


MISS = Scenario("(d)", "miss", "/", "token", ("task", "1", "9"))


def test_the_median_run_by_requests_per_second_is_reported() -> None:
    runs = [run(900, p99_ms=80), run(300, p99_ms=20), run(600, p99_ms=30)]
    assert median_run(runs).rps == 600
    assert median_run(runs[:2]).rps == 300  # the lower middle of an even number
    row = Row(MISS, median_run(runs), 0.0, runs)
    assert (row.rps_range, row.worst_p99_ms) == ("300-900", 80)


def test_a_row_passes_on_its_median_run_and_fails_on_an_error_in_any_run() -> None:
    runs = [run(250), run(400), run(500)]
    assert verdicts(Row(MISS, median_run(runs), 0.0, runs), ceiling_rps=1000)[3] is True
    assert verdicts(Row(MISS, median_run(runs), 0.0, runs), ceiling_rps=1400)[3] is False
    with_error = [run(250, non_2xx=1), run(400), run(500)]
    assert verdicts(Row(MISS, median_run(with_error), 0.0, with_error), 1000)[3] is False


def test_a_row_is_compared_with_the_ceiling_measured_next_to_it() -> None:
    """The host's speed drifts within minutes: a row's ratio uses the ceiling's runs made right
    before its own, and only a row without any falls back to the overall ceiling."""
    runs = [run(300), run(320), run(310)]
    next_to_it = [run(1200), run(1000), run(1100)]
    row = Row(MISS, median_run(runs), 0.0, runs, next_to_it)
    assert row.ceiling_rps(overall=900) == 1100
    assert verdicts(row, row.ceiling_rps(overall=900))[3] is False  # 310 < 0.3 x 1100
    alone = Row(MISS, median_run(runs), 0.0, runs)
    assert alone.ceiling_rps(overall=900) == 900
    assert verdicts(alone, alone.ceiling_rps(overall=900))[3] is True  # 310 >= 0.3 x 900


def test_a_cache_miss_row_whose_answers_were_mostly_hits_fails() -> None:
    """Random requests over a space too small for the machine repeat, and repeats are hits: such
    a row says nothing about misses, however fast it was."""
    mostly_hits = [run(900), run(900), run(900)]
    for result in mostly_hits:
        result.xcache = {"HIT": 60, "MISS": 40}
    row = Row(MISS, median_run(mostly_hits), 0.0, mostly_hits)
    ratio_cell, _, _, ok = verdicts(row, ceiling_rps=1000)
    assert (ratio_cell, ok) == ("HITS FAIL", False)
    mostly_misses = [run(900)]
    mostly_misses[0].xcache = {"HIT": 40, "MISS": 60}
    assert verdicts(Row(MISS, mostly_misses[0], 0.0, mostly_misses), ceiling_rps=1000)[3] is True


def test_between_runs_the_answers_go_and_what_lists_remember_stays(tmp_path: Path) -> None:
    """On a real redis-server: a cache-miss run starts with no cached answer, but with the
    counters, lists' totals and ids and days' entries a running service has
    (bench.api.forget_answers)."""
    with running_redis(tmp_path) as server:
        cache = redis.Redis.from_url(server.url)
        answers = [f"resp:{n:040x}:v1.2" for n in range(2500)]  # more than one batch
        kept = [
            f"resp:{TOTALS}:{'a' * 40}:v1.2",
            f"resp:{LIST_IDS}:{'c' * 40}:v1.2",
            f"resp:{DAY_ENTRIES}:{'b' * 40}:v1.3",
            "gen:global",
        ]
        for key in [*answers, *kept]:
            cache.set(key, b"x")

        assert forget_answers(cache) == len(answers)

        assert cache.exists(*answers) == 0
        assert cache.exists(*kept) == len(kept)
