"""The ``evaluate`` stage: problems + samples + results -> report.json, report.md, plots.

* pass@k over each problem's sampled programs (unbiased estimator), averaged over problems
  (k above the smallest per-problem sample count left out and listed); greedy pass@1; n@k with
  example-test filtering; the same per source and difficulty; outcomes; mean test fraction.

Results meet samples by ``(problem_id, index)`` (the sample says the origin). A problem without
any result counts as unsolved for the greedy rate and is listed in ``missing``.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..config import ConfigError
from ..io import atomic_write_text
from ..rundir import RunDir
from ..records import read_results, read_samples
from ..problems.schema import Problem
from .eval_config import EvalConfig
from .compare import ProblemStats, available_metrics, compare_stats, metric_pairs, problem_stats, ratio
from .metrics import n_at_k, pass_at_k

from ..execution.codes import OUTCOMES_BEST_FIRST as OUTCOMES


def _mean(xs) -> float | None:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else None


def compute_metrics(problems: list[Problem], results: list[dict],
                    origins: dict[tuple[str, int], str], cfg: EvalConfig) -> dict[str, Any]:
    per, unknown = problem_stats([p.id for p in problems], results, origins)
    outcome_counts = {"sampled": Counter(), "greedy": Counter()}
    frac_tests: dict[str, list[float]] = defaultdict(list)
    for r in results:
        pid = str(r["problem_id"])
        if pid not in per:
            continue
        origin = origins.get((pid, int(r["index"])), r.get("origin") or "sampled")
        group = "greedy" if origin == "greedy" else "sampled"
        outcome_counts[group][r["outcome"]] += 1
        if group == "sampled" and r.get("tests_total"):
            frac_tests[pid].append(r.get("tests_passed", 0) / r["tests_total"])

    def summarise(ids: list[str]) -> dict[str, Any]:
        stats = [per[i] for i in ids]
        sampled = [s for s in stats if s.n > 0]
        min_n = min((s.n for s in sampled), default=0)
        out: dict[str, Any] = {"problems": len(ids), "with_samples": len(sampled), "samples_per_problem_min": min_n}
        out["pass@k"] = {str(k): _mean(pass_at_k(s.n, s.c, k) for s in sampled)
                         for k in cfg.ks if sampled and k <= min_n}
        greedy = [s.greedy for s in stats if s.greedy is not None]
        out["greedy_pass@1"] = _mean(float(g) for g in greedy) if greedy else None
        out["greedy_solved"] = int(sum(bool(g) for g in greedy))
        out["solved_by_any"] = int(sum(1 for s in sampled if s.c > 0))
        out["n@k"] = {f"{n}@{k}": _mean(n_at_k(s.n, s.e, s.ec, n, k) for s in sampled)
                      for n, k in cfg.parsed_n_at_k() if sampled and k <= min_n}
        out["mean_test_fraction"] = _mean(f for i in ids for f in frac_tests.get(i, []))
        out["hack_rate"] = ratio(metric_pairs({i: per[i] for i in ids}, "hack_rate"))
        out["example_passing_programs"] = int(sum(s.ex_pass for s in stats))
        return out

    all_ids = [p.id for p in problems]
    report: dict[str, Any] = {"overall": summarise(all_ids)}
    for attr in ("source", "difficulty"):
        groups: dict[str, list[str]] = defaultdict(list)
        for p in problems:
            groups[getattr(p, attr)].append(p.id)
        report[f"by_{attr}"] = {g: summarise(ids) for g, ids in sorted(groups.items())}
    report["outcomes"] = {g: {o: c[o] for o in OUTCOMES} for g, c in outcome_counts.items()}
    report["missing"] = sorted(i for i in all_ids if per[i].n == 0 and per[i].greedy is None)
    report["skipped_k"] = [k for k in cfg.ks if str(k) not in report["overall"]["pass@k"]]
    report["results_for_unknown_problems"] = unknown
    report["per_problem"] = {pid: st.to_dict() for pid, st in per.items()}
    return report


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.2f}"


def pass_table(report: dict[str, Any]) -> str:
    """Markdown table: one row per group (overall, sources, difficulties)."""
    ks = list(report["overall"]["pass@k"])
    nks = list(report["overall"]["n@k"])
    head = ["group", "problems", "greedy pass@1"] + [f"pass@{k}" for k in ks] + nks
    groups = [("overall", report["overall"])] + [(f"source={g}", v) for g, v in report["by_source"].items()]
    if len(report["by_difficulty"]) > 1 or "unknown" not in report["by_difficulty"]:
        groups += [(f"difficulty={g}", v) for g, v in report["by_difficulty"].items()]
    rows = [head, ["---"] * len(head)] + [
        [name, str(g["problems"]), _pct(g["greedy_pass@1"])] + [_pct(g["pass@k"].get(k)) for k in ks]
        + [_pct(g["n@k"].get(x)) for x in nks] for name, g in groups]
    return "\n".join("| " + " | ".join(r) + " |" for r in rows)


def render_markdown(report: dict[str, Any], title: str = "coderl evaluation") -> str:
    o = report["outcomes"]
    lines = [f"# {title}", "", "Percentages; pass@k with the unbiased estimator over the sampled "
             "programs; n@k: of k samples keep those passing the example tests, submit n.", "",
             pass_table(report), "", "## Outcomes", "", "| origin | " + " | ".join(OUTCOMES) + " |",
             "|---" * (len(OUTCOMES) + 1) + "|"]
    lines += [f"| {g} | " + " | ".join(str(o[g][x]) for x in OUTCOMES) + " |" for g in ("sampled", "greedy")]
    ov = report["overall"]
    lines += ["", f"- problems solved by at least one sample: {ov['solved_by_any']} / {ov['problems']}",
              f"- greedy solved: {ov['greedy_solved']}",
              f"- mean fraction of hidden tests passed (sampled): {_pct(ov['mean_test_fraction'])}%",
              f"- hack rate: {_pct(ov['hack_rate'])}% of the {ov['example_passing_programs']} programs "
              "that pass their example tests fail a hidden test"]
    if report["skipped_k"]:
        lines.append(f"- pass@k not reported for k = {report['skipped_k']} (fewer samples per problem)")
    lines += [f"- warning: {w}" for w in report.get("warnings", [])]
    if report["missing"]:
        lines.append(f"- {len(report['missing'])} problem(s) without results: "
                     + ", ".join(report["missing"][:10]) + (" ..." if len(report["missing"]) > 10 else ""))
    if report.get("plots"):
        lines += [""] + [f"![{Path(p).stem}]({Path(p).name})" for p in report["plots"]]
    if report.get("meta"):
        lines += ["", "## Run", "", "```json", json.dumps(report["meta"], indent=1), "```"]
    return "\n".join(lines) + "\n"


def write_plots(report: dict[str, Any], out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    ks = [int(k) for k in report["overall"]["pass@k"]]
    if ks:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for name, g in [("overall", report["overall"])] + list(report["by_source"].items()):
            if len(report["by_source"]) == 1 and name != "overall":
                continue
            ys = [100 * g["pass@k"][str(k)] for k in ks if g["pass@k"].get(str(k)) is not None]
            ax.plot(ks[:len(ys)], ys, marker="o", label=name)
        ax.set_xscale("log")
        ax.set_xticks(ks, [str(k) for k in ks])  # plain k labels, not 2x10^0
        ax.xaxis.set_minor_locator(plt.NullLocator())
        ax.set(xlabel="k", ylabel="pass@k (%)", title="pass@k")
        ax.grid(alpha=0.3)
        paths.append(_save(fig, ax, out_dir / "pass_at_k.png"))
    fig, ax = plt.subplots(figsize=(5, 3.5))
    width = 0.4
    for i, g in enumerate(("sampled", "greedy")):
        counts = report["outcomes"][g]
        total = max(sum(counts.values()), 1)
        ax.bar([x + i * width for x in range(len(OUTCOMES))],
               [100 * counts[o] / total for o in OUTCOMES], width, label=g)
    ax.set_xticks([x + width / 2 for x in range(len(OUTCOMES))], OUTCOMES, rotation=15)
    ax.set(ylabel="share of programs (%)", title="outcomes")
    paths.append(_save(fig, ax, out_dir / "outcomes.png"))
    return paths


def _save(fig, ax, path: Path) -> str:
    """Legend, tight layout, PNG at 100 dpi; the figure is closed."""
    import matplotlib.pyplot as plt

    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return str(path)


def _consistency_warnings(problems, results, origins, samples_path, results_path) -> list[str]:
    """Results outside the selection or without a sample, samples without a result (reported)."""
    ids = {p.id for p in problems}
    out = []
    outside = sorted({r["problem_id"] for r in results if r["problem_id"] not in ids})
    if outside:
        n = sum(r["problem_id"] not in ids for r in results)
        out.append(f"{results_path}: {n} result(s) of {len(outside)} problem(s) outside the selected "
                   f"{len(ids)} problems are not counted (e.g. {', '.join(outside[:3])}); evaluate with the "
                   "run's own selection (omit the problem options to use the one recorded beside the samples)")
    if samples_path:
        keys = {(r["problem_id"], r["index"]) for r in results}
        orphans = sorted(k for k in keys if k not in origins and k[0] in ids)
        if orphans:
            out.append(f"{results_path}: {len(orphans)} result(s) have no sample in {samples_path} "
                       f"(e.g. {orphans[0][0]} index {orphans[0][1]}); they count as sampled programs")
        unrun = sorted(k for k in origins if k not in keys and k[0] in ids)
        if unrun:
            out.append(f"{samples_path}: {len(unrun)} sample(s) have no result (e.g. {unrun[0][0]} index "
                       f"{unrun[0][1]}): run `coderl execute` again to complete the results")
    return out


def compare_reports(other: str | Path, report: dict[str, Any], out_path: str | Path,
                    config: EvalConfig) -> dict[str, Any]:
    """Every metric both runs report, ``this - other`` with a paired-bootstrap interval; saved."""
    other = Path(other)
    path = other / RunDir.REPORT_JSON if other.is_dir() else other
    if not path.is_file():
        raise FileNotFoundError(f"--compare {other}: no report.json there (run `coderl evaluate` on it first)")
    try:
        theirs = json.loads(path.read_text(encoding="utf-8"))
        b_stats = {pid: ProblemStats.from_dict(d) for pid, d in theirs["per_problem"].items()}
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a coderl report with per-problem records ({e}); re-run "
                         "`coderl evaluate` on that run") from None
    a_stats = {pid: ProblemStats.from_dict(d) for pid, d in report["per_problem"].items()}
    ks = sorted(set(config.ks))
    metrics = [m for m in available_metrics(a_stats, ks, config.n_at_k)
               if m in available_metrics(b_stats, ks, config.n_at_k)]
    diffs = compare_stats(b_stats, a_stats, metrics, resamples=config.resamples, seed=config.seed)
    common = len(set(a_stats) & set(b_stats))
    if not common:
        raise ConfigError(f"--compare {other}: its report has no problem in common with this run's "
                          f"({len(b_stats)} vs {len(a_stats)} problems, e.g. {next(iter(b_stats), None)!r} vs "
                          f"{next(iter(a_stats), None)!r}): compare runs of the same problems")
    out = {"this": str(Path(out_path).parent), "other": str(path), "common_problems": common,
           "resamples": config.resamples, "seed": config.seed, "differences": [d.to_dict() for d in diffs]}
    atomic_write_text(out_path, json.dumps(out, indent=1))
    return out


def compare_table(comparison: dict[str, Any]) -> str:
    rows = ["| metric | other | this | this - other | 95% interval | problems |", "|---|---|---|---|---|---|"]
    for d in comparison["differences"]:
        sig = " (excludes 0)" if d["significant"] else ""
        rows.append(f"| {d['metric']} | {_pct(d['a'])} | {_pct(d['b'])} | {_spct(d['diff'])} | "
                    f"[{_spct(d['low'])}, {_spct(d['high'])}]{sig} | {d['problems']} |")
    head = (f"Compared with {comparison['other']} on {comparison['common_problems']} common problems "
            f"(paired bootstrap, {comparison['resamples']} resamples, seed {comparison['seed']}); "
            "percentage points:")
    return head + "\n\n" + "\n".join(rows)


def _spct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:+.2f}"


def evaluate(problems: list[Problem], results_path: str | Path, out_dir: str | Path, config: EvalConfig | None = None,
             samples_path: str | Path | None = None, meta: dict | None = None) -> dict[str, Any]:
    """Compute the metrics and write report.json, report.md and plots into ``out_dir``."""
    config = config or EvalConfig()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = read_results(results_path)
    origins = {s.key: s.origin for s in read_samples(samples_path)} if samples_path else {}
    report = compute_metrics(problems, results, origins, config)
    report.update(warnings=_consistency_warnings(problems, results, origins, samples_path, results_path),
                  config=asdict(config), meta=meta or {})
    report["plots"] = write_plots(report, out_dir) if config.plots else []
    atomic_write_text(out_dir / RunDir.REPORT_JSON, json.dumps(report, indent=1))
    atomic_write_text(out_dir / RunDir.REPORT_MD, render_markdown(report))
    report["report_path"] = str(out_dir / RunDir.REPORT_MD)
    return report


def run(problems: list[Problem], run: RunDir, cfg: EvalConfig, ctx) -> dict[str, Any]:
    """The stage contract (:mod:`coderl.stage`): the run's results (and samples) -> its report."""
    gen = ctx.run_meta.get("generation")
    meta = {"name": ctx.run_meta.get("name", run.root.name), "problems": len(problems),
            **({"model": gen.model, "generation": {k: v for k, v in asdict(gen).items() if k != "progress"}}
               if gen is not None else {}),
            "generation_summary": ctx.summaries.get("generate", {}),
            "isolation": ctx.summaries.get("execute", {}).get("isolation"),
            **{f"{k}_s": v for k, v in ctx.run_meta.get("timings", {}).items()}}
    samples = run.samples if run.samples.is_file() else None
    report = evaluate(problems, run.results, run.root, cfg, samples_path=samples, meta=meta)
    for w in report.get("warnings", []):
        ctx.echo(f"warning: {w}")
    ctx.echo("")
    ctx.echo(pass_table(report))
    if cfg.compare:
        comparison = compare_reports(cfg.compare, report, run.report_compare, cfg)
        ctx.echo("")
        ctx.echo(compare_table(comparison))
    ctx.echo("")
    ctx.echo(f"report: {report['report_path']}  (json: {run.report_json})")
    return report


show = None  # the stage echoes its report itself
