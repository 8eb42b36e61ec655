"""A plan before work: LLM calls, tokens, cache hits, time and cost of a run, per stage.

Tokens come from the backend's tokenizer (local models; llama-server and vLLM count with
their own), else from a stated approximation. Completion tokens are upper bounds (each
call's max tokens). Times come from the backend's measured speed (`llm.speed`).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass, field

from autorule.data import to_conversation
from autorule.llm.base import LLM, ChatRequest
from autorule.llm.specs import spec_kind
from autorule.llm.speed import Speed, measure

# extraction stages whose inputs do not exist before the run are estimated from these
CANDIDATES_PER_PAIR = 3  # rules one pair's reasoning yields, on average
RULE_TOKENS = 30  # tokens of one candidate rule in a merge prompt
# token counts are exact on up to this many requests, then extrapolated
SAMPLE_LOCAL, SAMPLE_SERVER = 200, 30
# a run past this many seconds on the embedded model is worth a second thought
LONG_RUN_S = 600


@dataclass
class StagePlan:
    """One stage's share of a run.

    Args:
        stage: its name, e.g. "010 reasoning".
        kind: "generations" or "yes/no checks".
        calls: LLM calls (requests, or checks) the stage needs.
        cached: of those, the ones the cache already answers (no call made).
        prompt_tokens: prompt tokens of the calls still to make.
        completion_tokens: at most this many generated tokens (each call's max tokens).
        seconds: estimated time.
        note: how the figures were estimated where they are not exact.
    """

    stage: str
    kind: str
    calls: int
    cached: int
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    note: str = ""


@dataclass
class Capacity:
    """The verifier's load per RL step, and what the judge's measured speed makes of it.

    Args:
        prompts: prompts per step; samples: completions per prompt (the GRPO group); rules: rule questions
            per completion (twice the rules with applicability).
        checks_per_s: checks per second the verifier reached on probe conversations (None: not measured).
        mode: how the checks were sent (`LLM.yes_no_record`'s mode).

    Example:
        >>> c = Capacity(prompts=1024, samples=2, rules=25, checks_per_s=3200.0, mode="batched")
        >>> c.checks_per_step, c.seconds_per_step
        (51200, 16.0)
        >>> c.describe()
        '1,024 prompts x 2 samples x 25 rule questions = 51,200 checks per step; measured 3,200 checks/s (batched) -> 16 s per step'
    """

    prompts: int
    samples: int
    rules: int
    checks_per_s: float | None = None
    mode: str = ""

    @property
    def checks_per_step(self) -> int:
        return self.prompts * self.samples * self.rules

    @property
    def seconds_per_step(self) -> float | None:
        return self.checks_per_step / self.checks_per_s if self.checks_per_s else None

    def describe(self) -> str:
        head = f"{self.prompts:,} prompts x {self.samples:,} samples x {self.rules} rule questions = {self.checks_per_step:,} checks per step"
        if not self.checks_per_s:
            return head + "; the judge's speed is measured only with --plan"
        rate = f"{self.checks_per_s:,.0f}" if self.checks_per_s >= 100 else f"{self.checks_per_s:.3g}"
        return f"{head}; measured {rate} checks/s ({self.mode}) -> {_duration(self.seconds_per_step)} per step"


# probe conversations the capacity is measured on: PROBE_PROMPTS prompts x PROBE_SAMPLES completions
PROBE_PROMPTS, PROBE_SAMPLES = 4, 2


def measure_checks_per_s(verifier, completion_words: int) -> tuple[float, str]:
    """Checks per second of `verifier`'s judge, timed on probe conversations shaped like a GRPO step's
    (PROBE_PROMPTS prompts x PROBE_SAMPLES completions of `completion_words` words), past any cache;
    and the yes/no mode that ran. A first conversation warms the judge up and is not timed."""
    from autorule.verifier import Verifier

    fresh = Verifier(verifier.llm.backend, verifier.rules, style=verifier.style, applicability=verifier.applicability,
                     max_input_tokens=verifier.max_input_tokens, max_unparsed=1.0)
    stamp = f"{time.time_ns()}"  # new text each time: a server's prefix cache holds nothing of it

    def conversation(p: int, s: int) -> list:
        words = " ".join(f"w{(p * 7 + s * 3 + i) % 97}" for i in range(completion_words))
        return to_conversation([{"role": "user", "content": f"Probe prompt {p} ({stamp}): write a short answer."},
                                {"role": "assistant", "content": f"Sample {s}. {words}"}])

    fresh.verify([conversation(-1, 0)])
    convs = [conversation(p, s) for p in range(PROBE_PROMPTS) for s in range(PROBE_SAMPLES)]
    start = time.perf_counter()
    fresh.verify(convs)
    return len(convs) * len(fresh.questions) / (time.perf_counter() - start), fresh.llm.yes_no_record["mode"]


def capacity(verifier, prompts: int, samples: int, completion_words: int, probe: bool) -> Capacity:
    """`Capacity` of a step of `prompts` x `samples` completions; the judge is timed only when `probe`."""
    rate, mode = measure_checks_per_s(verifier, completion_words) if probe else (None, "")
    return Capacity(prompts, samples, len(verifier.questions), rate, mode)


@dataclass
class Plan:
    """Every stage of a run, what counted its tokens, and where its times come from.

    Args:
        model: the model spec the calls go to.
        stages: the stages, in order.
        tokens_from: what counted the tokens.
        speed_from: where the time estimates come from.
        price_per_mtok: (input, output) price per million tokens, for a cost estimate.
        embedded: True when the embedded CPU model does the work (long runs get a warning).

    Example:
        >>> plan = Plan("embedded", [StagePlan("010 reasoning", "generations", 10, 2, 4000, 1024, 700.0)], embedded=True)
        >>> plan.seconds, plan.warnings()[0][:54]
        (700.0, 'the embedded CPU model would take about 12 minutes; us')
    """

    model: str
    stages: list[StagePlan]
    tokens_from: str = ""
    speed_from: str = ""
    price_per_mtok: tuple[float, float] | None = None
    embedded: bool = False
    extra_notes: list[str] = field(default_factory=list)
    capacity: Capacity | None = None

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.stages)

    @property
    def cost(self) -> float | None:
        if self.price_per_mtok is None:
            return None
        price_in, price_out = self.price_per_mtok
        return sum(s.prompt_tokens * price_in + s.completion_tokens * price_out for s in self.stages) / 1e6

    def warnings(self) -> list[str]:
        if self.embedded and self.seconds == self.seconds and self.seconds > LONG_RUN_S:
            return [f"the embedded CPU model would take about {self.seconds / 60:.0f} minutes; use --limit for a smaller run, "
                    "or a served model (--model openai:MODEL@URL, e.g. vLLM, SGLang or llama-server) for real work"]
        return []

    def to_dict(self) -> dict:
        """The plan as JSON-ready data (an unknown time is None)."""
        data = {**asdict(self), "seconds": self.seconds, "cost": self.cost, "warnings": self.warnings()}
        for stage in [data, *data["stages"]]:
            if stage["seconds"] != stage["seconds"]:
                stage["seconds"] = None
        return data

    def render(self, console) -> None:
        """The plan as a table, with its notes and warnings."""
        from rich.table import Table

        table = Table(title=f"plan: {self.model}", title_justify="left")
        table.add_column("stage", overflow="fold")
        for column in ("calls", "cached", "tokens in", "tokens out", "time"):
            table.add_column(column, justify="right", no_wrap=True)
        for s in self.stages:
            table.add_row(s.stage, f"{s.calls:,}", f"{s.cached:,}", f"{s.prompt_tokens:,}", f"{s.completion_tokens:,}", _duration(s.seconds))
        table.add_row("total", f"{sum(s.calls for s in self.stages):,}", f"{sum(s.cached for s in self.stages):,}",
                      f"{sum(s.prompt_tokens for s in self.stages):,}", f"{sum(s.completion_tokens for s in self.stages):,}", _duration(self.seconds),
                      style="bold")
        console.print(table)
        for s in self.stages:
            if s.note:
                console.print(f"  {s.stage}: {s.note}", highlight=False)
        kinds = sorted({s.kind for s in self.stages})
        console.print(f"  calls: {' and '.join(kinds)}; tokens in: {self.tokens_from}; tokens out: at most (each call's max tokens)", highlight=False)
        console.print(f"  time: {self.speed_from}", highlight=False)
        if self.cost is not None:
            console.print(f"  cost at {self.price_per_mtok[0]:g} / {self.price_per_mtok[1]:g} per million tokens: about {self.cost:.2f}", highlight=False)
        for note in self.extra_notes:
            console.print(f"  {note}", highlight=False)
        if self.capacity is not None:
            console.print(f"  capacity: {self.capacity.describe()}", highlight=False)
        for w in self.warnings():
            console.print(f"[yellow]warning:[/yellow] {w}", highlight=False)


def _duration(seconds: float) -> str:
    if seconds != seconds:
        return "?"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def is_embedded(llm: LLM) -> bool:
    return spec_kind(llm.backend.spec) == "embedded"


def tokens_from(llm: LLM) -> str:
    inner = llm.backend
    if hasattr(inner, "tokenizer"):
        return "counted with the model's tokenizer"
    if getattr(getattr(inner, "info", None), "can_tokenize", False):
        return "counted with the server's /tokenize"
    return "approximated as 2 bytes per token (the server does not count tokens)"


def request_tokens(llm: LLM, request: ChatRequest) -> int:
    """Prompt tokens of one chat request as the backend will see it."""
    inner = llm.backend
    if hasattr(inner, "render"):
        return inner.count_tokens(inner.render(request.messages) + request.prefill)
    return sum(llm.count_tokens(m["content"]) for m in request.messages) + 4 * len(request.messages)


def reservoir(items, k: int, seed: int = 0) -> tuple[list, int]:
    """(a uniform sample of at most `k` items, how many there were), in one pass over any
    iterable: a plan never holds a dataset.

    Args:
        items: any iterable; k: sample size; seed: the sample's seed.

    Example:
        >>> sample, n = reservoir(iter(range(1000)), 5)
        >>> len(sample), n, sorted(sample) == sorted(set(sample))
        (5, 1000, True)
    """
    rng = random.Random(seed)
    sample: list = []
    n = 0
    for n, item in enumerate(items, 1):
        if len(sample) < k:
            sample.append(item)
        else:
            j = rng.randrange(n)
            if j < k:
                sample[j] = item
    return sample, n


def _sampled_sum(items: list, count, limit: int, seed: int = 0) -> tuple[int, bool]:
    """sum(count(x)) over items, counted on at most `limit` of them and scaled up."""
    if len(items) <= limit:
        return sum(count(x) for x in items), False
    sample = random.Random(seed).sample(items, limit)
    return round(sum(count(x) for x in sample) * len(items) / limit), True


def _limit(llm: LLM) -> int:
    return SAMPLE_LOCAL if hasattr(llm.backend, "tokenizer") else SAMPLE_SERVER


def _cached_generations(llm: LLM, requests: list[ChatRequest]) -> int:
    return llm.cached_generations(requests) if hasattr(llm, "cached_generations") else 0


def generation_stage(name: str, llm: LLM, speed: Speed | None, requests: list[ChatRequest], *, cached: int | None = None,
                     prompt_tokens: int | None = None, note: str = "", calls: int | None = None) -> StagePlan:
    """A stage of chat generations, from its (actual or representative) requests; `calls`
    when they are a sample of the stage's calls (then `cached` and `prompt_tokens` are given)."""
    calls = len(requests) if calls is None else calls
    cached = _cached_generations(llm, requests) if cached is None else cached
    todo = calls - cached
    sampled = False
    if prompt_tokens is None:
        prompt_tokens, sampled = _sampled_sum(requests, lambda r: request_tokens(llm, r), _limit(llm))
    prompt_tokens = round(prompt_tokens * todo / calls) if calls else 0
    max_new = max((r.max_tokens for r in requests), default=0)
    seconds = speed.generation_seconds(todo, prompt_tokens, max_new, batch_size=getattr(llm.backend, "batch_size", 1)) if speed else math.nan
    if sampled:
        note = "; ".join(filter(None, [note, f"prompt tokens counted on {_limit(llm)} of {calls} requests"]))
    return StagePlan(name, "generations", calls, cached, prompt_tokens, todo * max_new, seconds, note)


def check_stage(name: str, verifier, speed: Speed | None, conversations: list) -> StagePlan:
    """Yes/no checks of every conversation against every rule question of a Verifier."""
    llm = verifier.llm
    k = len(verifier.questions)
    sample, count = reservoir(conversations, _limit(llm))  # any iterable: one pass, nothing held
    calls = count * k
    sampled = count > len(sample)
    prefixes = [verifier.prefix(c) for c in sample]
    prefix_tokens = sum(llm.count_tokens(p) for p in prefixes) * count / max(len(sample), 1)
    cached = llm.cached_checks([(p, verifier.questions) for p in prefixes]) if hasattr(llm, "cached_checks") else 0
    cached = round(cached * count / max(len(sample), 1))
    todo_share = (calls - cached) / calls if calls else 0.0
    question_tokens = sum(llm.count_tokens(q) for q in verifier.questions[: min(k, 8)]) / max(min(k, 8), 1)
    prompt_tokens = round((prefix_tokens + count * k * question_tokens) * todo_share)
    seconds = speed.checks_seconds(round(count * todo_share), round(prefix_tokens * todo_share), calls - cached) if speed else math.nan
    note = f"{count:,} responses x {k} rule questions"
    if sampled:
        note += f"; tokens and cache hits counted on {len(sample)} of {count:,} responses"
    return StagePlan(name, "yes/no checks", calls, cached, prompt_tokens, 0, seconds, note)


def is_server(llm: LLM) -> bool:
    return hasattr(llm.backend, "info")


def speed_for(llm: LLM, probe: bool) -> Speed | None:
    """The backend's speed; a server is probed only when asked (`--plan`), so that a run
    sends nothing before its own requests."""
    if is_server(llm) and not probe:
        return None
    return measure(llm)


def _speed_note(speed: Speed | None) -> str:
    if speed is None:
        return "a server's speed is measured only by --plan (a few probe requests)"
    return speed.source or "measured"


def plan_extract(pairs, llm: LLM, merge_llm: LLM, config, *, price_per_mtok=None, probe: bool = True) -> Plan:
    """The plan of `autorule extract` on these pairs (an ExtractConfig gives the token budgets)."""
    from autorule.extraction import merge as merge_stage
    from autorule.extraction import reason as reason_stage
    from autorule.extraction import candidates as rules_stage
    from autorule.extraction.context import resolve_context
    from autorule.extraction.run import CHUNK

    # prompts as the run will send them: fitted to the model's context
    context = resolve_context(llm, getattr(config, "max_input_tokens", None))
    speed = speed_for(llm, probe)
    merge_speed = speed if merge_llm is llm else speed_for(merge_llm, probe)
    # one pass over the pairs: their count, cache hits (counted a chunk at a time), a sample for tokens
    cached, chunk = 0, []
    cut = 0  # prompts cut in their middle to fit the context

    def requests(pairs):
        nonlocal cached, chunk, cut
        for p in pairs:
            request, _, fitted = reason_stage.reasoning_request(p, config.seed, config.reasoning_tokens, context)
            cut += fitted.omitted > 0
            chunk.append(request)
            if len(chunk) == CHUNK:  # looked up a chunk at a time, as the run does
                cached, chunk = cached + _cached_generations(llm, chunk), []
            yield request

    sample, n = reservoir(requests(pairs), _limit(llm), config.seed)
    cached += _cached_generations(llm, chunk)
    prompt_tokens = round(sum(request_tokens(llm, r) for r in sample) * n / max(len(sample), 1))
    notes = [f"prompt tokens counted on {len(sample)} of {n} requests" if len(sample) < n else "",
             f"{cut} of {n} prompts cut to fit a context of {context.tokens} tokens ({context.source})" if cut else ""]
    stages = [generation_stage("010 reasoning", llm, speed, sample, calls=n, cached=cached, prompt_tokens=prompt_tokens,
                               note="; ".join(filter(None, notes)))]
    # the rule prompt holds the reasoning, at most reasoning_tokens of it
    filler = " ".join(["reason"] * config.reasoning_tokens)
    rules_request = rules_stage.rules_request(filler, config.rules_tokens, config.seed, context)[0]
    stages.append(generation_stage("020 rule extraction", llm, speed, [rules_request] * n, cached=stages[0].cached,
                                   prompt_tokens=request_tokens(llm, rules_request) * n,
                                   note="the prompt holds the reasoning: counted at its maximum; up to one repair call per pair that gives no list (not counted)"))
    if getattr(config, "label_filter", False):
        stages.append(label_filter_stage(llm, speed, n))
    # merging: about CANDIDATES_PER_PAIR candidates per pair, clustered and merged until target_rules remain
    rules_left, merge_calls, rounds = CANDIDATES_PER_PAIR * n, 0, 0
    while rules_left > config.target_rules and rounds < merge_stage.MAX_ROUNDS:
        groups = max(config.target_rules, math.ceil(rules_left / merge_stage.SHRINK))
        merge_calls += min(groups, rules_left - groups)
        rules_left, rounds = groups, rounds + 1
    cluster = min(config.max_cluster, merge_stage.SHRINK)
    example = merge_stage.merge_request(["x " * RULE_TOKENS] * int(cluster), int(cluster) - 1, config.merge_tokens, config.seed)
    merge = generation_stage("030 merge", merge_llm, merge_speed, [example] * merge_calls, cached=0,
                             prompt_tokens=request_tokens(merge_llm, example) * merge_calls,
                             note=f"estimated: {CANDIDATES_PER_PAIR} candidate rules per pair, {rounds} merge rounds")
    start = time.perf_counter()
    merge_stage.load_embedder()  # loaded here, once per process: the run will not wait for it again
    loaded = time.perf_counter() - start
    if loaded > 1:
        merge.note += f"; the sentence embedder was loaded while planning ({loaded:.0f} s)"
    stages.append(merge)
    return Plan(llm.spec, stages, tokens_from(llm), _speed_note(speed), price_per_mtok, embedded=is_embedded(llm))


def label_filter_stage(llm: LLM, speed: Speed | None, pairs: int) -> StagePlan:
    """Stage 025 of `autorule extract`: each pair's candidates verified on its chosen and its rejected reply
    (2 replies x about CANDIDATES_PER_PAIR candidates per pair, counted on a typical short reply).

    Args:
        llm: the extraction model (it judges); speed: its measured speed (None: unknown); pairs: the pairs.

    Example:
        >>> from autorule.testing.fake_llm import FakeLLM
        >>> stage = label_filter_stage(FakeLLM(), None, 10)
        >>> stage.calls, stage.note.startswith("2 replies x 3 candidates")
        (60, True)
    """
    from autorule.rules import RuleSet
    from autorule.verifier import Verifier

    texts = [f"The assistant's response should {'x ' * (RULE_TOKENS - 4)}{i}." for i in range(CANDIDATES_PER_PAIR)]
    verifier = Verifier(llm, RuleSet.from_texts(texts))
    conv = to_conversation([{"role": "user", "content": "A typical prompt of a few words."}, {"role": "assistant", "content": " ".join(["word"] * 200)}])
    prefix_tokens = llm.count_tokens(verifier.prefix(conv))
    question_tokens = sum(llm.count_tokens(q) for q in verifier.questions) / CANDIDATES_PER_PAIR
    replies, calls = 2 * pairs, 2 * pairs * CANDIDATES_PER_PAIR
    seconds = speed.checks_seconds(replies, replies * prefix_tokens, calls) if speed else math.nan
    return StagePlan("025 label filter", "yes/no checks", calls, 0, round(replies * prefix_tokens + calls * question_tokens), 0, seconds,
                     note=f"2 replies x {CANDIDATES_PER_PAIR} candidates per pair (estimated), each reply counted at 200 words; "
                          "--no-label-filter skips it")


def plan_checks(name: str, verifier, conversations: list, *, price_per_mtok=None, probe: bool = True) -> Plan:
    """The plan of verifying conversations (`validate`: both sides of each pair; `score`)."""
    speed = speed_for(verifier.llm, probe)
    stage = check_stage(name, verifier, speed, conversations)
    return Plan(verifier.llm.spec, [stage], tokens_from(verifier.llm), _speed_note(speed), price_per_mtok, embedded=is_embedded(verifier.llm))


def plan_train(config, verifier, *, price_per_mtok=None, probe: bool = True) -> Plan:
    """The verifier's share of `autorule train`: each step's completions checked against every rule."""
    speed = speed_for(verifier.llm, probe)
    completions = config.max_steps * config.per_device_train_batch_size
    k = len(verifier.questions)
    # a representative completion of max_completion_length words after a short prompt
    conv = to_conversation([{"role": "user", "content": "A typical training prompt of a few words."},
                            {"role": "assistant", "content": " ".join(["word"] * config.max_completion_length)}])
    prefix_tokens = verifier.llm.count_tokens(verifier.prefix(conv))
    question_tokens = sum(verifier.llm.count_tokens(q) for q in verifier.questions) / max(k, 1)
    stage = StagePlan("rule checks", "yes/no checks", completions * k, 0, round(completions * (prefix_tokens + k * question_tokens)), 0,
                      speed.checks_seconds(completions, completions * prefix_tokens, completions * k) if speed else math.nan,
                      note=f"{config.max_steps} steps x {config.per_device_train_batch_size} completions x {k} rule questions; "
                           "each completion counted at max_completion_length")
    stages = [stage]
    if getattr(config, "gold_rules", None):  # the gold monitor: every completion against its rules too, never rewarded
        from autorule.rules import RuleSet

        gold = len(RuleSet.load(config.gold_rules))
        stages.append(StagePlan("gold monitor checks", "yes/no checks", completions * gold, 0, round(completions * (prefix_tokens + gold * question_tokens)), 0,
                                speed.checks_seconds(completions, completions * prefix_tokens, completions * gold) if speed else math.nan,
                                note=f"{config.max_steps} steps x {config.per_device_train_batch_size} completions x {gold} gold rules (logged, never rewarded)"))
    plan = Plan(verifier.llm.spec, stages, tokens_from(verifier.llm), _speed_note(speed), price_per_mtok, embedded=is_embedded(verifier.llm))
    plan.extra_notes.append("policy generation, the reward model and optimisation steps are not included")
    if getattr(config, "refresh_every", None):
        plan.extra_notes.append(f"every {config.refresh_every} steps the rule refresh runs extraction on up to {config.refresh_disagreements} "
                                "disagreement pairs and validates its candidates on the held-out pairs: not included")
    # TRL counts completions per step; a GRPO group is num_generations of them
    prompts = max(1, config.per_device_train_batch_size // config.num_generations)
    plan.capacity = capacity(verifier, prompts, config.num_generations, config.max_completion_length, probe)
    return plan


def plan_serve(verifier, prompts: int, samples: int, completion_words: int, *, probe: bool = True) -> Plan:
    """The plan of `autorule serve`: the verifier's checks per RL step (prompts x samples x rules) and,
    with `probe`, the judge's measured checks/s and the time per step it implies.

    Args:
        verifier: the server's verifier; prompts, samples: the trainer's rollout (e.g. OpenRLHF's
            rollout batch size and n_samples_per_prompt); completion_words: a completion's length.

    Example:
        >>> from autorule.testing.fake_llm import FakeLLM
        >>> from autorule.rules import RuleSet
        >>> from autorule.verifier import Verifier
        >>> plan = plan_serve(Verifier(FakeLLM(), RuleSet.from_texts(["Be short.", "Be kind."])), 1024, 2, 50, probe=False)
        >>> plan.capacity.checks_per_step, plan.stages[0].calls
        (4096, 4096)
    """
    cap = capacity(verifier, prompts, samples, completion_words, probe)
    stage = StagePlan("rule checks per step", "yes/no checks", cap.checks_per_step, 0, 0, 0,
                      cap.seconds_per_step if cap.seconds_per_step is not None else math.nan,
                      note="per RL step: every completion against every rule question")
    plan = Plan(verifier.llm.spec, [stage], tokens_from(verifier.llm), f"checks/s measured on {PROBE_PROMPTS * PROBE_SAMPLES} probe conversations"
                if probe else "measured only with --plan", capacity=cap)
    plan.extra_notes.append("the reward model (if any) and the trainer's own time are not included")
    return plan

