#!/usr/bin/env python3
"""Summarises a `make c1m` results folder (floor.json, raw.json, stomp.json) as Markdown,
with ringcast's figures as ratios to the floor measured in the same run."""
import json
import os
import sys


def load(d, name):
    p = os.path.join(d, name)
    return json.load(open(p)) if os.path.exists(p) else None


def last(r):
    return max(m["last_delivery_s"] for m in r["messages"]) if r and r["messages"] else None


def mean(r):
    return sum(m["last_delivery_s"] for m in r["messages"]) / len(r["messages"])


def main(d):
    floor, raw, stomp = (load(d, f) for f in ("floor.json", "raw.json", "stomp.json"))
    print(f"Results in `{d}`.\n")
    print("| run | connected / failed | connect rate | server RSS per conn | 64 B broadcast, last delivery (each message) | p50 / p99 latency |")
    print("|---|---|---|---|---|---|")
    for name, r in (("floor (bare io_uring TCP, fixed 101)", floor), ("ringcast raw", raw), ("ringcast STOMP", stomp)):
        if not r:
            print(f"| {name} | not measured | | | | |")
            continue
        rss = r.get("server_rss_per_connection")
        lasts = ", ".join(f"{m['last_delivery_s']:.2f}" for m in r["messages"])
        delivered = all(m["delivered"] == r["connected"] for m in r["messages"])
        print(f"| {name} | {r['connected']:,} / {r['failed']:,} | {r['connect_rate']:,.0f}/s | "
              f"{f'{rss:.0f} B' if rss is not None else 'n/a'} | {lasts} s{'' if delivered else ' (NOT all delivered)'} | "
              f"{r['latency_ms']['p50']:.0f} / {r['latency_ms']['p99']:.0f} ms |")
    if floor:
        print()
        for name, r in (("raw", raw), ("STOMP", stomp)):
            if r:
                rate = r["connect_rate"] / floor["connect_rate"]
                lat = last(r) / last(floor)
                print(f"- ringcast {name} vs floor: connect rate {rate:.0%} of the floor's; "
                      f"last delivery {mean(r) / mean(floor):.2f}× the floor's on average "
                      f"(slowest {lat:.2f}× the floor's slowest).")
    if stomp:
        print(f"- STOMP: missed heart-beats {stomp['missed_heartbeats']}, closed by server "
              f"{stomp['closed_by_server']}; server CPU while pushing every 5 s: "
              f"{(stomp.get('server_cpu_share_publishing') or 0) * 100:.1f} % of one core; "
              f"heart-beats alone ({stomp['hold_seconds']:.0f} s): "
              f"{(stomp.get('server_cpu_share_holding') or 0) * 100:.1f} % of one core.")


if __name__ == "__main__":
    main(sys.argv[1])
