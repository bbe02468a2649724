"""Benchmarks print ratios against a baseline measured in the same run.

Within each pytest-benchmark group, the entry whose name contains "baseline" is the
reference; the terminal summary prints every other entry's median as a ratio to it.
Run: python -m pytest bench/bench_dsp.py (see README "Benchmarks").
"""

def pytest_terminal_summary(terminalreporter, exitstatus, config):
    bs = getattr(config, "_benchmarksession", None)
    if bs is None or not bs.benchmarks:
        return
    groups: dict = {}
    for b in bs.benchmarks:
        groups.setdefault(b.group, []).append(b)
    tr = terminalreporter
    tr.section("ratios to the baseline of each group (median time, same run)")
    for g, items in groups.items():
        base = next((b for b in items if "baseline" in b.name), None)
        if base is None:
            continue
        bm = base.stats.median
        for b in items:
            m = b.stats.median
            tr.write_line(f"[{g}] {b.name}: median {m * 1e6:9.2f} us  = baseline / {bm / m:6.2f}")
