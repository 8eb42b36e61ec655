"""`autorule train-rm`, `train` and `generate`: training and answers to judge (over `autorule.train`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from autorule import jsonsafe
from autorule.cli import options
from autorule.cli.options import (add_cache_options, add_data_options, add_plan_options, add_server_options, err, llm_options, load_data,
                                  model_spec, number, open_cache, report_skips, whole)


def cmd_train_rm(args: argparse.Namespace) -> int:
    """`autorule train-rm`: a Bradley-Terry reward model (`autorule.train.rm`)."""
    from autorule.train.rm import RMConfig, train_reward_model

    data = load_data(args, lazy=False)  # TRL's RewardTrainer takes the whole set
    report_skips(data)
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
    """`autorule train`: the config's plan, then GRPO (`autorule.train.grpo.run_grpo`)."""
    from autorule.plan import plan_train
    from autorule.train.config import TrainConfig, load_config
    from autorule.train.grpo import build_scorer as build_train_scorer
    from autorule.train.grpo import run_grpo

    overrides = {name: getattr(args, name) for name in TrainConfig.model_fields}
    config = load_config(args.config, overrides)
    scorer = build_train_scorer(config)  # one verifier for the plan and the run (a server is probed once)
    if options.show_plan(lambda probe: plan_train(config, scorer.verifier, price_per_mtok=args.price_per_mtok, probe=probe), args):
        return 0
    if args.json:  # TRL's own log lines go to stderr: stdout holds the JSON summary alone
        import contextlib
        import sys

        with contextlib.redirect_stdout(sys.stderr):
            summary = run_grpo(config, scorer=scorer)
    else:
        summary = run_grpo(config, scorer=scorer)
    if args.json:
        print(jsonsafe.dumps(summary))
    else:
        err.print(f"trained {summary['steps']} steps in {summary['seconds']} s; model: {summary['final_model']}; metrics: {summary['metrics']}"
                  + (f"; {len(summary['warnings'])} reward-hacking warnings" if summary["warnings"] else ""))
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    """`autorule generate`: AlpacaEval or MT-Bench answers (`autorule.train.generate`)."""
    from autorule.train.generate import alpaca_eval_outputs, mt_bench_answers, write_outputs
    from autorule.llm import load_llm

    from autorule.llm.specs import parse_spec

    spec = parse_spec(args.model, bare="hf").text  # a name of no spec form is a hub id
    llm = load_llm(spec, cache=open_cache(args), **llm_options(args, spec))
    name = args.generator or Path(args.model.rstrip("/")).name or args.model
    if args.format == "alpaca_eval":
        records = alpaca_eval_outputs(llm, args.prompts, name, args.max_new_tokens, args.temperature, args.limit)
    else:
        records = mt_bench_answers(llm, args.prompts, name, args.max_new_tokens, args.temperature, args.limit)
    path = write_outputs(records, args.out, args.format)
    err.print(f"{len(records)} {args.format} records written to {path}")
    return 0


def add_parsers(sub) -> None:
    """Add `train-rm`, `train` and `generate` to the `autorule` parser.

    Args:
        sub: the top parser's subparsers (`autorule.cli.app.build_parser`).

    Example:
        >>> from autorule.cli.options import Parser
        >>> sub = Parser(prog="autorule").add_subparsers(dest="command")
        >>> add_parsers(sub)
        >>> sorted(sub.choices)
        ['generate', 'train', 'train-rm']
    """
    trm = sub.add_parser("train-rm", help="train a Bradley-Terry reward model (TRL RewardTrainer)")
    trm.add_argument("--data", required=True, metavar="PATH", help="preference data")
    add_data_options(trm)
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

    from autorule.train.config import add_config_flags

    tr = sub.add_parser("train", help="GRPO with reward model + rule rewards on TRL, with the reward-hacking monitor")
    tr.add_argument("--config", default=None, metavar="FILE.yaml", help="config file; every key is also a flag below")
    add_config_flags(tr)
    tr.add_argument("--json", action="store_true", help="print a JSON summary as the last line of stdout")
    add_plan_options(tr)
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
    add_server_options(ge, "model")
    add_cache_options(ge)
    ge.set_defaults(func=cmd_generate)

