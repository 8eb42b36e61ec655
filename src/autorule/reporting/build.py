"""Build the HTML report from a run directory's artefacts.

Looks for, in RUN_DIR or its `extract/` and `grpo/` subdirectories: `run.json` and
`rules.yaml` (extraction), `validation.json` (beside the rules), `metrics.jsonl` (the
training monitor), `quickstart.json` and `rm/autorule_rm.json`. Whatever is missing is
shown as missing, not guessed.
"""

from __future__ import annotations

import base64
import html
import io
import json
import time
from pathlib import Path
from string import Template

from autorule.display import clip, percent
from autorule.errors import InputError
from autorule.reporting.timeline import timeline_html
from autorule.rules import RuleSet
from autorule.rules.show import find_pairs, pairs_file_for

TEMPLATE = Template((Path(__file__).parent / "template.html").read_text(encoding="utf-8"))


class ReportError(InputError):
    pass


def _first(*paths: Path) -> Path | None:
    return next((p for p in paths if p.exists()), None)


def _json(path: Path | None):
    return json.loads(path.read_text()) if path and path.is_file() else None


def _e(value) -> str:
    return html.escape(str(value))


def _pct(x) -> str:
    return percent(x, missing="&ndash;")


def _icai_cards(validation: dict | None) -> list[tuple[str, str]]:
    """The ICAI protocol's figures beside the rule-set accuracy: the no-rules judge and the flipped-label
    control (mean ± s.d. with several seeds); none for a validation.json written before them.

    Example:
        >>> icai = {"no_rules_judge": True, "summary": {"no_rules": {"mean": 0.5, "sd": 0.1}, "rule_set_flipped": {"mean": 0.2, "sd": None}}}
        >>> _icai_cards({"icai": icai})
        [('no-rules judge', '50.0% &plusmn; 10.0'), ('rule set, flipped labels', '20.0%')]
    """
    icai = (validation or {}).get("icai")
    if not icai:
        return []

    def fig(f: dict) -> str:
        sd = f" &plusmn; {100 * f['sd']:.1f}" if f.get("sd") is not None else ""
        return percent(f["mean"], 1) + sd if f.get("mean") is not None else "&ndash;"

    summary = icai["summary"]
    cards = [("no-rules judge", fig(summary["no_rules"]))] if icai.get("no_rules_judge") else []
    return cards + [("rule set, flipped labels", fig(summary["rule_set_flipped"]))]


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _figure(fig, caption: str, ident: str) -> str:
    return f'<figure id="{ident}"><img alt="{_e(caption)}" src="data:image/png;base64,{_png(fig)}"><figcaption>{_e(caption)}</figcaption></figure>'


def agreement_chart(rules: RuleSet, stats: dict[str, dict]) -> str | None:
    import matplotlib.pyplot as plt

    rows = [(r, stats.get(r.id, {})) for r in rules.rules]
    rows = [(r, s) for r, s in rows if s.get("agreement") is not None]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) + 1.2))
    labels = [clip(r.text.removeprefix("The assistant's response should "), 55) for r, _ in rows]
    values = [s["agreement"] for _, s in rows]
    low = [s["agreement"] - (s.get("ci_low") if s.get("ci_low") is not None else s["agreement"]) for _, s in rows]
    high = [(s.get("ci_high") if s.get("ci_high") is not None else s["agreement"]) - s["agreement"] for _, s in rows]
    ax.barh(range(len(rows)), values, xerr=[low, high], color="#54aeff", ecolor="#24292f", capsize=3)
    ax.axvline(0.5, color="#cf222e", linestyle="--", linewidth=1)
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("agreement with the preference (95% Wilson interval); dashed: chance")
    return _figure(fig, "Per-rule agreement on held-out pairs", "chart-agreement")


