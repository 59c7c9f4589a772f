"""The benchmark's scenarios and goals, and the tables it reports them in."""

import statistics

SCENARIOS = ["direct", "trellis-1hop", "trellis-2hop", "trellis-2hop-mtls", "haproxy", "nginx-proxy"]
# Run only when named in BENCH_SCENARIOS (bench/observability.sh): what the proxy's
# request metrics and tracing cost.
OBSERVABILITY_SCENARIOS = ["trellis-1hop-bare", "trellis-1hop-traced"]
ALL_SCENARIOS = SCENARIOS + OBSERVABILITY_SCENARIOS
PROTOCOLS = ["h1", "h2"]
PROTO_TITLE = {"h1": "HTTP/1.1", "h2": "HTTP/2 (h2c, prior knowledge)"}
HOPS = {"direct": 0, "trellis-1hop": 1, "trellis-2hop": 2, "trellis-2hop-mtls": 2, "haproxy": 1,
        "nginx-proxy": 1, "trellis-1hop-bare": 1, "trellis-1hop-traced": 1}
DESCRIPTION = {
    "direct": "load generator → nginx origin",
    "trellis-1hop": "→ trellis → origin (h1)",
    "trellis-2hop": "→ trellis A → (h2) → trellis B → (h1) origin",
    "trellis-2hop-mtls": "→ sidecar A → (mTLS, h2) → sidecar B → (h1) origin, under trellis control",
    "haproxy": "→ HAProxy (mode http, keep-alive) → origin (h1)",
    "nginx-proxy": "→ nginx proxy_pass (upstream keepalive, HTTP/1.1) → origin (h1)",
    "trellis-1hop-bare": "trellis-1hop with request metrics off (`requestMetrics: false`) and no tracing",
    "trellis-1hop-traced": "trellis-1hop (request metrics on) with tracing at 1 % sampling, exported over "
                           "OTLP/gRPC to a rotel receiver",
}

SAT_CONNECTIONS = 32
LAT_CONNECTIONS = 16
LAT_RATE = 1000

GOALS = {
    "added_p50_ms": 0.10,
    "added_p99_ms": 0.20,
    "idle_rss_mib": 10.0,
    "peak_rss_mib": 20.0,
    # two hops with mTLS, in total over direct
    "mtls_added_p50_ms": 0.15,
    "mtls_added_p99_ms": 0.40,
    # two-hop mTLS saturation throughput over Trellis's own one-hop plaintext
    "mtls_vs_1hop": 0.65,
    # saturation throughput lost to request metrics and 1 % tracing, against both off
    "observability_cost": 0.05,
}


def med(rows, key):
    vals = [r[key] for r in rows if r.get(key) is not None and "failed" not in r]
    return statistics.median(vals) if vals else None


def fmt(v, nd=2, suffix=""):
    return "—" if v is None else f"{v:,.{nd}f}{suffix}"


def fmt_signed(v, nd=3):
    return "—" if v is None else f"{v:+.{nd}f}"


def summarize(results):
    """results[proto][scenario] -> list of per-round dicts; returns medians."""
    summary = {}
    for proto, by_sc in results.items():
        summary[proto] = {}
        for sc, rows in by_sc.items():
            s = {k: med(rows, k) for k in ("rps", "p50", "p99", "p999", "idle_rss", "peak_rss",
                                           "idle_rss_max_proc", "peak_rss_max_proc", "cpu_ms_per_10k")}
            s["errors"] = sum((r.get("sat_errors") or 0) + (r.get("lat_errors") or 0) for r in rows)
            s["failed"] = [r["failed"] for r in rows if "failed" in r]
            s["ok_rounds"] = sum(1 for r in rows if "failed" not in r)
            s["rounds"] = len(rows)
            summary[proto][sc] = s
        d = summary[proto].get("direct")
        for sc, s in summary[proto].items():
            hops = HOPS[sc]
            s["ratio"] = (s["rps"] / d["rps"]) if d and d["rps"] and s["rps"] is not None else None
            for k in ("p50", "p99", "p999"):
                if hops and d and d[k] is not None and s[k] is not None:
                    s["added_" + k] = (s[k] - d[k]) / hops
                else:
                    s["added_" + k] = None
    return summary


