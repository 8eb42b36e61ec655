"""Command-line settings checked when they are parsed, before any file or folder is made.

Every numeric flag names its allowed range; model specs are checked for their form. A bad
value exits with status 2 and a message naming the flag, the value and what is allowed.
"""

from __future__ import annotations

import argparse
import json

from rich.console import Console

from autorule import jsonsafe


def whole(low: int, high: int | None = None):
    """An argparse type: a whole number in [low, high].

    Args:
        low: the smallest value allowed.
        high: the largest value allowed (None: no limit).

    Example:
        >>> whole(1)("3")
        3
        >>> whole(1)("0")
        Traceback (most recent call last):
        ...
        argparse.ArgumentTypeError: 0 is out of range: must be at least 1
    """
    return _bounded(int, "a whole number", low, high, above=False)


def number(low: float, high: float | None = None, *, above: bool = False):
    """An argparse type: a number in [low, high] (or (low, high] with `above`).

    Args:
        low: the smallest value allowed (excluded with `above`).
        high: the largest value allowed (None: no limit).
        above: the value must be greater than `low`.

    Example:
        >>> number(0, 1)("0.25")
        0.25
        >>> number(0, above=True)("0")
        Traceback (most recent call last):
        ...
        argparse.ArgumentTypeError: 0.0 is out of range: must be greater than 0
    """
    return _bounded(float, "a number", low, high, above=above)


