"""Preference layouts: which format a file is in, and the readers for "two answers and a label"
and for ranked lists.

The label decides which answer won, never a column's position: every layout here reads
its label with a stated meaning (`autorule.data.labels`). Named layouts of public data sets
(PKU-SafeRLHF, SHP, HelpSteer3, Chatbot Arena and its Kaggle CSV, Nectar) are detected
from their columns; any other file with two answers and a label reads with ``--format ab``
and the column flags. Detection looks at the first rows' values (`column_kinds`), so an
id, a bool or a model name is never taken for a reply.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from autorule.data.column_kinds import (
    PROMPT_NAMES,
    RANK_KEYS,
    SCORE_PAIRS,
    column_kinds,
    decode_turns,
    is_reply_kind,
    is_turn_list,
    ranked_keys,
    strong_label_columns,
)
from autorule.data.column_kinds import ONE_HOT, _value_kind, answer_pair
from autorule.data.messages import Message
from autorule.data.pairs import BadRow, Columns, NotPreferenceData, SkipRow
from autorule.data.formats import (
    FORMATS,
    _as_messages,
    _finish,
    _join_prompt,
    _reply_turns,
    _require,
    make_alpacaeval_parser,
    parse_hh_row,
    parse_hh_transcript,
    parse_mt_bench_human_row,
    parse_pairs_row,
)
from autorule.data.labels import MEANINGS_HELP, LabelError, LabelMeaning, infer_label_meaning, label_readings, parse_label_meaning

# rows looked at to tell the format and a label's meaning
PEEK_ROWS = 20
RANKED_RULES = ("best-vs-rest", "adjacent", "all")
# the columns that name each public layout
SIGNATURES: dict[str, frozenset[str]] = {
    "helpsteer3": frozenset({"context", "response1", "response2", "overall_preference"}),
    "pku-saferlhf": frozenset({"prompt", "response_0", "response_1", "better_response_id"}),
    "shp": frozenset({"history", "human_ref_A", "human_ref_B", "labels"}),
    "arena-kaggle": frozenset({"response_a", "response_b", "winner_model_a", "winner_model_b"}),
}
LABEL_NAMES = ("label", "labels", "winner", "preference", "choice", "preferred", "better")
ARENA_ONLY = frozenset({"tstamp", "anony", "language"})  # Chatbot Arena columns MT-Bench judgements lack
Parser = Callable[[dict, Columns], Any]


class Undetected(NotPreferenceData):
    """No format fits the first rows; the message says the closest format and the flags that read them.

    The message comes from `autorule.data.hints`, which sits above this module (it tries each
    proposal with `reader`) and sets `explain` when it is imported (`autorule.data` imports it).

    Args:
        records: the first rows; columns: the column options given.
    """

    explain: Callable[[list[dict], Columns], str] | None = None

    def __init__(self, records: list[dict], columns: Columns):
        self.records, self.columns = records, columns
        explain = Undetected.explain
        super().__init__(explain(records, columns) if explain else f"cannot tell the format from the columns {sorted(_first_keys(records))}")


# --------------------------------------------------------------------------- conversations


def prompt_turns(value: Any, what: str) -> list[Message]:
    """A prompt as chat turns: text (one user turn), chat messages, or an hh transcript that ends
    with an empty "Assistant:" (Nectar's prompts).

    Args:
        value: the prompt cell; what: its column, for messages.

    Raises:
        BadRow: not text or chat messages.

    Example:
        >>> [(m.role, m.content) for m in prompt_turns("\\n\\nHuman: Hi\\n\\nAssistant: Hello\\n\\nHuman: Plants?\\n\\nAssistant:", "prompt")]
        [('user', 'Hi'), ('assistant', 'Hello'), ('user', 'Plants?')]
    """
    if isinstance(value, str) and value.startswith("\n\nHuman:"):
        turns = parse_hh_transcript(value, what)
        return turns[:-1] if turns[-1].role == "assistant" and not turns[-1].content else turns
    return _as_messages(value, what)


def _interleave(prompts: list, replies: list, what: str) -> list[Message]:
    if len(prompts) != len(replies):
        raise BadRow(f"bad '{what}'", f"{len(replies)} turns of replies for {len(prompts)} prompt turns")
    turns = []
    for user, reply in zip(prompts, replies):
        turns += [Message(role="user", content=user or ""), Message(role="assistant", content=reply or "")]
    return turns


def two_conversations(rec: dict, prompt_key: str | None, a_key: str, b_key: str) -> tuple[list[Message], list[Message], list[Message], list[str]]:
    """(shared prompt, A's turns, B's turns, notes) of a row with two answers.

    Answers are text, chat messages, or lists of turns (JSON text in CSV cells, as in the
    Chatbot Arena Kaggle CSV): turn lists are zipped with the prompt's turns into one
    multi-turn conversation per answer.

    Args:
        rec: the row; prompt_key: the prompt column (None: the answers hold it); a_key, b_key: the answers.

    Raises:
        BadRow: a missing or null column, a cell of the wrong type, or turn lists of different lengths.

    Example:
        >>> _, a, b, _ = two_conversations({"prompt": '["Hi", "Plants?"]', "x": '["Hello", "Pothos."]', "y": '["Hey", "Cactus."]'}, "prompt", "x", "y")
        >>> [m.content for m in b]
        ['Hi', 'Hey', 'Plants?', 'Cactus.']
    """
    a, b = decode_turns(_require(rec, a_key)), decode_turns(_require(rec, b_key))
    prompt = decode_turns(_require(rec, prompt_key)) if prompt_key else None
    if is_turn_list(a) or is_turn_list(b) or is_turn_list(prompt):
        prompts = prompt if isinstance(prompt, list) else [prompt]
        if not is_turn_list(prompts):
            raise BadRow(f"bad '{prompt_key}'", "answers are lists of turns, so the prompt must be a list of turns too")
        sides = [x if isinstance(x, list) else [x] for x in (a, b)]
        for key, side in ((a_key, sides[0]), (b_key, sides[1])):
            if not all(isinstance(t, str) or t is None for t in side):
                raise BadRow(f"bad '{key}'", "expected text or a list of text turns")
        return [], _interleave(prompts, sides[0], a_key), _interleave(prompts, sides[1], b_key), []
    shared = prompt_turns(prompt, prompt_key) if prompt_key else []
    return _join_prompt(shared, _reply_turns(a, a_key), _reply_turns(b, b_key))


# --------------------------------------------------------------------------- readers


@dataclass(frozen=True)
class TwoAnswers:
    """Reads rows with two answers and a label that names the better one.

    Args:
        prompt: the prompt column (None when the answers are whole conversations);
        answer_a, answer_b: the first and second answer columns; label: the label column,
        or the one-hot columns (A, B[, tie]); meaning: what the label's values say.

    Example:
        >>> read = TwoAnswers("history", "human_ref_A", "human_ref_B", ("labels",), parse_label_meaning("1=a,0=b"))
        >>> read({"history": "Rice overnight?", "human_ref_A": "Fine.", "human_ref_B": "Refrigerate it.", "labels": 0}, Columns())["chosen"]
        'Refrigerate it.'
    """

    prompt: str | None
    answer_a: str
    answer_b: str
    label: tuple[str, ...]
    meaning: LabelMeaning

    def __call__(self, rec: dict, columns: Columns) -> dict:
        name = ",".join(self.label)
        value = tuple(rec.get(c) for c in self.label) if self.meaning.kind == "onehot" else _require(rec, self.label[0])
        if self.meaning.kind == "onehot":
            for c in self.label:
                _require(rec, c)
        try:
            side = self.meaning.side(value)
        except LabelError as e:
            if _label_like(value):  # a label value the meaning does not know: the meaning is wrong, skipping would hide it
                raise BadRow(f"bad '{name}'", f"{e}; the label meaning does not fit this file's labels: say what they mean with --label-meaning",
                             skippable=False) from None
            raise BadRow(f"bad '{name}'", str(e)) from None
        if side == "tie":
            raise SkipRow("tie")
        prompt, a, b, notes = two_conversations(rec, self.prompt, self.answer_a, self.answer_b)
        chosen, rejected = (a, b) if side == "a" else (b, a)
        return {**_finish(prompt, chosen, rejected), "notes": notes}


@dataclass(frozen=True)
class Ranked:
    """Reads rows with one prompt and k ranked (or scored) answers, as pairs by a stated rule.

    Args:
        prompt: the prompt column; answers: the column holding [{answer, rank}, ...] (or a
            score: higher is better); rule: "best-vs-rest" (the best against each other answer,
            k-1 pairs), "adjacent" (each against the next, k-1 pairs) or "all" (k(k-1)/2 pairs).

    Example:
        >>> row = {"prompt": "Plants?", "answers": [{"answer": "Cactus.", "rank": 3}, {"answer": "Pothos.", "rank": 1}, {"answer": "Ferns.", "rank": 2}]}
        >>> [(p["chosen"], p["rejected"]) for p in Ranked("prompt", "answers", "adjacent")(row, Columns())]
        [('Pothos.', 'Ferns.'), ('Ferns.', 'Cactus.')]
    """

    prompt: str
    answers: str
    rule: str = "best-vs-rest"

    def __call__(self, rec: dict, columns: Columns) -> list:
        prompt = prompt_turns(_require(rec, self.prompt), self.prompt)
        items = decode_turns(_require(rec, self.answers))
        keys = ranked_keys(items)
        if keys is None:
            raise BadRow(f"bad '{self.answers}'", "expected a list of at least two {answer, rank} (or score) objects")
        text_key, order_key = keys
        ranked = []
        for i, item in enumerate(items):
            try:
                order = float(item[order_key])
            except (TypeError, ValueError):
                raise BadRow(f"bad '{self.answers}'", f"answer {i} has {order_key} {item[order_key]!r}, not a number") from None
            if not isinstance(item[text_key], str):
                raise BadRow(f"bad '{self.answers}'", f"answer {i}'s {text_key} is not text")
            ranked.append((order if order_key in RANK_KEYS else -order, i, item[text_key]))
        ranked.sort()  # best first; equal ranks keep the file's order
        k = len(ranked)
        if self.rule == "best-vs-rest":
            index_pairs = [(0, j) for j in range(1, k)]
        elif self.rule == "adjacent":
            index_pairs = [(i, i + 1) for i in range(k - 1)]
        else:
            index_pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]
        out: list = []
        for i, j in index_pairs:
            if ranked[i][0] == ranked[j][0]:
                out.append(SkipRow(f"tie (equal {order_key})"))
                continue
            try:
                pair = _finish(prompt, [Message(role="assistant", content=ranked[i][2])], [Message(role="assistant", content=ranked[j][2])])
            except BadRow as e:
                out.append(e)
                continue
            out.append({**pair, "notes": [f"pairs from ranked lists ({self.rule})"]})
        return out


# --------------------------------------------------------------------------- detection


def _first_keys(records: list[dict]) -> set:
    return set(records[0]) if records else set()


def named_layout(records: list[dict]) -> str | None:
    """The public layout whose columns the first record has, or None.

    Args:
        records: the first rows.

    Example:
        >>> named_layout([{"history": "Q", "human_ref_A": "x", "human_ref_B": "y", "labels": 1}])
        'shp'
    """
    keys = _first_keys(records)
    for name, signature in SIGNATURES.items():
        if signature <= keys:
            return name
    if {"conversation_a", "conversation_b", "winner"} <= keys:
        return "arena" if keys & ARENA_ONLY else "mt-bench-human"
    return None


def score_columns(keys) -> tuple[str, str] | None:
    """The (chosen, rejected) score columns of a pairs row that has them (UltraFeedback-binarized)."""
    return next((pair for pair in SCORE_PAIRS if set(pair) <= set(keys)), None)


def _ranked_column(records: list[dict]) -> str | None:
    kinds = column_kinds(records)
    return next((k for k, kind in kinds.items() if kind == "ranked"), None)


def detect(records: list[dict], columns: Columns) -> str:
    """The format of a file from its first rows (column names and values).

    Args:
        records: the first rows (dicts); columns: the column options given.

    Raises:
        NotPreferenceData: no format fits (the message says why and which flags read it),
            or the file holds prompts only.

    Example:
        >>> detect([{"prompt": "Wifi?", "response_0": "Crack it.", "response_1": "Ask them.", "better_response_id": 1}], Columns())
        'pku-saferlhf'
    """

    keys = _first_keys(records)
    if columns.answer_a or columns.answer_b:
        return "ab"  # the two answer columns were named: their label decides
    if (columns.chosen, columns.rejected) != ("chosen", "rejected") and {columns.chosen, columns.rejected} <= keys:
        return "pairs"  # columns named by the user (a label column next to them is refused later)
    if {"instruction", "output_1", "output_2", "preference"} <= keys:
        return "alpacaeval"
    named = named_layout(records)
    if named:
        return named
    if {"question_id", "turns"} <= keys and columns.chosen not in keys:
        raise NotPreferenceData(
            "this looks like MT-Bench questions (question_id, turns): prompts without preference judgements. "
            "Use it as a prompt file (e.g. for `autorule generate`), not as preference data."
        )
    if {columns.chosen, columns.rejected} <= keys:
        first = records[0][columns.chosen]
        if columns.prompt not in keys and isinstance(first, str) and first.startswith("\n\nHuman:"):
            return "hh-rlhf"
        return "ultrafeedback" if score_columns(keys) else "pairs"
    ranked = _ranked_column(records)
    if ranked and _prompt_column(records, columns):
        keys_of = ranked_keys(decode_turns(records[0].get(ranked)))
        return "nectar" if ranked == "answers" and keys_of and keys_of[1] == "rank" else "ranked"
    if _find_two_answers(records, columns, strict=False) is not None:
        return "ab"
    raise Undetected(records, columns)


def _prompt_column(records: list[dict], columns: Columns) -> str | None:
    kinds = column_kinds(records)
    if columns.prompt in kinds:
        return columns.prompt
    return next((k for k in PROMPT_NAMES if k in kinds and kinds[k] in ("text", "short", "messages", "turns")), None)



def _find_label(kinds: dict[str, str], used: set) -> tuple[str, ...] | None:
    for group in ONE_HOT:
        present = tuple(c for c in group if c in kinds)
        if len(present) >= 2 and present[:2] == group[:2]:
            return present
    for name in LABEL_NAMES:
        if name in kinds and name not in used and not is_reply_kind(kinds[name]) and kinds[name] != "empty":
            return (name,)
    strong = [k for k in strong_label_columns(kinds) if k not in used]  # type: ignore[arg-type]
    return (strong[0],) if strong else None


def _find_two_answers(records: list[dict], columns: Columns, strict: bool) -> TwoAnswers | None:
    """The general reader's columns and label meaning; None (strict: NotPreferenceData) where something is missing."""
    kinds = column_kinds(records)

    def missing(reason: str) -> None:
        if strict:
            raise NotPreferenceData(f"--format ab: {reason} (columns: {sorted(kinds)})")
        return None

    if bool(columns.answer_a) != bool(columns.answer_b):
        raise NotPreferenceData("give both --answer-a-column and --answer-b-column (the first and the second answer)")
    if columns.answer_a:
        for c in (columns.answer_a, columns.answer_b):
            if c not in kinds:
                raise NotPreferenceData(f"answer column '{c}' is not among the columns {sorted(kinds)}")
        answers = (columns.answer_a, columns.answer_b)
    else:
        found = answer_pair(kinds)
        if found is None:
            return missing("no two answer columns found; name them with --answer-a-column and --answer-b-column")
        answers = found
    prompt = _prompt_column(records, columns)
    if prompt in answers:
        prompt = None
    if columns.label and columns.label != "none":
        label = tuple(c.strip() for c in columns.label.split(","))
        for c in label:
            if c not in kinds:
                raise NotPreferenceData(f"label column '{c}' is not among the columns {sorted(kinds)}")
    else:
        label = _find_label(kinds, {*answers, prompt})  # type: ignore[assignment]
        if label is None:
            return missing(f"answers '{answers[0]}' and '{answers[1]}' found, but no label column; name it with --label-column and --label-meaning")
    if prompt is None and not all(kinds[a] == "messages" for a in answers):
        return missing("no prompt column found; name it with --prompt-column")
    return TwoAnswers(prompt, answers[0], answers[1], label, _meaning(records, columns, label))


def _meaning(records: list[dict], columns: Columns, label: tuple[str, ...], default: LabelMeaning | None = None) -> LabelMeaning:
    try:
        if columns.label_meaning:
            meaning = parse_label_meaning(columns.label_meaning)
        elif default is not None:
            meaning = default
        elif len(label) > 1:
            meaning = LabelMeaning("onehot")
        else:
            meaning = infer_label_meaning([rec.get(label[0]) for rec in records], label[0])
    except LabelError as e:
        raise NotPreferenceData(str(e)) from None
    if (meaning.kind == "onehot") != (len(label) > 1):
        raise NotPreferenceData(f"label meaning {meaning.describe()} does not fit the label column(s) {','.join(label)}: "
                                "onehot takes two or three columns (A,B[,TIE]), every other meaning one column")
    return meaning


def _named_reader(name: str, records: list[dict], columns: Columns) -> TwoAnswers:
    keys = _first_keys(records)
    layouts = {
        "pku-saferlhf": ("prompt", "response_0", "response_1", ("better_response_id",), LabelMeaning("index0")),
        "shp": ("history", "human_ref_A", "human_ref_B", ("labels",), parse_label_meaning("1=a,0=b")),
        "helpsteer3": ("context", "response1", "response2", ("overall_preference",), LabelMeaning("sign")),
        "arena": (None, "conversation_a", "conversation_b", ("winner",), LabelMeaning("ab")),
        "arena-kaggle": ("prompt", "response_a", "response_b", tuple(c for c in ONE_HOT[0] if c in keys) or ONE_HOT[0][:2], LabelMeaning("onehot")),
    }
    prompt, a, b, label, meaning = layouts[name]
    if columns.label == "none":
        raise NotPreferenceData(f"the {name} layout is read by its label; --label-column none does not apply")
    if columns.label:
        label = tuple(c.strip() for c in columns.label.split(","))
        for c in label:
            if c not in keys:
                raise NotPreferenceData(f"label column '{c}' is not among the columns {sorted(keys)}")
        meaning = None  # type: ignore[assignment]  # another label column: its meaning is told again
        if name in ("pku-saferlhf", "shp", "helpsteer3", "arena") and len(label) == 1:
            meaning = layouts[name][4]  # e.g. PKU's safer_response_id is a 0-based id like better_response_id
    if columns.prompt != "prompt" and columns.prompt in keys:
        prompt = columns.prompt  # a prompt column named by the user
    return TwoAnswers(prompt, a, b, label, _meaning(records, columns, label, meaning))


def _refuse_ignored_label(records: list[dict], columns: Columns) -> None:
    """The pairs format takes one column as the winner in every row: refuse it on a file whose label says otherwise."""
    if columns.label == "none":
        return
    kinds = column_kinds(records)
    used = {columns.prompt, columns.chosen, columns.rejected, *(score_columns(kinds) or ())}
    labels = [k for k in strong_label_columns(kinds) if k not in used]
    if not labels:
        return
    named = named_layout(records)
    values = sorted({str(rec.get(labels[0])) for rec in records if rec.get(labels[0]) is not None})[:6]
    instead = f"--format {named}" if named else "--format ab with --answer-a-column, --answer-b-column, --label-column and --label-meaning"
    # a named layout's label is its preference label by definition: no escape is offered there (taken,
    # it would read every row the second answer won the wrong way round, with exit 0)
    escape = "" if named else f", or pass --label-column none if '{labels[0]}' is not a preference label"
    raise NotPreferenceData(
        f"column '{labels[0]}' (values {', '.join(values)}) says which answer won, but the pairs format takes '{columns.chosen}' "
        f"as the winner in every row and would ignore it; read it with {instead}{escape}")


def _label_like(value: Any) -> bool:
    """Whether a label cell holds a value some two-answer label has (a small number, a bool, an A/B name, a tie)."""
    if isinstance(value, tuple):  # one-hot cells
        return all(v is None or _value_kind(v) == "label" for v in value)
    return _value_kind(value) == "label"


def _check_meaning(records: list[dict], parse: TwoAnswers) -> None:
    """Refuse a label meaning that does not read the label values of the first rows: the meaning is wrong for the file,
    not the rows (a value no label holds, such as "?", stays a bad row)."""
    if parse.meaning.kind == "onehot":
        return
    column = parse.label[0]
    values = [rec.get(column) for rec in records if rec.get(column) is not None]
    unread = []
    for v in values:
        try:
            parse.meaning.side(v)
        except LabelError:
            if _label_like(v) and v not in unread:
                unread.append(v)
    if not unread:
        return
    readings = [m for m, _ in label_readings(records, column)]
    fits = (f"; readings that fit its values: {' or '.join('--label-meaning ' + m for m in readings)}" if readings
            else f"; say what its values mean with --label-meaning ({MEANINGS_HELP})")
    raise NotPreferenceData(f"label meaning {parse.meaning.describe()} does not fit column '{column}': it does not read "
                            f"{', '.join(repr(v) for v in unread[:6])} in the first rows{fits}")


def _fitting(records: list[dict], columns: Columns, name: str, said: str = "") -> str:
    """What the first rows read as, told by detection, for a message about a --format that does not fit
    ("" where detection agrees, or the message already names it)."""
    try:
        fit = detect(records, columns)
    except NotPreferenceData as e:
        return f"; no format fits them as they are: {e}"
    if fit == name or f"--format {fit}" in said:
        return ""
    return f"; the first rows read as --format {fit} (leave --format out to detect it)"


def _check_fits(name: str, parse: Parser, records: list[dict], columns: Columns) -> None:
    """Refuse a requested format whose columns the first row lacks: every row would be a bad row, and skipping them
    would give no pairs."""
    try:
        out = parse(records[0], columns)
    except SkipRow:
        return
    except BadRow as e:
        out = [e]
    for item in out if isinstance(out, list) else [out]:
        if isinstance(item, BadRow) and item.reason.startswith("missing column"):
            raise NotPreferenceData(f"--format {name} does not fit this file: its first row has no {item.reason[len('missing '):]} "
                                    f"(columns: {sorted(records[0])}){_fitting(records, columns, name)}")


def reader(fmt: str, records: list[dict], columns: Columns, tie_threshold: float = 0.1) -> tuple[str, Parser]:
    """(format name, row parser) for a format name or "auto", told from the first rows.

    A parser returns one pair's fields, or a list of pairs' fields, `SkipRow` and `BadRow`
    (ranked rows give several pairs).

    Args:
        fmt: "auto" or one of `FORMATS`; records: the first rows (dicts); columns: the column
            and label options; tie_threshold: AlpacaEval's near-tie width.

    Raises:
        NotPreferenceData: no format fits, a label's meaning is ambiguous or does not fit,
            a named column is missing, or the pairs format would ignore a label column.

    Example:
        >>> name, parse = reader("auto", [{"history": "Rice?", "human_ref_A": "Fine.", "human_ref_B": "Chill it.", "labels": 0}], Columns())
        >>> name, parse({"history": "Rice?", "human_ref_A": "Fine.", "human_ref_B": "Chill it.", "labels": 0}, Columns())["chosen"]
        ('shp', 'Chill it.')
    """
    name = detect(records, columns) if fmt == "auto" else fmt
    if name not in FORMATS:
        raise NotPreferenceData(f"unknown format '{name}' (choose from auto, {', '.join(FORMATS)})")
    if columns.ranked_pairs not in RANKED_RULES:
        raise NotPreferenceData(f"unknown ranked-pairs rule '{columns.ranked_pairs}' (choose from {', '.join(RANKED_RULES)})")
    uses_label = name in ("ab", *SIGNATURES, "arena")
    if not uses_label and columns.label_meaning:
        raise NotPreferenceData(f"--label-meaning does not apply to the {name} format (it reads two answers and a label: --format ab or a named layout)")
    if not uses_label and columns.label not in (None, "none"):
        raise NotPreferenceData(f"--label-column does not apply to the {name} format (it reads two answers and a label: --format ab or a named layout)")
    try:
        parse = _parser(name, records, columns, tie_threshold)
    except NotPreferenceData as e:
        if fmt == "auto" or not records:
            raise
        raise NotPreferenceData(f"{e}{_fitting(records, columns, name, str(e))}") from None
    if records and isinstance(parse, TwoAnswers):
        _check_meaning(records, parse)
    if records and fmt != "auto":
        _check_fits(name, parse, records, columns)
    return name, parse


def _parser(name: str, records: list[dict], columns: Columns, tie_threshold: float) -> Parser:
    """The row parser of a format, set up from the first rows (see `reader`)."""
    if name in ("pairs", "ultrafeedback"):
        if records:
            _refuse_ignored_label(records, columns)
        return parse_pairs_row
    simple: dict[str, Parser] = {"hh-rlhf": parse_hh_row, "alpacaeval": make_alpacaeval_parser(tie_threshold), "mt-bench-human": parse_mt_bench_human_row}
    if name in simple:
        return simple[name]
    if name in (*SIGNATURES, "arena"):
        return _named_reader(name, records, columns)
    if name in ("nectar", "ranked"):
        answers = _ranked_column(records)
        prompt = _prompt_column(records, columns)
        if answers is None or prompt is None:
            raise NotPreferenceData(f"--format {name} needs a prompt column and a column of ranked answers "
                                    "([{answer, rank}, ...] or a score, higher better); columns: " + str(sorted(_first_keys(records))))
        return Ranked(prompt, answers, columns.ranked_pairs)
    return _find_two_answers(records, columns, strict=True)  # type: ignore[return-value]


__all__ = ["FORMATS", "PEEK_ROWS", "Ranked", "TwoAnswers", "Undetected", "answer_pair", "detect", "named_layout", "prompt_turns",
           "reader", "score_columns", "two_conversations"]

