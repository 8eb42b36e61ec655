"""The row formats (TRL pairs, hh-rlhf, AlpacaEval, MT-Bench human judgements): one parser per format
turns a row into a pair or raises `BadRow` / `SkipRow`; `detect_format` tells the format from the first rows."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any


from autorule.data.column_kinds import SCORE_PAIRS
from autorule.data.messages import Message, MessageError, normalise_messages
from autorule.data.pairs import BadRow, Columns, SkipRow, pair_id

# every format `--format` takes; the layouts of two answers and a label, and ranked lists,
# are read in autorule.data.layouts
FORMATS = ("pairs", "hh-rlhf", "alpacaeval", "mt-bench-human", "ab", "ultrafeedback", "pku-saferlhf", "shp", "helpsteer3",
           "arena", "arena-kaggle", "nectar", "ranked")


def _require(rec: dict, key: str) -> Any:
    if key not in rec:
        raise BadRow(f"missing column '{key}'", f"columns present: {sorted(rec)}")
    if rec[key] is None:
        raise BadRow(f"null '{key}'")
    return rec[key]


def _as_messages(value: Any, what: str) -> list[Message]:
    if isinstance(value, str):
        return [Message(role="user", content=value)]
    if not isinstance(value, list):
        raise BadRow(f"bad '{what}'", f"expected text or a list of chat messages, got {type(value).__name__}")
    try:  # the one normaliser: null content, content parts, tool calls, tool turns
        return normalise_messages(value)
    except MessageError as e:
        raise BadRow(f"bad '{what}'", str(e)) from None


def _finish(prompt: list[Message], chosen_turns: list[Message], rejected_turns: list[Message]) -> dict:
    """Split two conversations into shared prompt, side histories and final replies."""
    n = 0
    while n < min(len(chosen_turns), len(rejected_turns)) - 1 and chosen_turns[n] == rejected_turns[n]:
        n += 1
    prompt = [*prompt, *chosen_turns[:n]]
    c_rest, r_rest = chosen_turns[n:], rejected_turns[n:]
    for side, rest in (("chosen", c_rest), ("rejected", r_rest)):
        if not rest or rest[-1].role != "assistant":
            raise BadRow(f"no final assistant reply in '{side}'")
    chosen, rejected = c_rest[-1].content, r_rest[-1].content
    _check_replies(chosen, rejected)
    if not any(m.role == "user" for m in prompt):
        raise BadRow("empty prompt", "no user turn before the replies")
    return {
        "id": pair_id(prompt, chosen, rejected),
        "prompt": prompt,
        "chosen": chosen,
        "rejected": rejected,
        "chosen_history": c_rest[:-1],
        "rejected_history": r_rest[:-1],
    }


# a million characters is ~250k tokens: beyond any verifier's context, and a sign of a broken row
MAX_REPLY_CHARS = 1_000_000


def _check_replies(chosen: str, rejected: str) -> None:
    if not chosen.strip():
        raise BadRow("empty reply", "chosen reply is empty")
    if not rejected.strip():
        raise BadRow("empty reply", "rejected reply is empty")
    if chosen.strip() == rejected.strip():
        raise BadRow("chosen identical to rejected")
    for side, text in (("chosen", chosen), ("rejected", rejected)):
        if len(text) > MAX_REPLY_CHARS:
            raise BadRow("reply too long", f"{side} reply is {len(text):,} characters, over the {MAX_REPLY_CHARS:,} limit (no verifier context holds it)")


def _join_prompt(prompt: list[Message], a: list[Message], b: list[Message]) -> tuple[list[Message], list[Message], list[Message], list[str]]:
    """(prompt, a, b, notes) with the prompt said once: TRL's rule, as UltraFeedback-binarized needs.

    Replies that start with the prompt's turns keep them and the prompt is not repeated; a
    text prompt beside message-list replies that hold a user turn is already inside them
    (when it differs from that turn, the replies' turns are read, as TRL does; counted).

    Example:
        >>> u = Message(role="user", content="Hi")
        >>> p, a, _, notes = _join_prompt([u], [u, Message(role="assistant", content="Hello")], [u, Message(role="assistant", content="Go")])
        >>> p, [m.role for m in a], notes
        ([], ['user', 'assistant'], ['prompt already at the start of the replies (not repeated)'])
    """
    n = len(prompt)
    if not n:
        return prompt, a, b, []
    if a[:n] == prompt and b[:n] == prompt:
        return [], a, b, ["prompt already at the start of the replies (not repeated)"]
    if n == 1 and prompt[0].role == "user" and any(m.role == "user" for m in (*a, *b)):
        return [], a, b, ["prompt column differs from the replies' own user turn (the replies' turns read, as TRL does)"]
    return prompt, a, b, []


def _check_scores(rec: dict) -> None:
    """Scores beside chosen/rejected are the label: equal is a tie, a higher-scored rejected reply is refused."""
    cols = next((pair for pair in SCORE_PAIRS if set(pair) <= set(rec)), None)
    if cols is None or rec[cols[0]] is None or rec[cols[1]] is None:
        return
    try:
        chosen, rejected = float(rec[cols[0]]), float(rec[cols[1]])
    except (TypeError, ValueError):
        raise BadRow(f"bad '{cols[0]}'", f"scores {rec[cols[0]]!r} / {rec[cols[1]]!r} are not numbers") from None
    if chosen == rejected:
        raise SkipRow(f"tie ({cols[0]} = {cols[1]})")
    if chosen < rejected:
        raise BadRow(f"{cols[1]} above {cols[0]}", f"{rejected:g} > {chosen:g}: the scores say the rejected reply is better")


def parse_pairs_row(rec: dict, columns: Columns) -> dict:
    """TRL preference formats: explicit prompt, or implicit (prompt inside chosen/rejected).

    A text prompt beside message-list replies that already hold it is said once (TRL's
    rule). Scores beside the replies (``score_chosen``/``score_rejected``, as
    UltraFeedback-binarized has) are the label: equal scores are a tie, skipped and counted.

    Args:
        rec: the row; columns: the prompt/chosen/rejected column names.

    Raises:
        BadRow: a missing, null or malformed column, or scores that contradict the columns.
        SkipRow: equal scores (a tie).

    Example:
        >>> row = parse_pairs_row({"prompt": "Hi", "chosen": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
        ...                        "rejected": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Go"}]}, Columns())
        >>> [(m.role, m.content) for m in row["prompt"]], row["chosen"]
        ([('user', 'Hi')], 'Hello')
    """
    _check_scores(rec)
    chosen_v, rejected_v = _require(rec, columns.chosen), _require(rec, columns.rejected)
    prompt = _as_messages(_require(rec, columns.prompt), "prompt") if columns.prompt in rec else []
    if isinstance(chosen_v, str) and isinstance(rejected_v, str):
        if not prompt:
            raise BadRow(f"missing column '{columns.prompt}'", "text replies need a prompt column")
        return _finish(prompt, [Message(role="assistant", content=chosen_v)], [Message(role="assistant", content=rejected_v)])
    prompt, chosen, rejected, notes = _join_prompt(prompt, _reply_turns(chosen_v, columns.chosen), _reply_turns(rejected_v, columns.rejected))
    return {**_finish(prompt, chosen, rejected), "notes": notes}


def _reply_turns(value: Any, what: str) -> list[Message]:
    """A reply as text (the assistant's) or as chat messages; anything else is refused by _as_messages."""
    if isinstance(value, str):
        return [Message(role="assistant", content=value)]
    return _as_messages(value, what)


_HH_TURN = re.compile(r"\n\n(Human|Assistant):[ ]?")


def parse_hh_transcript(text: str, what: str) -> list[Message]:
    if not isinstance(text, str):
        raise BadRow(f"bad '{what}'", "expected transcript text")
    parts = _HH_TURN.split(text)
    if parts[0].strip() or len(parts) < 3:
        raise BadRow(f"bad '{what}'", "not an hh-rlhf transcript (expected '\\n\\nHuman: ...\\n\\nAssistant: ...')")
    roles = {"Human": "user", "Assistant": "assistant"}
    return [Message(role=roles[parts[i]], content=parts[i + 1].strip()) for i in range(1, len(parts), 2)]


def parse_hh_row(rec: dict, columns: Columns) -> dict:
    chosen = parse_hh_transcript(_require(rec, columns.chosen), columns.chosen)
    rejected = parse_hh_transcript(_require(rec, columns.rejected), columns.rejected)
    for side, turns in (("chosen", chosen), ("rejected", rejected)):
        if turns[-1].role != "assistant":
            # some transcripts end on a Human turn: no reply to judge
            raise BadRow("empty reply", f"{side} transcript ends without an assistant reply")
    return _finish([], chosen, rejected)


def make_alpacaeval_parser(tie_threshold: float) -> Callable[[dict, Columns], dict]:
    def parse(rec: dict, columns: Columns) -> dict:
        instruction = _require(rec, "instruction")
        out1, out2 = _require(rec, "output_1"), _require(rec, "output_2")
        pref = _require(rec, "preference")
        try:
            pref = float(pref)
        except (TypeError, ValueError):
            raise BadRow("bad 'preference'", f"not a number: {pref!r}") from None
        if not 1.0 <= pref <= 2.0:
            raise BadRow("bad 'preference'", f"{pref} is outside [1, 2]")
        if abs(pref - 1.5) < tie_threshold:
            raise SkipRow(f"near-tie (|preference - 1.5| < {tie_threshold})")
        chosen, rejected = (out1, out2) if pref < 1.5 else (out2, out1)
        if not isinstance(instruction, str) or not instruction.strip():
            raise BadRow("empty prompt", "instruction is empty")
        prompt = [Message(role="user", content=instruction)]
        return _finish(prompt, [Message(role="assistant", content=str(chosen))], [Message(role="assistant", content=str(rejected))])

    return parse


def parse_mt_bench_human_row(rec: dict, columns: Columns) -> dict:
    winner = _require(rec, "winner")
    conv_a = _as_messages(_require(rec, "conversation_a"), "conversation_a")
    conv_b = _as_messages(_require(rec, "conversation_b"), "conversation_b")
    turn = int(rec.get("turn", 1) or 1)
    if winner not in ("model_a", "model_b"):
        if str(winner).startswith("tie"):
            raise SkipRow("tie")
        raise BadRow("bad 'winner'", f"expected model_a, model_b or tie, got {winner!r}")

    def upto_turn(conv: list[Message]) -> list[Message]:
        # keep the conversation through the judged turn's assistant reply
        seen = 0
        for i, m in enumerate(conv):
            if m.role == "assistant":
                seen += 1
                if seen == turn:
                    return conv[: i + 1]
        raise BadRow("bad conversation", f"fewer than {turn} assistant turns")

    conv_a, conv_b = upto_turn(conv_a), upto_turn(conv_b)
    chosen, rejected = (conv_a, conv_b) if winner == "model_a" else (conv_b, conv_a)
    return _finish([], chosen, rejected)




