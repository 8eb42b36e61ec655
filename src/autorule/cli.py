"""The `autorule` command."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from rich.console import Console

from . import __version__, jsonsafe
from .bench.cli import add_bench_parsers
from .settings import Parser, model_spec, number, prices, whole

# errors and progress go to stderr; stdout stays machine-readable with --json
err = Console(stderr=True)
out = Console()

EXIT_BAD_INPUT = 2
# `score` / `validate`: every response failed (the verifier's server refused or failed each one)
EXIT_ALL_FAILED = 3


def _add_data_options(p: argparse.ArgumentParser) -> None:
    from .data import FORMATS

    p.add_argument("--format", default="auto", choices=["auto", *FORMATS], help="input format (default: detect)")
    p.add_argument("--on-bad-row", default="error", choices=["error", "skip"], help="stop at the first bad row (default) or skip and count bad rows")
    p.add_argument("--prompt-column", default="prompt", help="column holding the prompt (pairs format)")
    p.add_argument("--chosen-column", default="chosen", help="column holding the chosen reply")
    p.add_argument("--rejected-column", default="rejected", help="column holding the rejected reply")
    p.add_argument("--answer-a-column", default=None, help="two answers and a label (--format ab): the first answer's column (default: found from names and values)")
    p.add_argument("--answer-b-column", default=None, help="two answers and a label: the second answer's column")
    p.add_argument("--label-column", default=None,
                   help="the column that says which answer won (or one-hot columns A,B[,TIE]); e.g. safer_response_id for PKU-SafeRLHF; "
                        "'none': a pairs file's label-like column is not a preference label")
    p.add_argument("--label-meaning", type=_label_meaning, default=None, metavar="MEANING",
                   help="what the label's values say: ab (A/B names), index0 (0 = first answer), index1 (1 = first answer), "
                        "sign (negative = first answer, 0 = tie), reverse-sign, onehot, or a map such as 0=b,1=a,2=tie "
                        "(default: the named layout's; a column of only 0 and 1 must be told)")
    p.add_argument("--ranked-pairs", default="best-vs-rest", choices=["best-vs-rest", "adjacent", "all"],
                   help="pairs from ranked answers (Nectar): the best against each other (default), each against the next, or all")
    p.add_argument("--tie-threshold", type=number(0, 0.5), default=0.1, help="AlpacaEval: skip pairs with |preference - 1.5| below this")
    p.add_argument("--split", default="train", help="split, for Hugging Face dataset names")
    p.add_argument("--limit", type=whole(1), default=None, help="stop after this many pairs")


def _label_meaning(text: str) -> str:
    from .labels import LabelError, parse_label_meaning

    try:
        parse_label_meaning(text)
    except LabelError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _add_cache_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache", default=None, help="SQLite cache file (default: ~/.cache/autorule/cache.sqlite or $AUTORULE_CACHE)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the LLM cache")


def load_data(args: argparse.Namespace, lazy: bool = True):
    """The command's pairs: read lazily (a `PairStream`, so a command never holds a whole
    file), or with `lazy=False` loaded (a `LoadResult`)."""
    from .data import Columns, load_pairs, stream_pairs

    return (stream_pairs if lazy else load_pairs)(
        args.data,
        args.format,
        columns=Columns(args.prompt_column, args.chosen_column, args.rejected_column, answer_a=args.answer_a_column, answer_b=args.answer_b_column,
                        label=args.label_column, label_meaning=args.label_meaning, ranked_pairs=args.ranked_pairs),
        on_bad_row=args.on_bad_row,
        tie_threshold=args.tie_threshold,
        limit=args.limit,
        split=args.split,
    )


def open_cache(args: argparse.Namespace):
    from .cache import DEFAULT_CACHE_PATH, Cache

    if args.no_cache:
        return None
    return Cache(args.cache or DEFAULT_CACHE_PATH)


def llm_options(args: argparse.Namespace, spec: str | None = None) -> dict:
    opts: dict = {}
    if (spec or args.model).startswith("openai:"):
        opts = {"concurrency": args.concurrency, "timeout": args.timeout, "max_retries": args.max_retries}
        if args.api_key:
            opts["api_key"] = args.api_key
        if getattr(args, "extra_body", None):
            opts["extra_body"] = args.extra_body
        if getattr(args, "max_input_tokens", None):
            opts["max_input_tokens"] = args.max_input_tokens
    return opts


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not JSON: {e}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object, e.g. '{\"chat_template_kwargs\": {\"enable_thinking\": false}}'")
    return value


def _add_server_options(p: argparse.ArgumentParser, what: str) -> None:
    """Options for openai: specs, the same in every command."""
    p.add_argument("--api-key", default=None, help=f"API key for an openai: {what} (default: $OPENAI_API_KEY)")
    p.add_argument("--concurrency", type=whole(1), default=None,
                   help="most requests in flight to a server (default: the server's slot count where it reports one, as llama-server does, else 16); lowered automatically while the server is overloaded")
    p.add_argument("--timeout", type=number(0, above=True), default=None,
                   help="seconds per request to a server, time queued in the server included (default: 600, enough for a CPU server)")
    p.add_argument("--max-retries", type=whole(0, 100), default=6, help="retries per request on transient faults, with backoff and jitter (default: %(default)s)")
    p.add_argument("--extra-body", type=_json_object, default=None, metavar="JSON",
                   help='JSON fields sent with every request, e.g. \'{"chat_template_kwargs": {"enable_thinking": false}}\' (Qwen3 on vLLM/SGLang)')


def _add_plan_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--plan", action="store_true",
                   help="print the plan (LLM calls per stage, tokens, cache hits, estimated time and cost) and stop; every run prints it before it starts")
    p.add_argument("--price-per-mtok", type=prices, default=None, metavar="IN,OUT", help="API prices per million input and output tokens, for the plan's cost")


def _show_plan(make_plan, args: argparse.Namespace) -> bool:
    """Print the plan before work; True when the command should stop there (--plan)."""
    plan = make_plan(probe=args.plan)
    plan.render(err)
    if args.plan and getattr(args, "json", False):
        print(jsonsafe.dumps(plan.to_dict()))
    return args.plan


def _add_model_options(p: argparse.ArgumentParser, default: str = "embedded") -> None:
    p.add_argument("--model", type=model_spec, default=default, help="model spec: embedded, hf:PATH, gguf:FILE or openai:MODEL@BASE_URL (default: %(default)s)")
    _add_server_options(p, "model")


# --------------------------------------------------------------------------- commands


def cmd_data_inspect(args: argparse.Namespace) -> int:
    from rich.markup import escape

    result = load_data(args)
    sample = []
    for pair in result:  # one pass; only the sample is kept
        if len(sample) < args.sample:
            sample.append(pair)
    summary = result.summary()
    if result.examples:
        summary["skipped_examples"] = [{"row": r, "reason": why} for r, why in result.examples]
    if args.json:
        summary["sample"] = [p.model_dump() for p in sample]
        print(jsonsafe.dumps(summary, ensure_ascii=False))
        return 0
    out.print(f"[bold]{result.path}[/bold]")
    out.print(f"format: [cyan]{summary['format']}[/cyan]   rows read: {result.rows}   pairs: [green]{summary['pairs']}[/green]")
    if result.skipped:
        out.print("skipped:")
        for reason, n in result.skipped.most_common():
            out.print(f"  {n:>6}  {reason}")
        for row, why in result.examples:
            out.print(f"          e.g. row {row}: {why}", style="dim")
    else:
        out.print("skipped: none")
    for note, n in summary.get("notes", {}).items():
        out.print(f"note: {n:>6}  {note}", style="dim")
    for p in sample:
        out.rule(f"pair {p.id} (row {p.row})")
        # the whole conversation: every shared turn, then each side's own turns before its final reply
        for m in p.prompt:
            out.print(f"[bold]{m.role}:[/bold] {escape(_short(m.content))}", highlight=False)
        for side, history, reply, colour in (("chosen", p.chosen_history, p.chosen, "green"), ("rejected", p.rejected_history, p.rejected, "red")):
            for m in history:
                out.print(f"[{colour}]{side} side[/{colour}] [bold]{m.role}:[/bold] {escape(_short(m.content))}", highlight=False)
            out.print(f"[{colour}]{side}:[/{colour}] {escape(_short(reply))}", highlight=False)
    return 0


def _short(text: str, n: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def cmd_llm_generate(args: argparse.Namespace) -> int:
    from .llm import ChatRequest, load_llm

    llm = load_llm(args.model, cache=open_cache(args), **llm_options(args))
    req = ChatRequest([{"role": "user", "content": args.prompt}], max_tokens=args.max_tokens, temperature=args.temperature)
    c = llm.generate([req])[0]
    if args.json:
        print(jsonsafe.dumps(c.to_dict(), ensure_ascii=False))
    else:
        if c.reasoning:
            out.print(f"[dim]reasoning:[/dim] {c.reasoning}")
        out.print(c.text)
        err.print(f"[dim]finish: {c.finish_reason}, tokens: {c.usage.prompt_tokens} in / {c.usage.completion_tokens} out{', cached' if c.cached else ''}[/dim]")
    return 0


def cmd_llm_score(args: argparse.Namespace) -> int:
    from .llm import load_llm

    llm = load_llm(args.model, cache=open_cache(args), **llm_options(args))
    probs = llm.score_yes_no(args.prefix, args.questions)
    if args.json:
        print(jsonsafe.dumps({"p_yes": probs}))  # an unread verdict is null
    else:
        for q, p in zip(args.questions, probs):
            out.print(f"{p:.3f}  {q}")
    return 0


def cmd_extract(args: argparse.Namespace) -> int:
    from .extraction.run import ExtractConfig, print_summary, run_extract
    from .llm import load_llm

    data = load_data(args)
    cache = open_cache(args)
    llm = load_llm(args.model, cache=cache, **llm_options(args))
    merge_llm = llm if not args.merge_model or args.merge_model == args.model else load_llm(args.merge_model, cache=cache, **llm_options(args, args.merge_model))
    out_dir = Path(args.out or f"runs/extract-{Path(args.data).name.split('.')[0]}")
    config = ExtractConfig(
        seed=args.seed,
        extract_from=args.extract_from,
        target_rules=args.target_rules,
        max_cluster=args.max_cluster,
        reasoning_tokens=args.reasoning_tokens,
        rules_tokens=args.rules_tokens,
        merge_tokens=args.merge_tokens,
        max_input_tokens=args.max_input_tokens,
        max_refused_share=args.max_refused_share,
    )
    from .plan import plan_extract

    stop = _show_plan(lambda probe: plan_extract(data, llm, merge_llm, config, price_per_mtok=args.price_per_mtok, probe=probe), args)
    _report_skips(data)  # counted by the plan's pass over the data
    if stop:
        return 0
    result = run_extract(data, llm, merge_llm, out_dir, config, overwrite=args.overwrite, progress=True, retry_refused=args.retry_refused)
    print_summary(result.run_dir, result.summary, err)
    if args.json:
        print(jsonsafe.dumps({"run_dir": str(result.run_dir), "rules_file": str(result.run_dir / "rules.yaml"), **result.summary}))
    return 0


def _report_skips(data) -> None:
    if data.skipped:
        what = ", ".join(f"{n} {reason}" for reason, n in data.skipped.most_common())
        err.print(f"[yellow]skipped {sum(data.skipped.values())} of {data.rows} rows:[/yellow] {what}")


def _add_reward_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rules", required=True, metavar="RULES", help="rules file (rules.yaml from `autorule extract`)")
    p.add_argument("--verifier", type=model_spec, default="embedded", help="verifier model spec (default: %(default)s)")
    p.add_argument("--preset", default="default", choices=["default", "ternary", "paper"], help="reward preset (paper: RM + 10 x (fraction - 0.75), clipped)")
    p.add_argument("--rm", default=None, metavar="DIR", help="reward model (Hugging Face sequence-classification directory)")
    p.add_argument("--threshold", type=number(0, 1), default=0.5, help="P(Yes) at or above which a verdict counts as satisfied")
    _add_server_options(p, "verifier")
    p.add_argument("--max-unparsed", type=number(0, 1), default=0.2, metavar="SHARE",
                   help="stop when more than this share of rule checks get no readable Yes/No, e.g. from a verifier that thinks first (default: %(default)s); unparsed checks are always left out of rewards and counted")
    p.add_argument("--max-input-tokens", type=whole(64), default=None, metavar="N",
                   help="prompt tokens one verifier request may hold; longer conversations are cut in the middle (default: the server's context per slot where it reports one, else 8192)")
    _add_cache_options(p)


def build_scorer(args: argparse.Namespace):
    from .llm import load_llm
    from .reward import RewardModel, RewardScorer
    from .rules import RuleSet

    rules = RuleSet.load(args.rules)
    llm = load_llm(args.verifier, cache=open_cache(args), **llm_options(args, args.verifier))
    rm = RewardModel(args.rm) if args.rm else None
    return RewardScorer(rules, llm, args.preset, rm=rm, threshold=args.threshold, max_input_tokens=args.max_input_tokens, max_unparsed=args.max_unparsed,
                        judge_reasoning=getattr(args, "judge_reasoning", False), empty_rule_reward=getattr(args, "empty_rule_reward", 0.0))


def _add_completion_options(p: argparse.ArgumentParser) -> None:
    """How a response is read before it is judged (`score`, `serve`)."""
    p.add_argument("--judge-reasoning", action="store_true",
                   help="judge a response's reasoning too (<think>...</think> and the like); by default only the answer after it is judged, and the characters cut are counted")
    p.add_argument("--empty-rule-reward", type=number(0, 1), default=0.0, metavar="FRACTION",
                   help="rule reward (fraction satisfied, before the preset composes it) of a response with nothing to judge: empty, whitespace, or cut off while reasoning (default: %(default)s, the lowest); not sent to the verifier, counted")


# responses scored (and written) at a time by `score`; even, so a pair's two sides share a chunk
SCORE_CHUNK = 1024


def cmd_score(args: argparse.Namespace) -> int:
    import numpy as np

    from tqdm.auto import tqdm

    from .data import chunked
    from .llm.base import describe_llm_stats
    from .plan import plan_checks
    from .verifier import Verdicts

    scorer = build_scorer(args)
    items = _ScoreItems(args)  # re-iterable (id, side, conversation), read lazily
    if _show_plan(lambda probe: plan_checks("verify", scorer.verifier, (c for _, _, c in items), price_per_mtok=args.price_per_mtok, probe=probe), args):
        return 0
    if items.pairs is not None:
        _report_skips(items.pairs)
    out_path = Path(args.out) if args.out else None
    if out_path:
        out_path.parent.mkdir(parents=True, exist_ok=True)
    sink = out_path.open("w", encoding="utf-8") if out_path else None
    # responses are scored a chunk at a time and their rows written at once; only each
    # response's verdicts and rewards are kept, for the summary
    parts: list[Verdicts] = []
    totals, rule_rewards, sides = [], [], []
    cut: list = []  # per chunk: reasoning characters cut, empty responses
    try:
        with tqdm(total=items.count, desc="verifying", unit="resp", file=sys.stderr) as bar:
            for chunk in chunked(items, SCORE_CHUNK):
                scores = scorer.score([c for _, _, c in chunk], on_item=lambda: bar.update(1))
                parts.append(scores.verdicts)
                totals.append(scores.total)
                rule_rewards.append(scores.rule)
                cut.append((scores.reasoning_chars, scores.empty))
                sides.extend(side for _, side, _ in chunk)
                lines = "".join(jsonsafe.dumps(row, ensure_ascii=False) + "\n" for row in _score_rows(chunk, scores))
                if sink:
                    sink.write(lines)
                elif not args.json:
                    sys.stdout.write(lines)
    finally:
        if sink:
            sink.close()
    verdicts = Verdicts.concat(parts)
    total, rule = np.concatenate(totals), np.concatenate(rule_rewards)
    ok = [i for i in range(len(total)) if i not in verdicts.errors]
    stats = dict(scorer.verifier.llm.stats)
    summary = {
        "responses": len(total),
        "failed": len(verdicts.errors),
        "unparsed_checks": verdicts.unparsed,
        "mean_reward": float(np.mean(total[ok])) if ok else None,
        "mean_rule_reward": float(np.mean(rule[ok])) if ok else None,
        "pass_rates": verdicts.pass_rates(),
        "llm_stats": stats,
        **({"failure_reasons": _failure_reasons(verdicts.errors)} if verdicts.errors else {}),
        **_completion_counts(cut, scorer),
    }
    if "chosen" in sides:
        chosen = rule[[i for i, s in enumerate(sides) if s == "chosen"]]
        rejected = rule[[i for i, s in enumerate(sides) if s == "rejected"]]
        both = ~np.isnan(chosen) & ~np.isnan(rejected)
        summary["pairs"] = int(both.sum())
        summary["chosen_preferred"] = float((chosen[both] > rejected[both]).mean()) if both.any() else None
        summary["ties"] = float((chosen[both] == rejected[both]).mean()) if both.any() else None
    if args.json:
        print(jsonsafe.dumps(summary))
    else:
        mean = "-" if summary["mean_rule_reward"] is None else f"{summary['mean_rule_reward']:.3f}"
        err.print(f"scored {len(ok)} of {len(total)} responses against {len(scorer.rules)} rules; mean rule reward {mean}" + (f"; written to {out_path}" if out_path else ""), soft_wrap=True)
        if verdicts.errors:
            first = next(iter(verdicts.errors.values()))
            err.print(f"[yellow]{len(verdicts.errors)} responses failed[/yellow] (rows with an \"error\"), e.g.: {first}", soft_wrap=True)
        if summary["unparsed_checks"]:
            err.print(f"[yellow]{summary['unparsed_checks']} checks had no readable Yes/No[/yellow]; they are left out of the rule reward", soft_wrap=True)
        if summary["reasoning_chars_stripped"] or summary["empty_responses"]:
            err.print(f"judged the answers only: {summary['reasoning_chars_stripped']} characters of reasoning cut from "
                      f"{summary['responses_with_reasoning_cut']} responses (--judge-reasoning keeps them); {summary['empty_responses']} "
                      f"responses had nothing to judge (rule reward {scorer.empty_rule_reward}, not sent to the verifier)", soft_wrap=True)
        if summary.get("pairs"):
            err.print(f"chosen side has the higher rule reward in {summary['chosen_preferred']:.1%} of {summary['pairs']} pairs ({summary['ties']:.1%} ties)")
        err.print(f"verifier: {describe_llm_stats(stats)}", soft_wrap=True)
    if verdicts.errors and len(verdicts.errors) == len(total):
        return _all_failed(len(total), summary["failure_reasons"])
    return 0


def _failure_reasons(errors: dict[int, str], n: int = 5) -> dict[str, int]:
    """The most common reasons responses failed, with their counts (most common first)."""
    from collections import Counter

    return dict(Counter(errors.values()).most_common(n))


def _all_failed(responses: int, reasons: dict[str, int]) -> int:
    """Every response failed: say why (the first reasons) and exit with EXIT_ALL_FAILED."""
    err.print(f"[red]error:[/red] all {responses} responses failed; no reward was computed. Reasons:", highlight=False, soft_wrap=True)
    for reason, n in reasons.items():
        err.print(f"  {n} x {reason}", highlight=False, soft_wrap=True)
    return EXIT_ALL_FAILED


def _completion_counts(cut: list, scorer) -> dict:
    """What `score` cut from responses before judging them, for the summary."""
    import numpy as np

    chars = np.concatenate([c for c, _ in cut]) if cut else np.zeros(0, dtype=int)
    empty = np.concatenate([e for _, e in cut]) if cut else np.zeros(0, dtype=bool)
    return {"judge_reasoning": scorer.judge_reasoning, "reasoning_chars_stripped": int(chars.sum()),
            "responses_with_reasoning_cut": int((chars > 0).sum()), "empty_responses": int(empty.sum())}


def _score_rows(chunk: list, scores) -> list[dict]:
    """One output row per response: rewards and verdicts, or its error."""
    unparsed = scores.unparsed_per_response()
    ids = scores.verdicts.rule_ids
    rows = []
    for i, (item_id, side, _) in enumerate(chunk):
        head = {"id": item_id, **({"side": side} if side else {})}
        if i in scores.errors:  # refused by the verifier's server: a failed row with its reason
            rows.append({**head, "error": scores.errors[i]})
            continue
        rows.append({
            **head,
            "reward": float(scores.total[i]),
            "rule_reward": float(scores.rule[i]),
            **({"rm": float(scores.rm[i])} if scores.rm is not None else {}),
            # null: no readable verdict; left out of the rule reward
            "verdicts": {rid: None if p != p else round(float(p), 6) for rid, p in zip(ids, scores.verdicts.p_satisfied[i])},
            **({"applies": {rid: None if p != p else round(float(p), 6) for rid, p in zip(ids, scores.verdicts.p_applies[i])}} if scores.verdicts.p_applies is not None else {}),
            **({"unparsed": unparsed[i]} if unparsed[i] else {}),
            **({"reasoning_chars_stripped": int(scores.reasoning_chars[i])} if scores.reasoning_chars[i] else {}),
            **({"empty": True} if scores.empty[i] else {}),
        })
    return rows


def _pair_options_given(args: argparse.Namespace) -> bool:
    """Whether the data options say the file holds preference pairs (a format or a pair column was named)."""
    named = (args.answer_a_column, args.answer_b_column, args.label_column, args.label_meaning)
    return args.format != "auto" or any(v is not None for v in named) or (args.chosen_column, args.rejected_column) != ("chosen", "rejected")


class _ScoreItems:
    """(id, side, conversation) of every response to score, read lazily on each pass:
    a JSONL of prompt + response, or preference pairs (both sides of each)."""

    def __init__(self, args: argparse.Namespace):
        from .data import first_record

        self.path = Path(args.data)
        first = first_record(self.path) if self.path.is_file() else None
        responses = first is not None and "response" in first and not _pair_options_given(args)
        self.pairs = None if responses else load_data(args)  # pairs read as data inspect reads them
        self.count: int | None = None  # known after the first pass

    def __iter__(self):
        n = 0
        for n, item in enumerate(self._items(), 1):
            yield item
        self.count = n

    def _items(self):
        from .data import DataError, iter_rows
        from .integrations.conversation import conversation, to_messages
        from .messages import MessageError

        if self.pairs is not None:
            for p in self.pairs:
                yield p.id, "chosen", p.conversation("chosen")
                yield p.id, "rejected", p.conversation("rejected")
            return
        rows, unit = iter_rows(self.path)
        found = False
        for row, rec in rows:
            if not isinstance(rec, dict) or not isinstance(rec.get("response"), (str, list)):
                raise DataError(str(self.path), "expected a 'response' (text or chat messages) and optionally a 'prompt' (text or chat messages)", row, unit)
            try:
                to_messages(rec.get("prompt"))
            except MessageError as e:
                raise DataError(str(self.path), f"bad 'prompt': {e}", row, unit) from None
            try:
                conv = conversation(rec.get("prompt"), rec["response"])
            except MessageError as e:
                raise DataError(str(self.path), f"bad 'response': {e}", row, unit) from None
            found = True
            yield str(rec.get("id", row)), None, conv
        if not found:
            raise DataError(str(self.path), "no responses found")


def cmd_validate(args: argparse.Namespace) -> int:
    import copy

    from .plan import plan_checks
    from .rules import RuleSet
    from .validation import both_sides, run_validation

    rules_path = Path(args.rules)
    data = load_data(args)
    scorer = build_scorer(args)
    rules = scorer.rules
    sides = (conv for pair in data for conv in both_sides([pair]))  # streamed: the plan holds a sample only
    stop = _show_plan(lambda probe: plan_checks("verify both sides", scorer.verifier, sides, price_per_mtok=args.price_per_mtok, probe=probe), args)
    _report_skips(data)  # counted by the plan's pass over the data
    if stop:
        return 0
    validation = run_validation(
        rules, rules_path, data, scorer, rm=scorer.rm, seed=args.seed, folds=args.folds, select=args.select,
        redundancy=args.redundancy, warn=lambda m: err.print(f"[yellow]warning:[/yellow] {m}"),
    )
    report, weights, selected = validation.report, validation.weights, validation.selected
    if report["refused_responses"] and report["refused_responses"] == 2 * report["pairs"]:
        # nothing was judged: the report says why; the rules file and its stats stay as they were
        out_path = Path(args.out or rules_path.with_name("validation.json"))
        report["outputs"] = {"report": str(out_path)}
        out_path.write_text(jsonsafe.dumps(report, indent=2, ensure_ascii=False, default=_json_default))
        if args.json:
            print(jsonsafe.dumps(report, ensure_ascii=False, default=_json_default))
        return _all_failed(report["refused_responses"], report["refusal_reasons"])
    validation.write_stats(rules, rules_path, str(args.data))
    outputs = {"rules_file": str(rules_path)}
    if args.fit_weights:
        if weights is None:
            err.print("[yellow]warning:[/yellow] no rule has a positive learned weight; weights left as they were")
        else:
            weighted = copy.deepcopy(rules)
            for rule, w in zip(weighted.rules, weights):
                rule.weight = round(float(w), 6)
            path = Path(args.weights_out or rules_path.with_name(rules_path.stem + ".weighted.yaml"))
            weighted.save(path)
            outputs["weighted_rules_file"] = str(path)
            off = [r for r in weighted.rules if r.weight == 0]
            report["rules_switched_off"] = [r.id for r in off]
            if off:  # a non-positive coefficient: the rule votes against the preferences, or not at all
                err.print(f"[yellow]{len(off)} of {len(weighted.rules)} rules get weight 0 (switched off: they did not favour the chosen replies):[/yellow]", highlight=False)
                for r in off:
                    err.print(f"  {r.id}  {_short(r.text, 90)}", highlight=False)
    if selected:
        subset = RuleSet(meta={**rules.meta, "selected_from": str(rules_path)}, rules=[r for r in rules.rules if r.id in set(selected)])
        subset.rules.sort(key=lambda r: selected.index(r.id))
        path = Path(args.select_out or rules_path.with_name(rules_path.stem + f".top{args.select}.yaml"))
        subset.save(path)
        outputs["selected_rules_file"] = str(path)
    report["outputs"] = outputs
    out_path = Path(args.out or rules_path.with_name("validation.json"))
    out_path.write_text(jsonsafe.dumps(report, indent=2, ensure_ascii=False, default=_json_default))
    outputs["report"] = str(out_path)
    if args.json:
        print(jsonsafe.dumps(report, ensure_ascii=False, default=_json_default))
    else:
        _print_validation(report)
    return 0


def _json_default(value):
    return None if isinstance(value, float) else str(value)


def _print_validation(report: dict) -> None:
    from rich.table import Table

    def pct(x):
        return "-" if x is None or x != x else f"{x:.1%}"

    table = Table(title=f"rule validation on {report['pairs']} pairs ({report['verifier']})")
    for col in ("rule", "agreement [95% CI]", "n", "coverage", "kappa", "weight"):
        table.add_column(col)
    for r in report["rules"]:
        agreement = f"{pct(r['agreement'])} [{pct(r['ci_low'])}, {pct(r['ci_high'])}]"
        kappa = "-" if r["kappa"] is None else f"{r['kappa']:.2f}"
        table.add_row(_short(r["text"], 70), agreement, str(r["n"]), pct(r["coverage"]), kappa, f"{r['learned_weight']:.2f}")
    out.print(table)
    acc = report["rule_set"]
    out.print(f"rule-set accuracy: {pct(acc['accuracy'])} ({acc['correct']} right, {acc['wrong']} wrong, {acc['ties']} ties); "
              f"without ties {pct(acc['accuracy_without_ties'])}")
    out.print(f"learned weights: {report['learned_weights']['folds']}-fold CV accuracy {pct(report['learned_weights']['cv_accuracy'])}")
    from .llm.base import describe_llm_stats

    if report.get("unparsed_checks") or report.get("refused_responses"):
        out.print(f"[yellow]{report['unparsed_checks']} checks had no readable Yes/No (left out of each rule's statistics); "
                  f"{report['refused_responses']} responses were refused by the verifier's server[/yellow]")
        for reason, n in (report.get("refusal_reasons") or {}).items():
            out.print(f"  refused {n} x {reason}", highlight=False, soft_wrap=True)
    out.print(f"verifier: {describe_llm_stats(report.get('llm_stats', {}))}")
    if "reward_model" in report:
        out.print(f"reward model: {pct(report['reward_model']['accuracy'])}; RM + rules: {pct(report['reward_model_plus_rules']['accuracy'])}")
    for pair in report["redundant_pairs"][:10]:
        out.print(f"redundant: {pair['a']} ~ {pair['b']} (r = {pair['correlation']})")
    if "selection" in report:
        out.print(f"selected: {', '.join(report['selection']['rules'])} (CV accuracy {pct(report['selection']['cv_accuracy'][-1])})")
    for name, path in report["outputs"].items():
        out.print(f"{name}: {path}")


def cmd_train_rm(args: argparse.Namespace) -> int:
    from .train.rm import RMConfig, train_reward_model

    data = load_data(args, lazy=False)  # TRL's RewardTrainer takes the whole set
    _report_skips(data)
    config = RMConfig(base=args.base, out=args.out, lora=args.lora, epochs=args.epochs, max_steps=args.max_steps, learning_rate=args.learning_rate,
                      batch_size=args.batch_size, max_length=args.max_length, eval_fraction=args.eval_fraction, seed=args.seed, bf16=args.bf16)
    report = train_reward_model(data.pairs, config)
    if args.json:
        print(jsonsafe.dumps(report))
    else:
        acc = report["eval_accuracy"]
        held = f"{acc['accuracy']:.1%} ({acc['correct']}/{acc['correct'] + acc['wrong'] + acc['ties']}, {acc['ties']} ties)" if acc else "no held-out pairs"
        err.print(f"reward model written to {args.out}; trained on {report['train_pairs']} pairs; held-out pairwise accuracy {held}; "
                  f"score mean {report['mean']:.3f}, std {report['std']:.3f}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .plan import plan_train
    from .train.config import TrainConfig, load_config
    from .train.grpo import build_scorer as build_train_scorer
    from .train.grpo import run_grpo

    overrides = {name: getattr(args, name) for name in TrainConfig.model_fields}
    config = load_config(args.config, overrides)
    scorer = build_train_scorer(config)  # one verifier for the plan and the run (a server is probed once)
    if _show_plan(lambda probe: plan_train(config, scorer.verifier, price_per_mtok=args.price_per_mtok, probe=probe), args):
        return 0
    summary = run_grpo(config, scorer=scorer)
    if args.json:
        print(jsonsafe.dumps(summary))
    else:
        err.print(f"trained {summary['steps']} steps in {summary['seconds']} s; model: {summary['final_model']}; metrics: {summary['metrics']}"
                  + (f"; {len(summary['warnings'])} reward-hacking warnings" if summary["warnings"] else ""))
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from .generate import alpaca_eval_outputs, mt_bench_answers, write_outputs
    from .llm import load_llm

    spec = args.model if (args.model.startswith(("openai:", "hf:", "gguf:")) or args.model == "embedded") else f"hf:{args.model}"
    llm = load_llm(spec, cache=open_cache(args), **llm_options(args, spec))
    name = args.generator or Path(args.model.rstrip("/")).name or args.model
    if args.format == "alpaca_eval":
        records = alpaca_eval_outputs(llm, args.prompts, name, args.max_new_tokens, args.temperature, args.limit)
    else:
        records = mt_bench_answers(llm, args.prompts, name, args.max_new_tokens, args.temperature, args.limit)
    path = write_outputs(records, args.out, args.format)
    err.print(f"{len(records)} {args.format} records written to {path}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .reporting import build_report
    from .reporting.build import ReportError

    try:
        path = build_report(args.run_dir, args.out, compare=args.compare)
    except ReportError as e:
        err.print(f"[red]error:[/red] {e}", soft_wrap=True)
        return EXIT_BAD_INPUT
    err.print(f"report written to {path}", soft_wrap=True)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .data import DataError
    from .integrations.server import create_app, load_policy_tokenizer

    token = args.token or os.environ.get("AUTORULE_TOKEN")
    if args.host not in ("127.0.0.1", "localhost", "::1") and not token:
        err.print("[yellow]warning:[/yellow] serving beyond localhost without a bearer token (--token or $AUTORULE_TOKEN)")
    try:  # read before the verifier is loaded: a wrong path is bad input (exit 2)
        policy_tokenizer = load_policy_tokenizer(args.policy_tokenizer) if args.policy_tokenizer else None
    except ValueError as e:
        raise DataError(args.policy_tokenizer, str(e)) from None
    scorer = build_scorer(args)
    app = create_app(scorer, token=token, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_queue=args.max_queue, reward=args.reward, workers=args.workers,
                     policy_tokenizer=policy_tokenizer)
    err.print(f"autorule reward server on http://{args.host}:{args.port}/get_reward: {len(scorer.rules)} rules, verifier {scorer.verifier.llm.spec}, "
              f"RM {scorer.rm.path if scorer.rm is not None else 'none'}, preset {scorer.preset.name}, rewards = {args.reward}, "
              f"auth {'bearer token' if token else 'none'}", highlight=False, soft_wrap=True)
    # keep-alive longer than clients keep idle pooled connections (uvicorn: 5 s), so a reused one is rarely closed under them
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", timeout_keep_alive=75)
    return 0


def cmd_quickstart(args: argparse.Namespace) -> int:
    from .quickstart import run_quickstart

    return run_quickstart(Path(args.out), cache=open_cache(args))


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="autorule", description="Learn readable rules from preference data and use them as an RL reward.")
    parser.add_argument("--version", action="version", version=f"autorule {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="preference data").add_subparsers(dest="data_command", required=True)
    inspect = data.add_parser("inspect", help="load a preference file and show what was read and skipped")
    inspect.add_argument("data", metavar="PATH", help="file (.jsonl/.json/.csv/.parquet, optionally .gz), dataset directory or Hugging Face dataset name")
    _add_data_options(inspect)
    inspect.add_argument("--sample", type=whole(0), default=2, help="pairs to show")
    inspect.add_argument("--json", action="store_true", help="print one JSON object (last line of stdout)")
    inspect.set_defaults(func=cmd_data_inspect)

    llm = sub.add_parser("llm", help="try a model spec directly").add_subparsers(dest="llm_command", required=True)
    gen = llm.add_parser("generate", help="one chat completion")
    gen.add_argument("prompt")
    _add_model_options(gen)
    _add_cache_options(gen)
    gen.add_argument("--max-tokens", type=whole(1), default=256, help="most tokens to generate")
    gen.add_argument("--temperature", type=number(0, 2), default=0.0, help="sampling temperature (0: greedy)")
    gen.add_argument("--json", action="store_true")
    gen.set_defaults(func=cmd_llm_generate)
    score = llm.add_parser("score", help="P(Yes) for questions after a shared prefix")
    score.add_argument("--prefix", required=True, help="text shared by every question (e.g. a conversation)")
    score.add_argument("questions", nargs="+")
    _add_model_options(score)
    _add_cache_options(score)
    score.add_argument("--json", action="store_true")
    score.set_defaults(func=cmd_llm_score)

    ex = sub.add_parser("extract", help="learn rules from preference data: reasoning -> candidate rules -> merged rule set")
    ex.add_argument("--data", required=True, metavar="PATH", help="preference data (any format `autorule data inspect` reads)")
    _add_data_options(ex)
    _add_model_options(ex)
    _add_cache_options(ex)
    ex.add_argument("--merge-model", type=model_spec, default=None, help="model spec for merging (default: --model)")
    ex.add_argument("--out", default=None, metavar="RUN_DIR", help="run directory (default: runs/extract-<data name>); rerun to resume")
    ex.add_argument("--seed", type=int, default=0, help="seed for the A/B order and sampling")
    ex.add_argument("--extract-from", default="reasoning", choices=["reasoning", "explanation", "both"], help="text rules are drawn from (paper: reasoning)")
    ex.add_argument("--target-rules", type=whole(1), default=25, help="merge until at most this many rules remain")
    ex.add_argument("--max-cluster", type=whole(2), default=10, help="most rules in one merge prompt")
    ex.add_argument("--reasoning-tokens", type=whole(1), default=1024, help="max new tokens for each reasoning call")
    ex.add_argument("--rules-tokens", type=whole(1), default=512, help="max new tokens for each rule-extraction call")
    ex.add_argument("--merge-tokens", type=whole(1), default=512, help="max new tokens for each merge call")
    ex.add_argument("--max-input-tokens", type=whole(64), default=None, metavar="N",
                    help="tokens one request may use, prompt and answer together; longer pairs and reasoning are cut in the middle, "
                         "the instructions never (default: the context the server or model reports, else 8192)")
    ex.add_argument("--max-refused-share", type=number(0, 1), default=0.05, metavar="SHARE",
                    help="stop, naming them, once the server has refused more than this share of the pairs (default: %(default)s); "
                         "fewer are recorded in run.json and the run goes on")
    ex.add_argument("--retry-refused", action="store_true", help="send the pairs an earlier run recorded as refused again (a resumed run skips them)")
    ex.add_argument("--overwrite", action="store_true", help="discard an earlier, different run in RUN_DIR")
    ex.add_argument("--json", action="store_true", help="print a JSON summary as the last line of stdout")
    _add_plan_options(ex)
    ex.set_defaults(func=cmd_extract)

    sc = sub.add_parser("score", help="score responses (or both sides of preference pairs) against a rule set")
    _add_reward_options(sc)
    sc.add_argument("--data", required=True, metavar="FILE", help="JSONL with 'prompt' and 'response', or preference data (any layout `autorule data inspect` reads)")
    _add_data_options(sc)  # the same options as data inspect / extract / validate: every layout scores both sides
    sc.add_argument("--out", default=None, metavar="FILE", help="write per-response verdicts and rewards as JSONL here (default: stdout)")
    sc.add_argument("--json", action="store_true", help="print a JSON summary as the last line of stdout")
    _add_completion_options(sc)
    _add_plan_options(sc)
    sc.set_defaults(func=cmd_score)

    va = sub.add_parser("validate", help="test rules against held-out preference pairs: agreement, coverage, kappa, accuracy, weights")
    _add_reward_options(va)
    va.add_argument("--data", required=True, metavar="PATH", help="held-out preference data")
    _add_data_options(va)
    va.add_argument("--seed", type=int, default=0, help="seed for the A/B order used by kappa and the weight fit")
    va.add_argument("--folds", type=whole(2), default=5, help="cross-validation folds")
    va.add_argument("--select", type=whole(1), default=None, metavar="K", help="greedily pick the K rules with the best CV accuracy and write them out")
    va.add_argument("--select-out", default=None, metavar="FILE", help="where --select writes (default: RULES.topK.yaml)")
    va.add_argument("--fit-weights", action="store_true", help="write the learned weights into a new rules file")
    va.add_argument("--weights-out", default=None, metavar="FILE", help="where --fit-weights writes (default: RULES.weighted.yaml)")
    va.add_argument("--redundancy", type=number(0, 1), default=0.8, help="report rule pairs whose verdicts correlate at least this much")
    va.add_argument("--out", default=None, metavar="FILE", help="JSON report (default: validation.json beside the rules)")
    va.add_argument("--json", action="store_true", help="print the report as one JSON line on stdout")
    _add_plan_options(va)
    va.set_defaults(func=cmd_validate)

    trm = sub.add_parser("train-rm", help="train a Bradley-Terry reward model (TRL RewardTrainer)")
    trm.add_argument("--data", required=True, metavar="PATH", help="preference data")
    _add_data_options(trm)
    trm.add_argument("--base", type=model_spec, default="embedded", help="base model spec: embedded, gguf:FILE, hf:DIR (default: %(default)s)")
    trm.add_argument("--out", required=True, metavar="DIR", help="where the reward model is written")
    trm.add_argument("--lora", action="store_true", help="train LoRA adapters (merged into the saved model)")
    trm.add_argument("--epochs", type=number(0, above=True), default=1.0, help="passes over the training pairs")
    trm.add_argument("--max-steps", type=whole(-1), default=-1, help="stop after this many steps (default: all epochs)")
    trm.add_argument("--learning-rate", type=number(0, above=True), default=5e-5, help="learning rate")
    trm.add_argument("--batch-size", type=whole(1), default=8, help="pairs per step")
    trm.add_argument("--max-length", type=whole(16), default=512, help="tokens per conversation")
    trm.add_argument("--eval-fraction", type=number(0, 0.9), default=0.1, help="pairs held out for the accuracy report")
    trm.add_argument("--seed", type=int, default=0, help="seed")
    trm.add_argument("--bf16", action="store_true", help="bf16 (GPU)")
    trm.add_argument("--json", action="store_true")
    trm.set_defaults(func=cmd_train_rm)

    from .train.config import add_config_flags

    tr = sub.add_parser("train", help="GRPO with reward model + rule rewards on TRL, with the reward-hacking monitor")
    tr.add_argument("--config", default=None, metavar="FILE.yaml", help="config file; every key is also a flag below")
    add_config_flags(tr)
    tr.add_argument("--json", action="store_true", help="print a JSON summary as the last line of stdout")
    _add_plan_options(tr)
    tr.set_defaults(func=cmd_train)

    ge = sub.add_parser("generate", help="answers for AlpacaEval or MT-Bench, to judge with your own judge")
    ge.add_argument("--model", required=True, help="model directory (e.g. runs/grpo/final) or spec")
    ge.add_argument("--prompts", required=True, metavar="PATH", help="AlpacaEval instructions (JSON/JSONL) or MT-Bench questions (JSONL)")
    ge.add_argument("--format", required=True, choices=["alpaca_eval", "mt_bench"])
    ge.add_argument("--out", required=True, metavar="FILE")
    ge.add_argument("--generator", default=None, help="name recorded as generator / model_id (default: the model directory's name)")
    ge.add_argument("--max-new-tokens", type=whole(1), default=512, help="most tokens per answer")
    ge.add_argument("--limit", type=whole(1), default=None, help="answer at most this many prompts")
    ge.add_argument("--temperature", type=number(0, 2), default=0.0, help="sampling temperature (0: greedy)")
    _add_server_options(ge, "model")
    _add_cache_options(ge)
    ge.set_defaults(func=cmd_generate)

    rp = sub.add_parser("report", help="write a self-contained report.html for a run directory")
    rp.add_argument("run_dir", metavar="RUN_DIR", help="a quickstart, extract or train output directory")
    rp.add_argument("--out", default=None, metavar="FILE", help="default: RUN_DIR/report.html")
    rp.add_argument("--compare", default=None, metavar="RULES", help="another rules file: the report shows the two rule sets matched (as `autorule rules diff`)")
    rp.set_defaults(func=cmd_report)

    add_bench_parsers(sub)

    sv = sub.add_parser("serve", help="OpenRLHF-compatible reward server (POST / or /get_reward)")
    _add_reward_options(sv)
    sv.add_argument("--host", default="127.0.0.1", help="bind address (default: %(default)s, this machine only)")
    sv.add_argument("--port", type=whole(1, 65535), default=8000, help="port to listen on")
    sv.add_argument("--token", default=None, help="require 'Authorization: Bearer TOKEN' (default: $AUTORULE_TOKEN)")
    sv.add_argument("--max-batch", type=whole(1), default=64, help="most samples scored in one verifier pass")
    sv.add_argument("--max-wait-ms", type=number(0), default=10.0, help="how long a batch waits to fill")
    sv.add_argument("--max-queue", type=whole(1), default=1024, help="queued requests before answering 503")
    sv.add_argument("--workers", type=whole(1), default=1, help="batches scored at once; more than 1 helps only a slow verifier server with capacity left (raise --concurrency with it)")
    sv.add_argument("--reward", choices=["total", "rule"], default="total",
                    help="what 'rewards' holds: the composed reward (rule term + --rm + length penalty, clipped per preset) or the rule term alone (default: %(default)s)")
    _add_completion_options(sv)
    sv.add_argument("--policy-tokenizer", default=None, metavar="PATH",
                    help="the policy's tokenizer (a directory or hub name): its special tokens are removed from what the verifier sees, and its chat template is checked against the ones autorule reads back")
    sv.set_defaults(func=cmd_serve)

    from .rules_cli import add_rules_parsers

    add_rules_parsers(sub, _add_server_options, _add_cache_options)

    qs = sub.add_parser("quickstart", help="run what exists of the pipeline on the sample data with the embedded model")
    qs.add_argument("--out", default="runs/quickstart", help="run directory (default: %(default)s)")
    _add_cache_options(qs)
    qs.set_defaults(func=cmd_quickstart)
    return parser


def _show_progress_messages() -> None:
    """autorule's own INFO messages (stage starts, notes) on stderr: quiet in library use, shown by the CLI."""
    from rich.logging import RichHandler

    logger = logging.getLogger("autorule")
    if not any(getattr(h, "_autorule_cli", False) for h in logger.handlers):
        handler = RichHandler(console=err, show_time=False, show_path=False, markup=False)
        handler._autorule_cli = True
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def main(argv: list[str] | None = None) -> int:
    # the user's Hugging Face settings are respected (HF_HUB_OFFLINE, HF_HOME, HF_TOKEN); the
    # embedded model and the embedder load from installed packages without the hub
    from .data import DataError
    from .extraction.run import RunDirError
    from .llm import LLMError
    from .rules import RulesFileError
    from .train.config import ConfigError

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    _show_progress_messages()
    try:
        return args.func(args)
    except (DataError, RunDirError, RulesFileError, ConfigError) as e:
        err.print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
        return EXIT_BAD_INPUT
    except (LLMError, ValueError) as e:
        err.print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
        return 1
    except KeyboardInterrupt:
        err.print("interrupted; finished work is kept (rerun the same command to resume)")
        return 130


if __name__ == "__main__":
    sys.exit(main())
