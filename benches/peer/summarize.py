"""The peer comparison's table from the run folders of `run.sh`.

Per tool, method and order: the covariance time (EasyEdit: `get_cov`/`get_inv_cov` for every
edited layer before the first edit; d4s: the statistics phase of its first edit), the median
per-edit wall and CPU seconds without it (the first edit of both tools also builds the context
templates), the process's peak RSS (`/usr/bin/time`), and the means of EasyEdit's metrics over
the records: rewrite and rephrase accuracy and locality (d4s: `token.efficacy`,
`token.paraphrase`, `token.specificity`, the same definitions).
"""

import argparse
import json
import statistics
from pathlib import Path


# Below this the method used no covariance (ROME with `mom2_adjustment: false`).
COV_UNUSED = 0.5


def cov_cell(seconds):
    return f"{seconds:.1f}" if seconds > COV_UNUSED else "–"


def process_time(folder):
    wall, user, system, max_kib = (Path(folder) / "time.txt").read_text().split()
    return {"wall": float(wall), "cpu": float(user) + float(system), "peak_mib": int(max_kib) / 1024}


def easyedit_row(folder):
    r = json.loads((Path(folder) / "result.json").read_text())
    edits = r["edits"]
    return {
        "cov_s": r["covariance"]["wall_s"],
        "edit_wall": statistics.median(e["wall_s"] for e in edits),
        "edit_cpu": statistics.median(e["cpu_s"] for e in edits),
        "rewrite": statistics.mean(e["rewrite"] for e in edits),
        "rephrase": statistics.mean(e["rephrase"] for e in edits),
        "locality": statistics.mean(e["locality"] for e in edits),
        "per_case": [(e["rewrite"], e["rephrase"], e["locality"]) for e in edits],
        "n": len(edits),
    }


def d4s_row(folder):
    run = Path(folder) / "run"
    edits = [json.loads(l) for l in (run / "edits.jsonl").read_text().splitlines() if l.strip()]
    cases = [json.loads(l) for l in (run / "cases.jsonl").read_text().splitlines() if l.strip()]
    stats = [e["timings"]["statistics"] for e in edits]
    tok = [c["token"] for c in cases]
    return {
        "cov_s": sum(stats),
        "edit_wall": statistics.median(e["seconds"] - s for e, s in zip(edits, stats)),
        # One thread: the statistics phase's CPU time is its wall time.
        "edit_cpu": statistics.median(e["cpu_seconds"] - s for e, s in zip(edits, stats)),
        "rewrite": statistics.mean(t["efficacy"] for t in tok),
        "rephrase": statistics.mean(t["paraphrase"] for t in tok),
        "locality": statistics.mean(t["specificity"] for t in tok),
        "per_case": [(t["efficacy"], t["paraphrase"], t["specificity"]) for t in tok],
        "n": len(edits),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", required=True)
    ap.add_argument("--easyedit-commit", default="unknown")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    runs = Path(a.runs)
    lines = [
        f"EasyEdit {a.easyedit_commit} (PyTorch CPU) against d4s, one thread each; per-edit times "
        "are medians over the records, without the covariance.",
        "",
        "| method | order | tool | records | covariance (s) | per-edit wall (s) | per-edit CPU (s) "
        "| peak RSS (MiB) | rewrite | rephrase | locality |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    ratios = []
    for method in ["rome", "memit"]:
        for order in ["easyedit-first", "d4s-first"]:
            rows = {}
            for tool, read in [("easyedit", easyedit_row), ("d4s", d4s_row)]:
                folder = runs / order / f"{tool}-{method}"
                try:
                    row = read(folder)
                    row.update(process_time(folder))
                except (FileNotFoundError, ValueError):
                    continue  # not run, or still running
                rows[tool] = row
                lines.append(
                    f"| {method.upper()} | {order} | {'EasyEdit' if tool == 'easyedit' else 'd4s'} "
                    f"| {row['n']} | {cov_cell(row['cov_s'])} | {row['edit_wall']:.1f} "
                    f"| {row['edit_cpu']:.1f} | {row['peak_mib']:,.0f} | {row['rewrite']:.2f} "
                    f"| {row['rephrase']:.2f} | {row['locality']:.2f} |"
                )
            if len(rows) == 2:
                e, d = rows["easyedit"], rows["d4s"]
                same = sum(
                    all(abs(u - v) < 1e-6 for u, v in zip(x, y))
                    for x, y in zip(e["per_case"], d["per_case"])
                )
                cov = (
                    f"covariance {e['cov_s'] / d['cov_s']:.1f}×; "
                    if min(e["cov_s"], d["cov_s"]) > COV_UNUSED
                    else ""
                )
                ratios.append(
                    f"- {method.upper()}, {order}: EasyEdit / d4s per-edit wall "
                    f"{e['edit_wall'] / d['edit_wall']:.1f}×, CPU {e['edit_cpu'] / d['edit_cpu']:.1f}×, "
                    f"{cov}"
                    f"{same} of {len(e['per_case'])} records score the same "
                    f"(rewrite, rephrase, locality)"
                )
    lines += [""] + ratios
    Path(a.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