def _bounded(convert, kind: str, low, high, *, above: bool):
    """The parser `whole` and `number` share: convert, then check the range (NaN is never in it)."""

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {kind}") from None
        if value != value or (value <= low if above else value < low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{value} is out of range: must be {_range(low, high, above)}")
        return value

    parse.__name__ = kind.removeprefix("a ")  # argparse names the type in its own messages
    return parse


def _range(low, high, above: bool = False) -> str:
    if high is None:
        return f"greater than {low:g}" if above else f"at least {low:g}"
    return f"{'greater than' if above else 'from'} {low:g} {'and at most' if above else 'to'} {high:g}"


def model_spec(text: str) -> str:
    """An argparse type: a model spec of a known form (the model itself is loaded later).

    Args:
        text: the spec.

    Example:
        >>> model_spec("openai:Qwen/Qwen3-8B@http://127.0.0.1:8000/v1")
        'openai:Qwen/Qwen3-8B@http://127.0.0.1:8000/v1'
        >>> model_spec("openai:foo")
        Traceback (most recent call last):
        ...
        argparse.ArgumentTypeError: 'openai:foo' has no server address: write openai:MODEL@BASE_URL, e.g. openai:Qwen/Qwen3-8B@http://127.0.0.1:8000/v1
    """
    from autorule.llm.specs import SpecError, parse_spec

    try:
        parse_spec(text)  # vllm: parses: load_llm refuses it later, with advice
    except SpecError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def prices(text: str) -> tuple[float, float]:
    """An argparse type: input and output prices per million tokens, "IN,OUT".

    Args:
        text: two non-negative numbers separated by a comma.

    Example:
        >>> prices("0.15,0.6")
        (0.15, 0.6)
    """
    parts = text.split(",")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 2 or min(values) < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: write two prices per million tokens, input and output, e.g. 0.15,0.6")
    return values  # type: ignore[return-value]


class HelpFormatter(argparse.HelpFormatter):
    """Shows each option's default in --help, unless its help text already does or it has none."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "%(default)" in text or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        return text + " (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """autorule's argument parser: no abbreviated flags (--rule is not --rules), defaults shown."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


# --------------------------------------------------------------------------- shared option groups and helpers

# errors and progress go to stderr; stdout stays machine-readable with --json
err = Console(stderr=True)
out = Console()


def add_data_options(p: argparse.ArgumentParser) -> None:
    """The flags that say how preference data is read (`data inspect`, `extract`, `validate`, `train-rm`).

    Args:
        p: the command's parser.

    Example:
        >>> p = Parser(prog="autorule data inspect")
        >>> add_data_options(p)
        >>> p.parse_args(["--on-bad-row", "skip"]).on_bad_row
        'skip'
    """
    from autorule.data import FORMATS

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
    p.add_argument("--label-meaning", type=label_meaning, default=None, metavar="MEANING",
                   help="what the label's values say: ab (A/B names), index0 (0 = first answer), index1 (1 = first answer), "
                        "sign (negative = first answer, 0 = tie), reverse-sign, onehot, or a map such as 0=b,1=a,2=tie "
                        "(default: the named layout's; a column of only 0 and 1 must be told)")
    p.add_argument("--ranked-pairs", default="best-vs-rest", choices=["best-vs-rest", "adjacent", "all"],
                   help="pairs from ranked answers (Nectar): the best against each other (default), each against the next, or all")
    p.add_argument("--tie-threshold", type=number(0, 0.5), default=0.1, help="AlpacaEval: skip pairs with |preference - 1.5| below this")
    p.add_argument("--split", default="train", help="split, for Hugging Face dataset names")
    p.add_argument("--limit", type=whole(1), default=None, help="stop after this many pairs")


def label_meaning(text: str) -> str:
    """An argparse type: what a label column's values say, as `autorule.data.labels.parse_label_meaning` reads it.

    Args:
        text: a meaning's name or a map such as 0=b,1=a.

    Raises:
        argparse.ArgumentTypeError: a meaning it cannot read.

    Example:
        >>> label_meaning("0=b,1=a")
        '0=b,1=a'
    """
    from autorule.data.labels import LabelError, parse_label_meaning

    try:
        parse_label_meaning(text)
    except LabelError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def add_cache_options(p: argparse.ArgumentParser) -> None:
    """The LLM cache's flags (`--cache`, `--no-cache`); `open_cache` reads them.

    Args:
        p: the command's parser.

    Example:
        >>> p = Parser(prog="autorule llm generate")
        >>> add_cache_options(p)
        >>> p.parse_args(["--no-cache"]).no_cache
        True
    """
    p.add_argument("--cache", default=None, help="SQLite cache file (default: ~/.cache/autorule/cache.sqlite or $AUTORULE_CACHE)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the LLM cache")


def load_data(args: argparse.Namespace, lazy: bool = True):
    """The command's pairs: read lazily (a `PairStream`, so a command never holds a whole
    file), or with `lazy=False` loaded (a `LoadResult`).

    Args:
        args: the parsed flags of `add_data_options`, and ``data`` (the file or dataset name).
        lazy: stream the pairs (True) or load them all.

    Raises:
        DataError: a source that cannot be read (at once for a missing file; else while reading).

    Example:
        >>> from autorule.examples import SAMPLE_PAIRS
        >>> p = Parser(prog="autorule data inspect")
        >>> add_data_options(p)
        >>> args = p.parse_args(["--limit", "3"])
        >>> args.data = str(SAMPLE_PAIRS)
        >>> len(load_data(args, lazy=False))
        3
    """
    from autorule.data import Columns, load_pairs, stream_pairs

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
    """The cache the command's LLM calls go through: `--cache`, the default file, or none (`--no-cache`).

    Args:
        args: the parsed flags of `add_cache_options`.

    Example:
        >>> open_cache(argparse.Namespace(cache=None, no_cache=True)) is None
        True
    """
    from autorule.cache import DEFAULT_CACHE_PATH, Cache

    if args.no_cache:
        return None
    return Cache(args.cache or DEFAULT_CACHE_PATH)


def llm_options(args: argparse.Namespace, spec: str | None = None) -> dict:
    """The `load_llm` options the server flags (`add_server_options`) give the spec's backend.

    Args:
        args: the parsed flags.
        spec: the model spec loaded (default: ``args.model``).

    Example:
        >>> args = argparse.Namespace(model="openai:m@http://127.0.0.1:8000/v1", concurrency=4, timeout=None, max_retries=6, api_key=None)
        >>> llm_options(args), llm_options(args, "embedded")
        ({'concurrency': 4, 'max_retries': 6}, {})
    """
    from autorule.llm.specs import parse_spec

    # the server options (add_server_options) that the spec's backend takes; none for a local model
    return parse_spec(spec or args.model).options(concurrency=args.concurrency, timeout=args.timeout, max_retries=args.max_retries,
                                                  api_key=args.api_key or None, extra_body=getattr(args, "extra_body", None) or None,
                                                  max_input_tokens=getattr(args, "max_input_tokens", None),
                                                  yes_no_mode=getattr(args, "yes_no_mode", None), chat_template=getattr(args, "chat_template", None),
                                                  batch_prompts=getattr(args, "batch_prompts", None))


def json_object(text: str) -> dict:
    """An argparse type: a JSON object (`--extra-body`).

    Args:
        text: the JSON text.

    Raises:
        argparse.ArgumentTypeError: not JSON, or JSON that is not an object.

    Example:
        >>> json_object('{"chat_template_kwargs": {"enable_thinking": false}}')
        {'chat_template_kwargs': {'enable_thinking': False}}
    """
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not JSON: {e}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object, e.g. '{\"chat_template_kwargs\": {\"enable_thinking\": false}}'")
    return value


def add_server_options(p: argparse.ArgumentParser, what: str) -> None:
    """Options for openai: specs, the same in every command.

    Args:
        p: the command's parser.
        what: the model the flags are for, as the help names it ("model", "verifier").

    Example:
        >>> p = Parser(prog="autorule calibrate")
        >>> add_server_options(p, "verifier")
        >>> p.parse_args(["--concurrency", "4"]).concurrency
        4
    """
    p.add_argument("--api-key", default=None, help=f"API key for an openai: {what} (default: $OPENAI_API_KEY)")
    p.add_argument("--concurrency", type=whole(1), default=None,
                   help="most requests in flight to a server (default: the server's slot count where it reports one, as llama-server does, else 16); lowered automatically while the server is overloaded")
    p.add_argument("--timeout", type=number(0, above=True), default=None,
                   help="seconds per request to a server, time queued in the server included (default: 600, enough for a CPU server)")
    p.add_argument("--max-retries", type=whole(0, 100), default=6, help="retries per request on transient faults, with backoff and jitter (default: %(default)s)")
    p.add_argument("--extra-body", type=json_object, default=None, metavar="JSON",
                   help='JSON fields sent with every request, e.g. \'{"chat_template_kwargs": {"enable_thinking": false}}\' (Qwen3 on vLLM/SGLang)')
    p.add_argument("--yes-no-mode", choices=("auto", "batched", "chat"), default=None,
                   help="how rule checks go to a server: batched (/v1/completions requests, every rule of a conversation in one; "
                        "vLLM, SGLang, llama-server), chat (one chat request per check), or auto (default: batched where a probe "
                        "shows it works, else chat; the run says which)")
    p.add_argument("--batch-prompts", type=whole(1), default=None, metavar="N",
                   help="batched mode: most rule prompts in one request; conversations with fewer rules share one (default: 64; 1: one request per conversation)")
    p.add_argument("--chat-template", default=None, metavar="TOKENIZER",
                   help="a tokenizer (hub id or directory) whose chat template renders batched checks, for servers that do not "
                        "render it for the client (SGLang, hosted APIs); llama-server and vLLM need none")


def add_plan_options(p: argparse.ArgumentParser) -> None:
    """`--plan` and `--price-per-mtok`: what `show_plan` reads.

    Args:
        p: the command's parser.

    Example:
        >>> p = Parser(prog="autorule extract")
        >>> add_plan_options(p)
        >>> p.parse_args(["--plan", "--price-per-mtok", "0.15,0.6"]).price_per_mtok
        (0.15, 0.6)
    """
    p.add_argument("--plan", action="store_true",
                   help="print the plan (LLM calls per stage, tokens, cache hits, estimated time and cost) and stop; every run prints it before it starts")
    p.add_argument("--price-per-mtok", type=prices, default=None, metavar="IN,OUT", help="API prices per million input and output tokens, for the plan's cost")


def show_plan(make_plan, args: argparse.Namespace) -> bool:
    """Print the plan before work (on stderr; with --plan --json also as JSON on stdout).

    Args:
        make_plan: called with ``probe`` (time the backend: only with --plan); returns an `autorule.plan.Plan`.
        args: the parsed flags of `add_plan_options`.

    Returns:
        True when the command should stop there (--plan).

    Example:
        >>> class Plan:
        ...     def render(self, console): pass
        >>> show_plan(lambda probe: Plan(), argparse.Namespace(plan=False))
        False
    """
    plan = make_plan(probe=args.plan)
    plan.render(err)
    if args.plan and getattr(args, "json", False):
        print(jsonsafe.dumps(plan.to_dict()))
    return args.plan


def add_model_options(p: argparse.ArgumentParser, default: str = "embedded") -> None:
    """`--model` (a model spec) and the server flags that go with it.

    Args:
        p: the command's parser.
        default: the spec used without --model.

    Example:
        >>> p = Parser(prog="autorule llm generate")
        >>> add_model_options(p)
        >>> p.parse_args([]).model
        'embedded'
    """
    p.add_argument("--model", type=model_spec, default=default, help="model spec: embedded, hf:PATH, gguf:FILE or openai:MODEL@BASE_URL (default: %(default)s)")
    add_server_options(p, "model")


def report_skips(data) -> None:
    """Say on stderr how many rows gave no pair, and why (nothing when none).

    Args:
        data: pairs read (a `PairStream` after a pass, or a `LoadResult`): their ``skipped`` and ``rows``.

    Example:
        >>> from autorule.data import load_pairs
        >>> report_skips(load_pairs([{"prompt": "Q", "chosen": "A", "rejected": "B"}]))
    """
    if data.skipped:
        what = ", ".join(f"{n} {reason}" for reason, n in data.skipped.most_common())
        err.print(f"[yellow]skipped {sum(data.skipped.values())} of {data.rows} rows:[/yellow] {what}")


def add_reward_options(p: argparse.ArgumentParser) -> None:
    """The rule set, its verifier and the reward's settings (`score`, `validate`, `serve`): what `build_scorer` reads.

    Args:
        p: the command's parser.

    Example:
        >>> p = Parser(prog="autorule score")
        >>> add_reward_options(p)
        >>> args = p.parse_args(["--rules", "rules.yaml"])
        >>> args.verifier, args.preset, args.threshold
        ('embedded', 'default', 0.5)
    """
    p.add_argument("--rules", required=True, metavar="RULES", help="rules file (rules.yaml from `autorule extract`)")
    p.add_argument("--verifier", type=model_spec, default="embedded", help="verifier model spec (default: %(default)s)")
    p.add_argument("--preset", default="default", choices=["default", "ternary", "paper"], help="reward preset (paper: RM + 10 x (fraction - 0.75), clipped)")
    p.add_argument("--rm", default=None, metavar="DIR", help="reward model (Hugging Face sequence-classification directory)")
    p.add_argument("--threshold", type=number(0, 1), default=0.5, help="P(Yes) at or above which a verdict counts as satisfied")
    p.add_argument("--aggregation", default="sum", choices=["sum", "normalize_then_sum"],
                   help="how RM and rules combine: the preset's weighted sum, or each normalised within its GRPO group (completions of one prompt) and then summed")
    p.add_argument("--veto-floor", type=float, default=None, metavar="X",
                   help="where a failed essential rule caps the reward (default: the lowest value the preset can give)")
    p.add_argument("--rule-dropout", type=number(0, 0.999), default=0.0, metavar="SHARE",
                   help="share of non-essential rules each GRPO group (completions of one prompt) is scored without (default: %(default)s)")
    p.add_argument("--dropout-seed", type=int, default=0, help="seed of the rule dropout subsets")
    add_server_options(p, "verifier")
    p.add_argument("--max-unparsed", type=number(0, 1), default=0.2, metavar="SHARE",
                   help="stop when more than this share of rule checks get no readable Yes/No, e.g. from a verifier that thinks first (default: %(default)s); unparsed checks are always left out of rewards and counted")
    p.add_argument("--max-input-tokens", type=whole(64), default=None, metavar="N",
                   help="prompt tokens one verifier request may hold; longer conversations are cut in the middle (default: the server's context per slot where it reports one, else 8192)")
    add_cache_options(p)


def build_scorer(args: argparse.Namespace):
    """The command's `RewardScorer` (`autorule.reward.build_scorer`) from the flags of `add_reward_options`.

    Args:
        args: the parsed flags (and `add_completion_options`' where the command has them).

    Raises:
        RulesFileError: a rules file that cannot be read (before the cache is opened).
        LLMError: a verifier that cannot be loaded.

    Example:
        >>> p = Parser(prog="autorule score")
        >>> add_reward_options(p)
        >>> build_scorer(p.parse_args(["--rules", "/no/such/rules.yaml"]))
        Traceback (most recent call last):
        ...
        autorule.rules.ruleset.RulesFileError: /no/such/rules.yaml: no such rules file
    """
    from autorule.reward import build_scorer as build
    from autorule.reward import get_preset
    from autorule.rules import RuleSet

    rules = RuleSet.load(args.rules)  # a bad rules file is named before the cache is opened
    preset = get_preset(args.preset, aggregation=getattr(args, "aggregation", None), veto_floor=getattr(args, "veto_floor", None))
    return build(rules, args.verifier, preset, rm=args.rm, rule_dropout=getattr(args, "rule_dropout", 0.0), dropout_seed=getattr(args, "dropout_seed", 0), cache=open_cache(args), llm_options=llm_options(args, args.verifier),
                 threshold=args.threshold, max_input_tokens=args.max_input_tokens, max_unparsed=args.max_unparsed,
                 judge_reasoning=getattr(args, "judge_reasoning", False), empty_rule_reward=getattr(args, "empty_rule_reward", 0.0))


def add_completion_options(p: argparse.ArgumentParser) -> None:
    """How a response is read before it is judged (`score`, `serve`).

    Args:
        p: the command's parser.

    Example:
        >>> p = Parser(prog="autorule score")
        >>> add_completion_options(p)
        >>> p.parse_args(["--judge-reasoning"]).judge_reasoning
        True
    """
    p.add_argument("--judge-reasoning", action="store_true",
                   help="judge a response's reasoning too (<think>...</think> and the like); by default only the answer after it is judged, and the characters cut are counted")
    p.add_argument("--empty-rule-reward", type=number(0, 1), default=0.0, metavar="FRACTION",
                   help="rule reward (fraction satisfied, before the preset composes it) of a response with nothing to judge: empty, whitespace, or cut off while reasoning (default: %(default)s, the lowest); not sent to the verifier, counted")


def short(text: str, n: int = 200) -> str:
    """Text on one line, cut to `n` characters with an ellipsis: for a table or a list on the terminal.

    Args:
        text: the text.
        n: the most characters kept.

    Example:
        >>> short("Be  brief.\\nAlways."), short("abcdef", 4)
        ('Be brief. Always.', 'abc…')
    """
    from autorule.display import clip

    return clip(" ".join(text.split()), n)
