"""The table of scripts/bench-ceiling: each benchmark beside its ceiling.

Reads the JSON reports of `ordo bench http`, pgbench's output and the
output of `ordo bench group-commit` from the run's directory and prints a
markdown table of figures, ratios and DESIGN.md's targets, then the
server's CPU and memory over each run.

    python3 scripts/ceiling_table.py OUT CONCURRENCY MIX_RATE
"""

import json
import re
import sys
from pathlib import Path


def report(out, run):
    path = out / f"{run}.json"
    return json.loads(path.read_text()) if path.exists() else None


def first_row(rep):
    return rep["rows"][0] if rep and rep["rows"] else None


def rate(rep):
    row = first_row(rep)
    return row["achieved_rate"] if row else None


def errors(rep):
    row = first_row(rep)
    return sum(row["errors"].values()) if row else None


def pgbench(out, run):
    path = out / f"{run}.txt"
    if not path.exists():
        return None
    text = path.read_text()
    tps = re.search(r"^tps = ([\d.]+)", text, re.M)
    latency = re.search(r"^latency average = ([\d.]+) ms", text, re.M)
    failed = re.search(r"^number of failed transactions: (\d+)", text, re.M)
    return {
        "tps": float(tps.group(1)) if tps else None,
        "latency_ms": float(latency.group(1)) if latency else None,
        "failed": int(failed.group(1)) if failed else 0,
    }


def group_commit(out):
    path = out / "group-commit.txt"
    if not path.exists():
        return None, None
    text = path.read_text()
    naive = re.search(r"naive.*?([\d.]+) tx/s", text)
    group = re.search(r"group commit:\s*([\d.]+) tx/s", text)
    return (float(naive.group(1)) if naive else None, float(group.group(1)) if group else None)


def per_s(x):
    return "—" if x is None else f"{x:,.0f}/s"


def pct(a, b):
    return "—" if a is None or not b else f"{100 * a / b:.0f} %"


def met(ok):
    return "—" if ok is None else ("met" if ok else "**missed**")


def main():
    out, concurrency, mix_rate = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    rows = []

    for mode, prefix in (("PostgreSQL", "pg"), ("embedded", "embedded")):
        static = report(out, f"{prefix}-static")
        get = report(out, f"{prefix}-get")
        create = report(out, f"{prefix}-create")
        mixed = report(out, f"{prefix}-mixed")
        rows.append((f"{mode}: static route `GET /health/live` (HTTP ceiling)",
                     per_s(rate(static)), "", "", "", ""))
        if prefix == "pg":
            pg_create = pgbench(out, "pgbench-create")
            pg_get = pgbench(out, "pgbench-get")
            ceiling = pg_create and pg_create["tps"]
            ratio = rate(create) / ceiling if rate(create) and ceiling else None
            rows.append((f"{mode}: `POST /v1/orders`", per_s(rate(create)),
                         "pgbench, the create-order transaction", per_s(ceiling),
                         pct(rate(create), ceiling), f"≥ 75 %: {met(ratio and ratio >= 0.75)}"))
            reads = [x for x in (pg_get and pg_get["tps"], rate(static)) if x]
            lower = min(reads) if reads else None
            which = "pgbench get-order" if pg_get and lower == pg_get["tps"] else "static route"
            ratio = rate(get) / lower if rate(get) and lower else None
            rows.append((f"{mode}: `GET /v1/orders/{{id}}`", per_s(rate(get)),
                         f"lower of pgbench get-order ({per_s(pg_get and pg_get['tps'])}) "
                         f"and the static route: {which}", per_s(lower),
                         pct(rate(get), lower), f"≥ 60 %: {met(ratio and ratio >= 0.6)}"))
        else:
            rows.append((f"{mode}: `POST /v1/orders`", per_s(rate(create)), "", "", "", ""))
            ratio = rate(get) / rate(static) if rate(get) and rate(static) else None
            rows.append((f"{mode}: `GET /v1/orders/{{id}}`", per_s(rate(get)),
                         "the static route", per_s(rate(static)), pct(rate(get), rate(static)),
                         "(PostgreSQL's target)"))
        row = first_row(mixed)
        if row:
            p99 = row["latency_ms"]["p99"] if row["latency_ms"] else None
            cores = mixed["server"]["cpu_cores"] if mixed.get("server") else None
            ok = p99 is not None and p99 <= 10 and cores is not None and cores <= 0.5
            rows.append((f"{mode}: 80/20 mix at {mix_rate:.0f}/s, open loop",
                         f"p99 {p99:.2f} ms, {per_s(row['achieved_rate'])}, "
                         f"{sum(row['errors'].values())} errors",
                         "a quarter of the machine (2 cores)",
                         f"server {cores:.2f} cores" if cores is not None else "—", "",
                         f"p99 ≤ 10 ms on ≤ 0.5 cores: {met(ok)}"))
            if prefix == "embedded" and mixed.get("server"):
                peak = mixed["server"]["peak_rss_mb_after"]
                rows.append((f"{mode}: server memory under that mix", f"peak RSS {peak:.1f} MB",
                             "", "", "", f"< 100 MB: {met(peak < 100)}"))

    naive, group = group_commit(out)
    if naive and group:
        rows.append(("embedded: group commit, 64 writers (`ordo bench group-commit`)",
                     per_s(group), "one commit per transaction", per_s(naive),
                     f"{group / naive:.1f}×", f"≥ 10×: {met(group / naive >= 10)}"))

    print(f"\nClosed loop at {concurrency} in flight (pgbench: {concurrency} clients) unless said.\n")
    print("| benchmark | figure | ceiling | ceiling figure | ratio | target |")
    print("|---|--:|---|--:|--:|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")

    print("\nThe server over each measured window (`--server-pid`):\n")
    print("| run | requests/s | p50 ms | p99 ms | errors | server CPU | peak RSS |")
    print("|---|--:|--:|--:|--:|--:|--:|")
    for run in ("pg-static", "pg-get", "pg-create", "pg-mixed",
                "embedded-static", "embedded-get", "embedded-create", "embedded-mixed"):
        rep = report(out, run)
        row = first_row(rep)
        if not row:
            continue
        lat = row["latency_ms"] or {}
        server = rep.get("server") or {}
        print(f"| {run} | {per_s(row['achieved_rate'])} | {lat.get('p50', 0):.2f} | "
              f"{lat.get('p99', 0):.2f} | {errors(rep)} | "
              f"{server.get('cpu_cores', 0):.2f} cores | {server.get('peak_rss_mb_after', 0):.1f} MB |")
    for run in ("pgbench-create", "pgbench-get"):
        pg = pgbench(out, run)
        if pg and pg["tps"]:
            print(f"| {run} | {per_s(pg['tps'])} | {pg['latency_ms']:.2f} (mean) | | "
                  f"{pg['failed']} | | |")


if __name__ == "__main__":
    main()
