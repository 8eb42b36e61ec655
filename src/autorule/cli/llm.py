"""`autorule llm generate|score`: try a model spec directly."""

from __future__ import annotations

import argparse

from autorule import jsonsafe
from autorule.cli.options import add_cache_options, add_model_options, err, llm_options, number, open_cache, out, whole


def cmd_llm_generate(args: argparse.Namespace) -> int:
    """`autorule llm generate PROMPT`: one chat completion from the model spec."""
    from autorule.llm import ChatRequest, load_llm

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
    """`autorule llm score --prefix TEXT QUESTION...`: P(Yes) of each question after the prefix."""
    from autorule.llm import load_llm

    llm = load_llm(args.model, cache=open_cache(args), **llm_options(args))
    probs = llm.score_yes_no(args.prefix, args.questions)
    if args.json:
        print(jsonsafe.dumps({"p_yes": probs}))  # an unread verdict is null
    else:
        for q, p in zip(args.questions, probs):
            out.print(f"{p:.3f}  {q}")
    return 0


def add_parsers(sub) -> None:
    """Add the `llm` command group (`llm generate`, `llm score`) to the `autorule` parser.

    Args:
        sub: the top parser's subparsers (`autorule.cli.app.build_parser`).

    Example:
        >>> from autorule.cli.options import Parser
        >>> sub = Parser(prog="autorule").add_subparsers(dest="command")
        >>> add_parsers(sub)
        >>> sorted(sub.choices)
        ['llm']
    """
    llm = sub.add_parser("llm", help="try a model spec directly").add_subparsers(dest="llm_command", required=True)
    gen = llm.add_parser("generate", help="one chat completion")
    gen.add_argument("prompt")
    add_model_options(gen)
    add_cache_options(gen)
    gen.add_argument("--max-tokens", type=whole(1), default=256, help="most tokens to generate")
    gen.add_argument("--temperature", type=number(0, 2), default=0.0, help="sampling temperature (0: greedy)")
    gen.add_argument("--json", action="store_true")
    gen.set_defaults(func=cmd_llm_generate)
    score = llm.add_parser("score", help="P(Yes) for questions after a shared prefix")
    score.add_argument("--prefix", required=True, help="text shared by every question (e.g. a conversation)")
    score.add_argument("questions", nargs="+")
    add_model_options(score)
    add_cache_options(score)
    score.add_argument("--json", action="store_true")
    score.set_defaults(func=cmd_llm_score)

