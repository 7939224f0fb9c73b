"""The side-by-side bench's printed table (bench.side_by_side). Pure formatting."""

from __future__ import annotations

import argparse
import math


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(share * len(ordered)) - 1))]


def number(value: float, digits: int = 1) -> str:
    return "-" if value != value else f"{value:.{digits}f}"


# Each mode's icall beside its lean yardstick.
PAIRS = (("icall", "baseline"), ("icall-out", "baseline-out"))

HEADER = (f"{'controller':<12} {'load':>8} {'placed':>6} {'skip':>4} {'right':>5} {'wrong':>5} {'unfin':>5} "
          f"{'peak':>5} {'react p50/p90/p99/max ms':>25} {'takeover p50/p99':>16} "
          f"{'CPU% ctl':>8} {'sw':>5} {'drv':>5} {'ms/call':>7} {'RSS idle/peak MB':>16} "
          f"{'KiB/call':>8} {'others%':>7}")


def row(r: dict) -> str:
    react, take = r["reaction_ms"], r["takeover_ms"]
    reaction = "/".join(number(percentile(react, p)) for p in (0.5, 0.9, 0.99, 1.0))
    takeover = "/".join(number(percentile(take, p)) for p in (0.5, 0.99))
    cpu = r["cpu"]
    load = f"{r['calls']}/{r['cps']:g}"
    rss = f"{number(r['rss_idle_mb'])}/{number(r['rss_peak_mb'])}"
    return (f"{r['controller']:<12} {load:>8} {r['placed']:>6} {r['skipped']:>4} {r['right']:>5} {r['wrong']:>5} "
            f"{r['unfinished']:>5} {r['peak_live']:>5} {reaction:>25} {takeover:>16} "
            f"{number(cpu['controller']['percent']):>8} {number(cpu['switch']['percent']):>5} "
            f"{number(cpu['callers']['percent']):>5} {number(r['cpu_ms_per_call'], 2):>7} "
            f"{rss:>16} {number(r['rss_kib_per_call']):>8} {number(r['others_percent']):>7}")


def ratio(a: float, b: float) -> str:
    return "-" if not b or a != a or b != b else f"{a / b:.1f}x"


def print_table(results: list[dict], args: argparse.Namespace) -> None:
    if getattr(args, "switch", None):
        print(f"\nreal FreeSWITCH at {args.switch.host}:{args.switch.port} (sw = its CPU, from "
              f"{args.switch_pid_file}); callers hang up {args.talk_s:g} s into an answered bridge;")
    else:
        print(f"\nstand-in time scale {args.time_scale:g} (sw = its CPU); 801 talks "
              f"{args.talk_s:g} s, 802 rings {args.ring_s:g} s;")
    print(f"{args.duration:g} s of offering per run; CPU over first call "
          "placed -> last call ended, % of one core; others% = the rest of the machine "
          "(processes not in this bench) over the same time")
    print("react = EXECUTE_COMPLETE of an awaited app -> next EXECUTE on the leg; takeover = "
          "CHANNEL_PARK -> first EXECUTE (switch clock)")
    print("skip = offers not made because --calls calls were up\n")
    print(HEADER)
    for r in results:
        print(row(r))
    loads = sorted({(r["calls"], r["cps"]) for r in results})
    for calls, cps in loads:
        rounds = sorted({r.get("round", 0) for r in results})
        cpu_ratios = []
        for n in rounds:
            pair = {r["controller"]: r for r in results
                    if (r["calls"], r["cps"], r.get("round", 0)) == (calls, cps, n)}
            for ours, lean in PAIRS:
                if ours not in pair or lean not in pair:
                    continue
                icall, base = pair[ours], pair[lean]
                p99 = [percentile(x["reaction_ms"], 0.99) for x in (icall, base)]
                take = [percentile(x["takeover_ms"], 0.99) for x in (icall, base)]
                switch = [x["cpu"]["switch"]["percent"] for x in (icall, base)]
                cpu_ratios.append(icall["cpu_ms_per_call"] / base["cpu_ms_per_call"])
                which = f" (round {n + 1})" if len(rounds) > 1 else ""
                print(f"{ours}/{lean} at {calls}/{cps:g}{which}: CPU per call "
                      f"{ratio(icall['cpu_ms_per_call'], base['cpu_ms_per_call'])}, the switch's CPU "
                      f"{ratio(*switch)}, reaction p99 {ratio(*p99)} (+{number(p99[0] - p99[1])} ms), "
                      f"takeover p99 {ratio(*take)}, RSS per call "
                      f"{ratio(icall['rss_kib_per_call'], base['rss_kib_per_call'])}")
        if len(cpu_ratios) > 1:
            print(f"icall/baseline at {calls}/{cps:g}: CPU per call over {len(cpu_ratios)} rounds "
                  f"{min(cpu_ratios):.1f}x-{max(cpu_ratios):.1f}x, median {percentile(cpu_ratios, 0.5):.1f}x")
    for r in results:
        if r["not_right"] or not r["controller_alive"] or r["dtmf_refused"] or r["refused"]:
            print(f"\n{r['controller']} at {r['calls']}/{r['cps']:g}: alive at the end "
                  f"{r['controller_alive']}, stderr lines {r['controller_stderr_lines']}, "
                  f"originates refused {r['refused']}, DTMF refused {r['dtmf_refused']}")
            print(f"  by scenario: {r['by_scenario']}")
            for call in r["not_right"][:5]:
                print(f"  {call['verdict']} {call['scenario']} {call['uuid']} "
                      f"{call['originate']}: {call['seen']}")