def training_charts(metrics: list[dict]) -> list[str]:
    import matplotlib.pyplot as plt

    if not metrics:
        return []
    steps = [m["step"] for m in metrics]
    out = []
    fig, ax = plt.subplots(figsize=(9, 3.6))
    for key, label in (("rm_reward", "RM reward"), ("rule_reward", "rule reward"), ("total_reward", "total reward"),
                       ("gold_reward", "gold monitor (not rewarded)")):
        values = [m.get(key) for m in metrics]
        if any(v is not None for v in values):
            ax.plot(steps, [v if v is not None else float("nan") for v in values], marker="o", label=label)
    held = [(m["step"], m["heldout_score"]) for m in metrics if m.get("heldout_score") is not None]
    if held:
        ax.plot(*zip(*held), marker="s", linestyle=":", label="held-out score")
    ax.set_xlabel("step")
    ax.legend(loc="upper left", fontsize=8)
    lengths = [m.get("length") for m in metrics]
    if any(v is not None for v in lengths):
        twin = ax.twinx()
        twin.plot(steps, [v if v is not None else float("nan") for v in lengths], color="#8c959f", linestyle="--", label="length")
        twin.set_ylabel("mean length (tokens)")
        twin.legend(loc="upper right", fontsize=8)
    out.append(_figure(fig, "Training curves: rewards and response length per step", "chart-training"))

    rule_ids = sorted({rid for m in metrics for rid in m.get("pass_rates", {})})
    if rule_ids:
        fig, ax = plt.subplots(figsize=(9, 3.6))
        for rid in rule_ids:
            ax.plot(steps, [m.get("pass_rates", {}).get(rid, float("nan")) for m in metrics], marker=".", label=rid)
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel("step")
        ax.set_ylabel("pass rate")
        ax.legend(fontsize=7, ncol=3, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        out.append(_figure(fig, "Each rule's pass rate over training", "chart-pass-rates"))

    defences = [(key, label) for key, label in (("vetoed", "completions vetoed"), ("dropped_rules", "rules dropped per completion"),
                                                ("active_rules", "active rules"))
                if any(m.get(key) is not None for m in metrics)]
    if defences:
        fig, ax = plt.subplots(figsize=(9, 3.0))
        for key, label in defences:
            ax.plot(steps, [m[key] if m.get(key) is not None else float("nan") for m in metrics], marker=".", label=label)
        ax.set_xlabel("step")
        ax.legend(fontsize=8, loc="upper left")
        out.append(_figure(fig, "Vetoes, rule dropout and the active rule set per step", "chart-defences"))
    return out


def _source_html(sources) -> str:
    from autorule.rules.show import shorten

    return "".join(
        f"<li class='source'>pair <code>{_e(s.pair_id)}</code><dl>"
        + "".join(f"<dt>{k}</dt><dd>{_e(shorten(t, 400))}</dd>" for k, t in
                  (("prompt", s.prompt), ("chosen", s.chosen), ("rejected", s.rejected), ("candidate", s.candidate), ("reasoning", s.reasoning)))
        + "</dl></li>"
        for s in sources
    )


def rules_table(rules: RuleSet, stats: dict[str, dict], pairs: dict[str, dict] | None = None) -> str:
    """The rules with their statistics; each row opens onto its lint flags and provenance:
    up to three source pairs' texts (from `pairs`, pair id -> record) and every candidate."""
    from autorule.rules.show import rule_sources

    head = "<tr><th>#</th><th>rule</th><th>support</th><th>agreement [95% CI]</th><th>n</th><th>coverage</th><th>weight</th></tr>"
    rows = []
    for i, r in enumerate(rules.rules, start=1):
        s = stats.get(r.id, {})
        agreement = f"{_pct(s.get('agreement'))} [{_pct(s.get('ci_low'))}, {_pct(s.get('ci_high'))}]" if s else "&ndash;"
        weight = s.get("learned_weight")
        weight_text = f"{r.weight:.2f}" + (f" <span title='learned coefficient'>(fit {weight:.2f})</span>" if weight is not None else "")
        badges = "".join(f" <span class='lint' title='{_e(f.reason)}'>{_e(f.code)}</span>" for f in r.lint)
        lint = ("<div class='lint-reasons'>lint: <ul>" + "".join(f"<li><b>{_e(f.code)}</b>: {_e(f.reason)}</li>" for f in r.lint) + "</ul></div>") if r.lint else ""
        sources = _source_html(rule_sources(r, pairs or {}))
        sources_html = f"<div>source pairs:</div><ul class='sources'>{sources}</ul>" if sources else ""
        prov = "".join(
            f"<li>pair <code>{_e(c.pair_id)}</code>: &ldquo;{_e(c.text)}&rdquo;<br><small>reasoning: {_e(clip(c.excerpt, 300))}</small></li>"
            for c in r.candidates[:20]
        )
        more = f"<li>&hellip; and {len(r.candidates) - 20} more candidates</li>" if len(r.candidates) > 20 else ""
        details = (f"<details><summary>{_e(r.text)}{badges}</summary><div class='prov'>{lint}<div>id <code>{_e(r.id)}</code>; source pairs: "
                   f"{', '.join(f'<code>{_e(p)}</code>' for p in r.pairs) or 'none recorded'}</div>{sources_html}"
                   f"<div>candidates:</div><ul>{prov}{more}</ul></div></details>")
        marked = f" data-lint='{_e(','.join(f.code for f in r.lint))}'" if r.lint else ""
        rows.append(f"<tr class='rule-row'{marked}><td class='num'>{i}</td><td>{details}</td><td class='num'>{r.support}</td><td class='num'>{agreement}</td>"
                    f"<td class='num'>{s.get('n', '&ndash;')}</td><td class='num'>{_pct(s.get('coverage'))}</td><td class='num'>{weight_text}</td></tr>")
    flagged = sum(1 for r in rules.rules if r.lint)
    note = (f"<p class='lint-note'>{flagged} of {len(rules)} rules are flagged by the linter (hover a flag for its reason; "
            f"<code>autorule rules lint</code>).</p>") if flagged else ""
    return f"{note}<table id='rule-table'><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"


def comparison_html(diff, name_a: str, name_b: str) -> str:
    """A `RuleDiff` as a table: matched rules side by side with their similarity (and agreement), then the unique ones."""
    counts = diff.to_dict()["counts"]
    rows = []
    for m in diff.matches:
        agreement = f"{m.agreement:.0%} of {m.n}" if m.agreement is not None else "&ndash;"
        sim = f"{m.similarity:.2f}" if m.similarity is not None else "&ndash;"
        rows.append(f"<tr class='diff-{m.kind}'><td>{m.kind}</td><td>{_e(m.a.text) if m.a else ''}</td><td>{_e(m.b.text) if m.b else ''}</td>"
                    f"<td class='num'>{sim}</td><td class='num'>{agreement}</td></tr>")
    return (f"<p>{_e(name_a)} against {_e(name_b)}: {counts['shared']} shared, {counts['similar']} similar, {counts['only-a']} only in the first, "
            f"{counts['only-b']} only in the second (matched one to one by embedding).</p><table id='diff-table'><thead><tr><th>kind</th>"
            f"<th>{_e(name_a)}</th><th>{_e(name_b)}</th><th>similarity</th><th>same verdict</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")


def _refresh_records(run_dir: Path) -> list[dict]:
    """The online rule refresh's records beside the metrics (none without it)."""
    from autorule.train.refresh import read_records

    try:
        return read_records(run_dir)
    except ValueError as e:
        raise ReportError(str(e)) from None


def build_report(run_dir: str | Path, out: str | Path | None = None, compare: str | Path | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir}: no such run directory")
    extract_dir = _first(run_dir / "rules.yaml", run_dir / "extract" / "rules.yaml")
    rules_path = extract_dir
    extract_dir = extract_dir.parent if extract_dir else None
    metrics_path = _first(run_dir / "grpo" / "metrics.jsonl", run_dir / "metrics.jsonl")
    if rules_path is None and metrics_path is None:
        raise ReportError(f"{run_dir}: no rules.yaml and no metrics.jsonl here or in extract/ and grpo/: nothing to report")
    if rules_path is None and metrics_path is not None:  # a training run: the rules it trained with, as its config names them
        config = _json(metrics_path.parent / "train_config.json") or {}
        trained = Path(config["rules"]) if config.get("rules") else None
        rules_path = trained if trained is not None and trained.is_file() else None
    rules = RuleSet.load(rules_path) if rules_path else RuleSet()
    pairs_file = pairs_file_for(rules_path) if rules_path else None
    pairs = find_pairs(pairs_file, {c.pair_id for r in rules.rules for c in r.candidates[:20]}) if pairs_file else {}
    comparison = ""
    if compare is not None:
        from autorule.rules.diff import diff_rules

        other = RuleSet.load(compare)
        comparison = "<section id='comparison'><h2>Compared with another rule set</h2>" + comparison_html(diff_rules(rules, other), str(rules_path), str(compare)) + "</section>"
    run = _json(extract_dir / "run.json") if extract_dir else None
    validation = _json(extract_dir / "validation.json") if extract_dir else None
    stats = {r["id"]: r for r in validation.get("rules", [])} if validation else {}
    metrics = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()] if metrics_path else []
    rm = _json(_first(run_dir / "rm" / "autorule_rm.json"))
    summary = _json(_first(run_dir / "quickstart.json"))

    counts = (run or {}).get("counts", {})
    cards = [
        ("pairs used", counts.get("pairs", "&ndash;")),
        ("candidate rules", counts.get("candidates", "&ndash;")),
        ("final rules", len(rules)),
        ("rule-set accuracy", _pct(validation["accuracy"]) if validation else "&ndash;"),
        *_icai_cards(validation),
        ("RM held-out accuracy", _pct(rm["eval_accuracy"]["accuracy"]) if rm and rm.get("eval_accuracy") else "&ndash;"),
        ("GRPO steps", len(metrics) or "&ndash;"),
    ]
    cards_html = "".join(f"<div class='card'><div class='v'>{v}</div><div class='k'>{_e(k)}</div></div>" for k, v in cards)

    charts = [c for c in [agreement_chart(rules, stats)] if c] + training_charts(metrics)
    charts_html = "".join(charts) or "<p class='empty'>No validation statistics or training metrics in this run.</p>"
    charts_html += timeline_html(_refresh_records(metrics_path.parent)) if metrics_path else ""
    warnings = [w for m in metrics for w in (f"step {m['step']}: {msg}" for msg in m.get("warnings", []))]
    warnings_html = "".join(f"<div class='warn'>{_e(w)}</div>" for w in warnings) if warnings else (
        "<p>No warnings: the RM reward never rose while the rule reward or held-out score fell.</p>" if metrics else "<p class='empty'>No training run.</p>")

    meta_rows = []
    if run:
        fp = run.get("fingerprint", {})
        data = run.get("data", {})
        meta_rows += [
            ("data", f"{data.get('path')} ({data.get('format')}; {data.get('pairs')} pairs, skipped: {data.get('skipped') or 'none'})"),
            ("extraction model", fp.get("model")), ("merge model", fp.get("merge_model")),
            ("extract from", fp.get("extract_from")), ("seed", fp.get("seed")),
            ("failures", counts.get("failures") or "none"), ("merge fallbacks", counts.get("merge_failures")),
            ("tokens", "; ".join(f"{k}: {v['prompt']} in / {v['completion']} out" for k, v in counts.get("tokens", {}).items())),
            ("LLM calls", run.get("llm_stats")), ("extraction time", f"{run.get('seconds')} s"), ("status", run.get("status")),
        ]
    if validation:
        meta_rows += [("validation", f"{validation['pairs']} held-out pairs; verifier {validation['verifier']}; preset {validation['preset']}; "
                                     f"learned-weight CV accuracy {_pct(validation['learned_weights']['cv_accuracy'])}")]
    if rm:
        meta_rows += [("reward model", f"base {rm.get('base')}; {rm.get('train_pairs')} training pairs; score mean {rm['mean']:.3f}, std {rm['std']:.3f}")]
    if summary:
        meta_rows += [("quickstart time", f"{summary.get('seconds')} s")]
    metadata_html = "<dl>" + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in meta_rows) + "</dl>" if meta_rows else "<p class='empty'>No run record.</p>"

    page = TEMPLATE.substitute(
        title=_e(run_dir.resolve().name), generated=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), cards=cards_html,
        rules_table=(rules_table(rules, stats, pairs) if rules.rules else "<p class='empty'>No rules in this run.</p>") + comparison,
        charts=charts_html, warnings=warnings_html, metadata=metadata_html,
    )
    path = Path(out) if out else run_dir / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
