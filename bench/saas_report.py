"""saas_shape's figures: delivery per screen and per cancel, the plot, the JSON and the rows."""

from __future__ import annotations

from typing import Any

from bench.common import Row, cdf, figure, now_iso, percentiles, save_figure, write_result

ROOMS = ("POLI-UMUM", "POLI-GIGI")
SCREENS = 5  # per clinic; screen j watches room j % 2 (3 screens on the first room, 2 on the other)
ZIPF_S = 1.1
FLOOR_RATE = 2


def figures(p: dict[str, Any], arrivals: dict[str, dict[int, list[float]]]) -> dict[str, Any]:
    """Delivery to each subscribed screen (every pair) and to all of a cancel's screens."""
    pairs: list[float] = []
    every: list[float] = []
    wrong = complete = 0
    for qid, t in p["_sent"].items():
        times = arrivals["queue.cancelled"].get(qid, [])
        want = p["_expected"].get(qid, 0)
        pairs.extend(x - t for x in times)
        wrong += max(0, len(times) - want)
        if want and len(times) >= want:
            complete += 1
            every.append(max(times) - t)
    ws = [min(arrivals["bpjs.synced"][q]) - p["_sent"][q]
          for q in p["_bpjs"] if q in arrivals["bpjs.synced"]]  # fmt: skip
    db = [t - p["_wall"][q] for q, t in p["_synced_at"].items()]
    return {
        "to_each_screen_ms": percentiles(pairs),
        "to_every_screen_ms": percentiles(every),
        "cancels_reaching_every_screen": complete,
        "cancels_accepted": len(p["_expected"]),
        "deliveries_expected": sum(p["_expected"].values()),
        "deliveries_received": len(pairs),
        "deliveries_to_unsubscribed_screens": wrong,
        "http_ms": percentiles(p["_http"]),
        "bpjs_synced_ws_ms": percentiles(ws),
        "bpjs_synced_db_ms": percentiles(db),
        "bpjs_synced_count": f"{len(db)}/{len(p['_bpjs'])}",
        "_every": every,
    }


def report(
    quick: bool,
    phases: list[dict[str, Any]],
    usage: dict[str, Any],
    got: dict[str, Any],
    connected: int,
    sessions: int,
    clinics: int,
    seconds: float,
    started: str,
) -> list[Row]:
    floor, rated = phases[0], phases[1:]
    floor_p50 = floor["to_every_screen_ms"].get("p50") or 0.0
    fig, (a1, a2) = figure(quick, "saas_shape", title=f"saas_shape ({clinics} clinics, "
                           f"{connected} screens, Zipf s={ZIPF_S})")  # fmt: skip
    for p in phases:
        cdf(a1, [x * 1000 for x in p["_every"]], f"{p['rate']}/s")
    a1.axvline(100, color="r", ls=":", label="100 ms")
    a1.set_xscale("log")
    a1.set_xlabel("ms, cancel sent to all of its subscribed screens")
    a1.legend(fontsize=8)
    procs = sorted({k for p in rated for k in p["cpu_s_per_1000_cancels"]})
    for k in procs:
        a2.plot([p["rate"] for p in rated], [p["cpu_s_per_1000_cancels"][k] for p in rated],
                marker="o", label=k)  # fmt: skip
    a2.set_xlabel("cancels/s")
    a2.set_ylabel("CPU s per 1,000 cancels")
    a2.grid(True, alpha=0.3)
    a2.legend(fontsize=7)
    save_figure(fig, quick, "saas_shape")
    for p in phases:
        for k in [k for k in p if k.startswith("_")]:
            p.pop(k)
    write_result(
        "saas_shape",
        quick,
        {
            "inputs": {
                "clinics": clinics,
                "rooms_per_clinic": len(ROOMS),
                "screens_per_clinic": SCREENS,
                "sessions": sessions,
                "connected": connected,
                "zipf_s": ZIPF_S,
                "bpjs_share": 0.2,
                "seconds_per_rate": seconds,
                "floor_rate": FLOOR_RATE,
            },
            "started": started,
            "finished": now_iso(),
            "phases": phases,
            "services": usage,
            "ws_clients": {
                k: got[k] for k in ("connected", "failed", "duplicates", "closed_by_server")
            },
        },
    )
    b, f = "saas_shape", floor["to_every_screen_ms"]
    rows = [Row(b, f"floor ({FLOOR_RATE}/s, {connected} screens): to every subscribed screen "
                "p50 / p99 (ms)", f"{f.get('p50')} / {f.get('p99')}")]  # fmt: skip
    for p in rated:
        e, each, h, s = (
            p["to_every_screen_ms"],
            p["to_each_screen_ms"],
            p["http_ms"],
            p["bpjs_synced_ws_ms"],
        )
        done = p["cancels_reaching_every_screen"] == p["cancels_accepted"]
        target, ok = "", None
        if p["rate"] == 50:
            limit = min(100.0, 10 * floor_p50)
            target = f"p99 <= {limit:g} (100, 10 x floor p50)"
            ok = e.get("p99") is not None and e["p99"] <= limit and done
        rows.append(
            Row(
                b,
                f"{p['rate']}/s: to each screen p50 / p99; to every screen p50 / p99 (ms)",
                f"{each.get('p50')} / {each.get('p99')}; {e.get('p50')} / {e.get('p99')}",
                target,
                ok,
            )
        )
        kinds = ", ".join(f"{k}: {v}" for k, v in p["statuses"].items() if k != 200)
        reasons = ", ".join(f"{k} {v}" for k, v in p.get("refused_by_reason", {}).items())
        at = p.get("refused_sent_at_s") or []
        if reasons:  # why the API refused, and over which seconds of the phase
            kinds += f"; {reasons}, sent {at[0]} to {at[-1]} s" if at else f"; {reasons}"
        rows.append(Row(b, f"{p['rate']}/s: HTTP p99 (ms); errors (non-200); accepted cancels that "
                        "reached every screen; machine busy",
                        f"{h.get('p99')}; {p['errors']}{f' ({kinds})' if kinds else ''}; "
                        f"{p['cancels_reaching_every_screen']}/"
                        f"{p['cancels_accepted']}; {round(100 * p['machine_cpu_busy_share'])} %",
                        "no errors" if p["rate"] == 200 else "",
                        (p["errors"] == 0 and done) if p["rate"] == 200 else None))  # fmt: skip
        rows.append(Row(b, f"{p['rate']}/s: to bpjs.synced p50 / p99 (ms)",
                        f"{s.get('p50')} / {s.get('p99')} ({p['bpjs_synced_count']})"))  # fmt: skip
        cpu = p["cpu_s_per_1000_cancels"]
        rows.append(
            Row(
                b,
                f"{p['rate']}/s: CPU s per 1,000 cancels",
                # One order in every run, so that rounds can be merged place by place.
                ", ".join(f"{k} {v}" for k, v in cpu.items()),
            )
        )
    return rows