def protocol_table(proto, summ):
    lines = [
        f"### {PROTO_TITLE[proto]}",
        "",
        "| scenario | hops | throughput (req/s) | × direct | p50 ms | p99 ms | p99.9 ms "
        "| +p50 ms/hop | +p99 ms/hop | +p99.9 ms/hop | idle RSS MiB | peak RSS MiB | CPU ms/10k req | errors |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for sc in ALL_SCENARIOS:
        s = summ.get(sc)
        if s is None:
            continue
        if s["ok_rounds"] == 0:
            lines.append(f"| {sc} | {HOPS[sc]} | failed | | | | | | | | | | | |")
            continue
        name = sc if s["ok_rounds"] == s["rounds"] else f"{sc} ({s['ok_rounds']}/{s['rounds']} rounds)"
        lines.append("| " + " | ".join([
            name, str(HOPS[sc]), fmt(s["rps"], 0), fmt(s["ratio"], 3),
            fmt(s["p50"], 3), fmt(s["p99"], 3), fmt(s["p999"], 3),
            fmt_signed(s["added_p50"]), fmt_signed(s["added_p99"]), fmt_signed(s["added_p999"]),
            fmt(s["idle_rss"], 1), fmt(s["peak_rss"], 1), fmt(s["cpu_ms_per_10k"], 1),
            str(s["errors"]),
        ]) + " |")
    lines.append("")
    return lines


def verdict(ok):
    return "—" if ok is None else ("**PASS**" if ok else "**FAIL**")


def goals_table(summary, protocols):
    lines = [
        "### Goals (Trellis)",
        "",
        "| goal | protocol | measured | target | result |",
        "|---|---|--:|--:|---|",
    ]
    for proto in protocols:
        summ = summary.get(proto, {})
        t1 = summ.get("trellis-1hop")
        t2 = summ.get("trellis-2hop")
        for other, label in (("haproxy", "HAProxy"), ("nginx-proxy", "nginx as proxy")):
            o = summ.get(other)
            if t1 and o and t1["rps"] is not None and o["rps"] is not None:
                lines.append(f"| 1-hop saturation throughput ≥ {label} | {proto} | {fmt(t1['rps'], 0)} req/s "
                             f"| ≥ {fmt(o['rps'], 0)} req/s | {verdict(t1['rps'] >= o['rps'])} |")
        for sc, s in (("1-hop", t1), ("2-hop", t2)):
            if not s:
                continue
            for k, g in (("p50", "added_p50_ms"), ("p99", "added_p99_ms")):
                v = s["added_" + k]
                ok = None if v is None else v <= GOALS[g]
                lines.append(f"| added {k} per hop at {LAT_RATE:,} req/s ({sc}) | {proto} | {fmt_signed(v)} ms "
                             f"| ≤ {GOALS[g]:.2f} ms | {verdict(ok)} |")
        for sc, s in (("1-hop", t1), ("2-hop", t2)):
            if not s:
                continue
            for k, g, label in (("idle_rss_max_proc", "idle_rss_mib", "idle"),
                                ("peak_rss_max_proc", "peak_rss_mib", "peak at saturation")):
                v = s[k]
                ok = None if v is None else v <= GOALS[g]
                lines.append(f"| RSS per proxy process, {label} ({sc}) | {proto} | {fmt(v, 1)} MiB "
                             f"| ≤ {GOALS[g]:.0f} MiB | {verdict(ok)} |")
        m = summ.get("trellis-2hop-mtls")
        if m:
            for k, g in (("p50", "mtls_added_p50_ms"), ("p99", "mtls_added_p99_ms")):
                v = m["added_" + k]
                total = None if v is None else v * 2
                ok = None if total is None else total <= GOALS[g]
                lines.append(f"| 2-hop mTLS added {k} over direct at {LAT_RATE:,} req/s | {proto} | "
                             f"{fmt_signed(total)} ms | ≤ {GOALS[g]:.2f} ms | {verdict(ok)} |")
            if t1 and m["rps"] is not None and t1["rps"]:
                r = m["rps"] / t1["rps"]
                lines.append(f"| 2-hop mTLS saturation ÷ 1-hop plaintext | {proto} | {r:.2f}× "
                             f"| ≥ {GOALS['mtls_vs_1hop']:.2f}× | {verdict(r >= GOALS['mtls_vs_1hop'])} |")
        bare = summ.get("trellis-1hop-bare")
        if bare and bare["rps"]:
            for sc, label in (("trellis-1hop", "request metrics"),
                              ("trellis-1hop-traced", "request metrics and 1 % tracing")):
                s = summ.get(sc)
                if not s or s["rps"] is None:
                    continue
                cost = 1 - s["rps"] / bare["rps"]
                lines.append(f"| saturation throughput lost to {label} | {proto} | {cost * 100:+.1f} % "
                             f"| ≤ {GOALS['observability_cost'] * 100:.0f} % "
                             f"| {verdict(cost <= GOALS['observability_cost'])} |")
    if len(lines) == 4:
        lines.append("| (no trellis scenario measured) | | | | — |")
    lines.append("")
    return lines
