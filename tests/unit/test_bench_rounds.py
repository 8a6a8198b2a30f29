"""The benchmark table's figures are medians of repeated rounds (bench/rounds.py)."""

from bench.common import Row
from bench.rounds import median_text, merge
from bench.run import table


def e2e(p99: str, met: bool, busy: str = "97 %") -> list[Row]:
    return [
        Row("e2e_latency", "floor p50 / p99 (ms)", "4.47 / 7.43"),
        Row("e2e_latency", "100/s: p50 / p99 (ms)", f"64.88 / {p99}", "p99 <= 100", met),
        Row("e2e_latency", "100/s: CPU s per 1,000 cancels; busy", f"notifier 1,539; {busy}"),
    ]


def test_each_number_becomes_the_median_of_its_place_written_as_it_was() -> None:
    assert median_text(["64.88 / 174.8 / 1,200", "70.10 / 96 / 980", "50 / 300.25 / 1,000"]) == (
        "64.88 / 174.8 / 1,000"
    )
    # Words with digits in them (p99, e2e) are not numbers; unchanged numbers keep their text.
    assert median_text(["p99 of e2e: 3 (1,000)", "p99 of e2e: 1 (1,000)"]) == (
        "p99 of e2e: 2 (1,000)"
    )
    assert median_text(["7 / 8", "8 / 8"]) == "7.5 / 8"  # an even number of rounds
    assert median_text(["1.5", "2.25"]) == "1.88"


def test_a_goal_is_met_when_most_rounds_met_it_and_the_table_says_how_many() -> None:
    rounds = [e2e("174.84", False), e2e("96.1", True), e2e("88.0", True)]
    merged = merge(rounds)
    assert [r.figure for r in merged] == [r.figure for r in rounds[0]]
    row = merged[1]
    assert (row.value, row.met, row.met_rounds) == ("64.88 / 96.1", True, "2/3")
    assert merged[0].met is None and merged[0].met_rounds == ""
    assert "| p99 <= 100 | yes (2/3) |" in table(merged, "")

    missed = merge([e2e("174.84", False), e2e("96.1", True), e2e("120", False)])[1]
    assert (missed.value, missed.met, missed.met_rounds) == ("64.88 / 120", False, "1/3")
    assert "**no** (1/3)" in table([missed], "")


def test_rows_whose_wording_differs_show_every_round_and_missing_rows_say_so() -> None:
    curve = "offered → accepted per step"
    rounds = [
        [Row("api_saturation", curve, "100→100, 200→200"), Row("api_saturation", "lost", "0")],
        [Row("api_saturation", curve, "100→100, 200→190, 400→210")],
        [Row("api_saturation", curve, "100→100, 200→200"), Row("api_saturation", "lost", "0")],
    ]
    steps, lost = merge(rounds)
    assert steps.value == (
        "round 1: 100→100, 200→200 | round 2: 100→100, 200→190, 400→210 | round 3: 100→100, 200→200"
    )
    assert lost.value == "0 (2 of 3 rounds)"

    rounds[0].pop(0)  # round 1 lost its curve row
    steps = merge(rounds)[0]
    assert steps.value.startswith("round 2: 100→100, 200→190, 400→210 | round 3: ")
    assert steps.value.endswith(" (2 of 3 rounds)")


def test_a_figure_whose_numbers_vary_is_matched_by_its_wording() -> None:
    rounds = [
        [Row("api_saturation", "2 x knee (1668/s): p99 accepted (ms)", "237", "<= 1000", True)],
        [Row("api_saturation", "2 x knee (1500/s): p99 accepted (ms)", "1210", "<= 1000", False)],
        [Row("api_saturation", "2 x knee (1600/s): p99 accepted (ms)", "190", "<= 1000", True)],
    ]
    (row,) = merge(rounds)
    assert (row.figure, row.value, row.met, row.met_rounds) == (
        "2 x knee (1600/s): p99 accepted (ms)",
        "237",
        True,
        "2/3",
    )


def test_one_round_is_the_table_unchanged() -> None:
    rows = e2e("174.84", False)
    assert merge([rows]) == rows
    assert "**no** |" in table(rows, "")
