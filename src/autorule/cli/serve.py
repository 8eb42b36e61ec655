"""`autorule serve`: the OpenRLHF-compatible reward server (over `autorule.integrations.openrlhf`)."""

from __future__ import annotations

import argparse
import os

from autorule.cli import options
from autorule.cli.options import (
    add_completion_options,
    add_plan_options,
    add_reward_options,
    build_scorer,
    err,
    number,
    whole,
)


def cmd_serve(args: argparse.Namespace) -> int:
    """`autorule serve`: the reward server (`autorule.integrations.openrlhf.create_app`) under uvicorn."""
    import uvicorn

    from autorule.data import DataError
    from autorule.integrations.openrlhf import create_app, load_policy_tokenizer

    token = args.token or os.environ.get("AUTORULE_TOKEN")
    if args.host not in ("127.0.0.1", "localhost", "::1") and not token:
        err.print("[yellow]warning:[/yellow] serving beyond localhost without a bearer token (--token or $AUTORULE_TOKEN)")
    try:  # read before the verifier is loaded: a wrong path is bad input (exit 2)
        policy_tokenizer = load_policy_tokenizer(args.policy_tokenizer) if args.policy_tokenizer else None
    except ValueError as e:
        raise DataError(args.policy_tokenizer, str(e)) from None
    if args.aggregation == "normalize_then_sum":  # refused before a verifier is loaded
        from autorule.errors import InputError

        raise InputError("--aggregation normalize_then_sum needs every completion of a GRPO group in one call, and OpenRLHF sends its reward "
                         "service samples one request at a time; use --aggregation sum (OpenRLHF's GRPO advantage normalises the summed reward per group)")
    scorer = build_scorer(args)
    if args.plan:  # the verifier's load per RL step, and what the judge's measured speed makes of it
        from autorule.plan import plan_serve

        options.show_plan(lambda probe: plan_serve(scorer.verifier, args.rollout_prompts, args.samples_per_prompt, args.completion_words, probe=probe), args)
        return 0
    app = create_app(scorer, token=token, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_queue=args.max_queue, reward=args.reward, workers=args.workers,
                     policy_tokenizer=policy_tokenizer)
    err.print(f"autorule reward server on http://{args.host}:{args.port}/get_reward: {len(scorer.rules)} rules, verifier {scorer.verifier.llm.spec}, "
              f"RM {scorer.rm.path if scorer.rm is not None else 'none'}, preset {scorer.preset.name}, rewards = {args.reward}, "
              f"essential rules {sum(r.essential for r in scorer.rules.rules)}, rule dropout {scorer.rule_dropout:g}, "
              f"auth {'bearer token' if token else 'none'}", highlight=False, soft_wrap=True)
    # keep-alive longer than clients keep idle pooled connections (uvicorn: 5 s), so a reused one is rarely closed under them
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", timeout_keep_alive=75)
    return 0


def add_parsers(sub) -> None:
    """Add `serve` to the `autorule` parser.

    Args:
        sub: the top parser's subparsers (`autorule.cli.app.build_parser`).

    Example:
        >>> from autorule.cli.options import Parser
        >>> sub = Parser(prog="autorule").add_subparsers(dest="command")
        >>> add_parsers(sub)
        >>> sorted(sub.choices)
        ['serve']
    """
    sv = sub.add_parser("serve", help="OpenRLHF-compatible reward server (POST / or /get_reward)")
    add_reward_options(sv)
    add_plan_options(sv)
    sv.add_argument("--rollout-prompts", type=whole(1), default=1024,
                    help="with --plan: prompts per RL step (OpenRLHF's --rollout_batch_size; default: %(default)s, the AutoRule paper's)")
    sv.add_argument("--samples-per-prompt", type=whole(1), default=2,
                    help="with --plan: completions per prompt (OpenRLHF's --n_samples_per_prompt; default: %(default)s)")
    sv.add_argument("--completion-words", type=whole(1), default=200, help="with --plan: words in a probe completion (default: %(default)s)")
    sv.add_argument("--host", default="127.0.0.1", help="bind address (default: %(default)s, this machine only)")
    sv.add_argument("--port", type=whole(1, 65535), default=8000, help="port to listen on")
    sv.add_argument("--token", default=None, help="require 'Authorization: Bearer TOKEN' (default: $AUTORULE_TOKEN)")
    sv.add_argument("--max-batch", type=whole(1), default=64, help="most samples scored in one verifier pass")
    sv.add_argument("--max-wait-ms", type=number(0), default=10.0, help="how long a batch waits to fill")
    sv.add_argument("--max-queue", type=whole(1), default=1024, help="queued requests before answering 503")
    sv.add_argument("--workers", type=whole(1), default=1, help="batches scored at once; more than 1 helps only a slow verifier server with capacity left (raise --concurrency with it)")
    sv.add_argument("--reward", choices=["total", "rule"], default="total",
                    help="what 'rewards' holds: the composed reward (rule term + --rm + length penalty, clipped per preset) or the rule term alone (default: %(default)s)")
    add_completion_options(sv)
    sv.add_argument("--policy-tokenizer", default=None, metavar="PATH",
                    help="the policy's tokenizer (a directory or hub name): its special tokens are removed from what the verifier sees, and its chat template is checked against the ones autorule reads back")
    sv.set_defaults(func=cmd_serve)

