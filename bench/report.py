"""docs/performance.md from bench/results/*.json (written at the end of `python -m bench`)."""

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
REPORT = ROOT / "docs" / "performance.md"

LABELS = {"sqlite": "SQLite + in-memory", "postgres_redis": "PostgreSQL + Redis"}


def retry_table(current: dict, stock: dict | None) -> list[str]:
    lines = [
        "| setup | scenario | load | req/s | × trivial | p50 ms | p99 ms | stock req/s | "
        "stock p99 ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for setup, label in LABELS.items():
        if setup not in current:
            continue
        trivial = current[setup]["trivial"]["requests_per_second"]
        trivial_row = f"| {label} | trivial view | saturated c10 | {trivial:.0f} | 1.00 |"
        lines.append(trivial_row + " | | | |")
        for scenario in ("one_roadmap", "fifty_users"):
            for name, run in current[setup].get(scenario, {}).items():
                base = (stock or {}).get(setup, {}).get(scenario, {}).get(name)
                base_cells = (
                    f"{base['requests_per_second']:.1f} | {base['p99_ms']:.0f}" if base else " | "
                )
                lines.append(
                    f"| {label} | {scenario.replace('_', ' ')} | {name.replace('_', ' ')} | "
                    f"{run['requests_per_second']:.1f} | {run['ratio_to_trivial']:.2f} | "
                    f"{run['p50_ms']:.0f} | {run['p99_ms']:.0f} | {base_cells} |"
                )
    return lines


def table(first: str, columns: list[str], rows: dict[str, dict]) -> list[str]:
    """A Markdown table: one row per entry of `rows`, one column per key."""
    lines = [
        "| " + " | ".join([first, *(c.replace("_", " ") for c in columns)]) + " |",
        "|" + "---|" * (len(columns) + 1),
    ]
    for name, values in rows.items():
        cells = [str(values.get(column, "")) for column in columns]
        lines.append("| " + " | ".join([name, *cells]) + " |")
    return lines


def load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def queries_section() -> list[str]:
    results = load("queries_per_generation")
    if not results or "rounds" not in results:
        return []
    lines = [
        "## Queries, transactions and CPU per generation (`bench/queries_per_generation.py`)",
        "",
        "Every statement of every thread of one process, for generations run for real by",
        "the in-process engine (offline provider, 0.05 s an answer), per generation (a",
        "batch's start shared by its 50). Each cell: *before* (the same scenario on",
        f"`{results['before_commit']}`, the commit before usage records and budgets,",
        "`bench/baseline.py`) · *usage off* (this commit with metering, reservations and",
        "settling switched off by the benchmark) · *after*. A transaction is one that",
        "reached the database: a commit or rollback after a statement, or a write in",
        f"autocommit. CPU: the process's, mean of {results['rounds']} runs, sides alternating.",
        "",
        "| setup | generation | queries | transactions | savepoints | writes | CPU ms | "
        "CPU × before | CPU × usage off |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for setup, label in LABELS.items():
        if setup not in results:
            continue
        entry = results[setup]
        for name, after in entry["after"].items():
            if name == "vendor":
                continue
            figures = [
                entry[side][name] for side in ("before", "usage_off", "after") if side in entry
            ]
            cells = [
                " · ".join(f"{f[key]:g}" for f in figures)
                for key in ("queries", "transactions", "savepoints", "writes", "cpu_ms")
            ]
            cells += [
                str(after.get(f"against_{side}", {}).get("cpu_ratio", ""))
                for side in ("before", "usage_off")
            ]
            lines.append(f"| {label} | {name.replace('_', ' ')} | {' | '.join(cells)} |")
    return [*lines, ""]


def lost_updates_section() -> list[str]:
    results = load("lost_updates")
    if not results:
        return []
    return [
        "## Lost updates on PostgreSQL (`bench/lost_updates.py`, I8)",
        "",
        f"{results['writers']} concurrent writers, {results['changes']} status changes on",
        "one roadmap, each writer owning its own concepts:",
        "",
        "| storage | updates lost |",
        "|---|---|",
        f"| seed-style: one JSON document per roadmap, read-modify-write | "
        f"{results['seed_style_lost']} |",
        f"| this design: one row per pair, one UPDATE per change | {results['this_design_lost']} |",
        "",
    ]


def latency_section() -> list[str]:
    results = load("event_latency")
    if not results:
        return []
    lines = [
        "## Event latency by subscribers (`bench/event_latency.py`)",
        "",
        "Commit → receipt, subscribers as Channels consumers in the bench process",
        "(`bench/event_fanout.py` measures real clients in another process).",
        "",
    ]
    columns = ["p50_ms", "p95_ms", "max_ms", "p50_ratio_to_n1"]
    return [*lines, *table("layer / stream / subscribers", columns, results), ""]


def scaling_section() -> list[str]:
    results = load("worker_scaling")
    if not results:
        return []
    seconds = results["seconds_by_workers"]
    return [
        "## Celery worker scaling (`bench/worker_scaling.py`)",
        "",
        f"{results['generations']} generations of {results['provider_latency_s']} s, "
        f"concurrency {results['concurrency_per_worker']} per worker: one worker "
        f"{seconds['1']} s, two workers {seconds['2']} s, throughput ratio "
        f"{results['throughput_ratio']}× (ideal 2.0×).",
        "",
    ]


def before_after(entry: dict, key: str) -> str:
    """`before → after` of one figure, or the after alone without a before."""
    if "before" not in entry:
        return f"{entry['after'][key]}"
    return f"{entry['before'][key]} → {entry['after'][key]}"


def in_flight_section() -> list[str]:
    results = load("in_flight")
    if not results or "rounds" not in results:
        return []
    lines = [
        "## Generations in flight in one process (`bench/in_flight.py`)",
        "",
        f"{results['generations']} tutorials at once (GENERATION_CONCURRENCY = "
        f"{results['generations']}), each streamed over {results['stream_seconds']} s by the",
        "fake OpenAI server in another process, through the real SDK. Ideal makespan: one",
        "answer's time; the rest is the server's own work per generation. *Before*: the",
        f"same batch served by `{results['before_commit']}` (`bench/baseline.py`), the",
        f"sides alternating, {results['rounds']} runs each (means).",
        "",
        "| setup | makespan s | peak RSS MB | CPU ms/generation | CPU × | makespan × |",
        "|---|---|---|---|---|---|",
    ]
    for setup, label in LABELS.items():
        if setup in results:
            entry = results[setup]
            cells = [before_after(entry, k) for k in ("makespan_s", "peak_rss_mb")]
            cells += [before_after(entry, "cpu_ms_per_generation")]
            cells += [f"{entry.get('cpu_ratio', '')}", f"{entry.get('makespan_ratio', '')}"]
            lines.append(f"| {label} | {' | '.join(cells)} |")
    return [*lines, ""]


def failover_section() -> list[str]:
    results = load("failover")
    if not results:
        return []
    rows = {LABELS[k]: {**v, "ratio": f"{v['ratio']}×"} for k, v in results.items() if k in LABELS}
    return [
        "## A batch with the primary provider down (`bench/failover.py`)",
        "",
        f"{results['generations']} tutorials, {results['slots']} slots, two fake OpenAI servers "
        f"streaming each answer over {results['stream_seconds']} s:",
        f"the primary healthy, then answering 503 from the start ({results['sdk_retries']} SDK "
        "retries, then the",
        "secondary), alternated; medians. Goal: down ≤ 1.2 × healthy. *cpu ratio*: the",
        "server's CPU seconds for the batch, down against healthy. The primary's requests",
        "while down are the calls of every slot that started before its circuit opened.",
        "",
        *table(
            "setup",
            [
                "healthy_makespan_s",
                "primary_down_makespan_s",
                "ratio",
                "cpu_ratio",
                "primary_requests_while_down",
            ],
            rows,
        ),
        "",
    ]


def live_section() -> list[str]:
    results = load("live_content")
    if not results:
        return []
    lines = [
        "## Live content (`bench/live_content.py`)",
        "",
        f"The in_flight batch with answers of {results['answer_chars']:,} characters, each",
        f"streamed over {results['stream_seconds']} s in 40-character chunks that carry their",
        "send time; one socket (another process) on the roadmap's stream, subscribed",
        "before the start, or none (*unwatched*: live content written and published,",
        "nobody subscribed). Latency: the fake's send time to the client's receipt;",
        "held as stored: pairs whose text ended as stored. Goals at 500: CPU per generation",
        "≤ 1.5× and makespan within 10 % of unwatched; p99 ≤ 150 ms. The load is the",
        "machine's 1-minute load average at the end of each run (2 cores here). Steady p99:",
        "the chunks received a second in from either end, apart from the bursts in which",
        "all the streams start and all of them end (each second's p99 is in the results).",
        "",
        "| setup | run | streams | makespan s | CPU ms/generation | busiest second, cores | "
        "p50 ms | p99 ms | steady p99 ms | max ms | live bytes/generation | × stored | "
        "held as stored | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    ratios = []
    for setup, label in LABELS.items():
        runs = results.get(setup, {})
        for name, run in runs.items():
            if not isinstance(run, dict):
                continue
            watched = "p50_ms" in run
            cells = [
                f"{run['generations']}",
                f"{run['makespan_s']}",
                f"{run['cpu_ms_per_generation']}",
                f"{run['server_cores_busiest_second']}",
                *(
                    [
                        f"{run['p50_ms']}",
                        f"{run['p99_ms']}",
                        f"{run.get('steady_p99_ms', '')}",
                        f"{run['max_ms']}",
                        f"{run['live_bytes_per_generation']:,}",
                        f"{run['live_bytes_ratio']}",
                        f"{run['held_as_stored']}/{run['generations']}",
                    ]
                    if watched
                    else [""] * 7
                ),
                f"{run['load_average_1min']}",
            ]
            lines.append(f"| {label} | {name} | " + " | ".join(cells) + " |")
        if "cpu_ratio" in runs:
            ratios.append(
                f"{label}: watched / unwatched CPU per generation {runs['cpu_ratio']}×, "
                f"makespan {runs['makespan_ratio']}×."
            )
    return [*lines, "", *ratios, ""]


def fairness_section() -> list[str]:
    results = load("fairness")
    if not results:
        return []
    rows = {LABELS[k]: v for k, v in results.items() if k in LABELS}
    return [
        "## A single retry behind another user's backlog (`bench/fairness.py`)",
        "",
        f"User B's single retry (answers streamed over {results['stream_seconds']} s, "
        f"{results['slots']} slots),",
        f"median of {results['samples']}, alone and while user A's "
        f"{results['backlog_pairs']}-pair generation runs. Goal: ≤ 2×.",
        "",
        *table(
            "setup",
            ["alone_median_s", "with_backlog_median_s", "with_backlog_max_s", "ratio"],
            rows,
        ),
        "",
    ]


def fanout_section() -> list[str]:
    results = load("event_fanout")
    if not results:
        return []
    lines = [
        "## One event to many real WebSocket clients (`bench/event_fanout.py`)",
        "",
        "Clients in two other processes, subscribed before a retry's `concept_complete`;",
        "latency from the event's timestamp (set in its transaction) to its arrival.",
        "Goal: p99 ≤ 20 ms at 1,000 in-memory, ≤ 50 ms through Redis across",
        "two daphnes (the clients alternate between them; the event is made in the first).",
        "",
        "| setup | daphnes | stream | subscribers | p50 ms | p99 ms | max ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for setup, label in LABELS.items():
        for name, run in results.get(setup, {}).items():
            stream, count = name.split(" N=")
            lines.append(
                f"| {label} | {run.get('daphnes', 1)} | {stream} | {count} | {run['p50_ms']} | "
                f"{run['p99_ms']} | {run['max_ms']} |"
            )
    return [*lines, ""]


def idle_section() -> list[str]:
    results = load("idle_sockets")
    if not results:
        return []
    rows = {LABELS[k]: v for k, v in results.items() if k in LABELS}
    return [
        "## Idle sockets (`bench/idle_sockets.py`)",
        "",
        "1,000 real WebSocket clients (another process) on ten roadmap streams, idle:",
        "the server's SQL statements per second over 20 s, and its resident memory",
        "before and after they connect. Goal: ≤ 1 store query per second.",
        "",
        *table(
            "setup",
            [
                "sockets",
                "statements_per_second",
                "kib_per_socket",
                "rss_before_mib",
                "rss_after_mib",
            ],
            rows,
        ),
        "",
    ]


def storm_section() -> list[str]:
    results = load("reconnect_storm")
    if not results:
        return []
    rows = {LABELS[k]: v for k, v in results.items() if k in LABELS}
    return [
        "## A reconnect storm (`bench/reconnect_storm.py`)",
        "",
        f"{results['clients']} real WebSocket clients (another process) connect at once to",
        "one roadmap stream with `after=0` and read its stored events, then all close.",
        "Goal: all replayed within 10 s, no consumer killed for a slow shutdown.",
        "",
        *table(
            "setup",
            ["replayed", "failed", "all_replayed_s", "p50_s", "killed_slow_shutdown"],
            rows,
        ),
        "",
    ]


def disconnect_section() -> list[str]:
    results = load("disconnect_storm")
    if not results:
        return []
    return [
        "## Clients leaving at once (`bench/disconnect_storm.py`)",
        "",
        f"`wrk {results['wrk']}`, {len(results['runs'])} runs against one daphne (SQLite);",
        "when wrk stops it drops every connection, many mid-request. Goal: no ERROR",
        "line and no traceback in the server's log.",
        "",
        "| run | requests/s | ERROR lines | tracebacks |",
        "|---|---|---|---|",
        *(
            f"| {n} | {run['requests_per_second']:.0f} | {run['error_lines']} | "
            f"{run['tracebacks']} |"
            for n, run in enumerate(results["runs"], 1)
        ),
        "",
    ]


def limits_section() -> list[str]:
    results = load("roadmap_limits")
    if not results:
        return []
    rows = {LABELS[k]: v for k, v in results.items() if k in LABELS}
    return [
        "## A roadmap at the size limits (`bench/roadmap_limits.py`)",
        "",
        f"`POST /roadmaps/` of {results['stages']} stages, {results['modules']} modules and "
        f"{results['concepts']} concepts (the 201 carries",
        f"the whole detail), then `GET` of that detail, {results['samples']} times each; one "
        "daphne, `DEBUG=0`. And a",
        f"framework of {results['oversized_stages']:,} stages ({results['oversized_kib']} KiB), "
        "refused with 400 before its stages are validated.",
        "Goal: created and read in well under a second.",
        "",
        *table(
            "setup",
            [
                "create_median_ms",
                "create_max_ms",
                "read_median_ms",
                "read_max_ms",
                "detail_kib",
                "refuse_oversized_median_ms",
            ],
            rows,
        ),
        "",
    ]


def metrics_section() -> list[str]:
    results = load("metrics_scrape")
    if not results:
        return []
    sizes = results["sizes"]
    rows = {}
    for key, label in LABELS.items():
        for size in sizes:
            if key in results:
                rows[f"{label}, {size:,} records"] = results[key][f"records_{size}"]
    return [
        "## A Prometheus scrape (`bench/metrics_scrape.py`)",
        "",
        f"`GET /metrics` with the metrics token, {results['samples']} times at each size, "
        "from one daphne (`DEBUG=0`):",
        "every figure is summed by the database at scrape time, in five queries whatever "
        "the size; their",
        "time grows with the usage records summed (60 label combinations), beside 1,500 "
        "pairs and 1,000",
        "lease expiries. Goal: well under a second at 100,000 records.",
        "",
        *table("setup", ["median_ms", "max_ms", "kib"], rows),
        "",
    ]


def write() -> None:
    current_path = RESULTS / "retry_load.json"
    if not current_path.exists():
        return
    current = json.loads(current_path.read_text())
    stock_path = RESULTS / "retry_load_stock.json"
    stock = json.loads(stock_path.read_text()) if stock_path.exists() else None
    lines = [
        "# Performance",
        "",
        "Written by `make bench` (`python -m bench`) from `bench/results/*.json`; the",
        "figures vary with the machine, the ratios measured in one run are what to compare.",
        f"Machine: {current['machine']}; each load run lasts {current['seconds']} s.",
        "",
        "## The retry endpoint under wrk (`bench/retry_load.py`)",
        "",
        "One daphne, `DEBUG=0`; every request retries a different pair (202); the work",
        "of each start is recorded, not run (the request path alone). *Paced*: 50",
        "connections, each pausing an exponentially distributed 667 ms on average",
        "between requests (75 req/s at zero latency). *Stock*: the same server with",
        "Django's own request handling (`REQUEST_THREADS=0`: a new thread and database",
        "connection per request; `SQLITE_QUEUE_WRITERS=0`: SQLite's sleeping busy",
        "handler), measured in the same run (`bench/retry_load_stock.py`).",
        "",
        *retry_table(current, stock),
        "",
    ]
    lines += queries_section() + lost_updates_section() + in_flight_section() + live_section()
    lines += fairness_section() + failover_section()
    lines += limits_section() + metrics_section() + disconnect_section()
    lines += (
        latency_section() + fanout_section() + idle_section() + storm_section() + scaling_section()
    )
    notes = ROOT / "bench" / "performance_notes.md"
    if notes.exists():
        lines += [notes.read_text().rstrip(), ""]
    REPORT.write_text("\n".join(lines))
    print(f"wrote {REPORT.relative_to(ROOT)}")
