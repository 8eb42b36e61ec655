"""Online rule refresh: which rollout pairs are picked, which candidates are kept, which rules retired,
the cap, the record, the callback on TRL's own state objects, and the report's rule set over time."""

import json

import numpy as np
import pytest
from fake_llm import ScriptedLLM

from autorule.data import Message, PreferencePair
from autorule.reward.rollouts import Rollout
from autorule.rules import RuleSet, rule_id
from autorule.train.refresh import (
    RuleRefresher,
    disagreement_pairs,
    read_records,
    write_record,
)

PROMPT = [Message(role="user", content="Explain the tides.")]


def roll(name, group, rm, rule, p=None, step=3):
    return Rollout(PROMPT, name, group, step, float("nan"), rule, rm, False, p or {})


# --------------------------------------------------------------------------- disagreement pairs


def test_disagreement_pairs_pick_the_most_disagreeing_pair_of_each_group_then_the_top_groups():
    rollouts = [
        # g1: (a, b) RM margin 1 x rule margin 0.5 = 0.5; (a, c) 2 x 0.25 = 0.5, a tie: the earlier pair; (b, c) agree
        roll("a", "g1", 2.0, 0.25), roll("b", "g1", 1.0, 0.75), roll("c", "g1", 0.0, 0.5),
        # g2: RM prefers e by 2.5, the rules d by 1.0: 2.5
        roll("d", "g2", 0.5, 1.0), roll("e", "g2", 3.0, 0.0),
        # g3: both prefer g: no disagreement
        roll("f", "g3", 1.0, 0.5), roll("g", "g3", 2.0, 1.0),
        # g4, g5: one usable completion each (no RM score; no rule reward)
        roll("h", "g4", None, 0.5), roll("i", "g4", 1.0, 0.5),
        roll("j", "g5", 1.0, float("nan")), roll("k", "g5", 0.0, 0.5),
        # g6: 1 x 0.5 = 0.5, tied with g1: the earlier group first, and past the limit of 2
        roll("l", "g6", 1.0, 0.0), roll("m", "g6", 0.0, 0.5),
    ]
    pairs, counts = disagreement_pairs(rollouts, limit=2)
    assert [(p.group, p.rule_preferred.completion, p.rm_preferred.completion, p.score) for p in pairs] == [("g2", "d", "e", 2.5), ("g1", "b", "a", 0.5)]
    assert dict(counts) == {"rollouts": 13, "rollouts left out: no reward-model score": 1, "rollouts left out: no rule reward (refused by the verifier)": 1,
                            "groups": 6, "groups without a disagreement": 3, "pairs chosen": 2, "pairs left out past the limit": 1}
    # the rules' pick is shown as chosen, the RM's as rejected
    pair = pairs[0].to_pair()
    assert (pair.chosen, pair.rejected, pair.prompt) == ("d", "e", PROMPT)


# --------------------------------------------------------------------------- one refresh, worked by hand

# active rules: a passes everywhere, b fails everywhere (both retired); c and d vary
A, B = "The assistant's response should be in English.", "The assistant's response should include a table."
C, D = "The assistant's response should use plain words a child knows.", "The assistant's response should end with a question to the user."
# the candidates the scripted extraction model returns for every pair
K1 = "The assistant's response should cite a source for every figure it gives."  # agreement 2/2: added
K2 = "The assistant's response should state its assumptions before the answer."  # 1/3, below the weakest (c, 2/3)
K3 = "The assistant's response should keep to plain words a child knows."  # near-duplicate of c
K4 = "The assistant's response should avoid sounding like Assistant B does."  # lint: names a response
K5 = "The assistant's response should be written in full sentences."  # every held-out reply passes: no pair tells sides apart
K6 = "The assistant's response should give one worked example."  # 2/3, equal to c: admitted, then cut by the cap (c stays)
K7 = D  # already active

KEYWORDS = {"English": 0, "table": 1, "plain words": 2, "question to the user": 3, "cite a source": 4, "assumptions": 5,
            "Assistant B": 6, "full sentences": 7, "worked example": 8}

# held-out verdicts: rule keyword -> replies that pass it (threshold 0.5; the others fail)
PASSES = {
    "plain words": {"chosen-1", "chosen-2", "rejected-3"},  # c: pairs 1, 2 for chosen, 3 against: 2/3
    "question to the user": {"chosen-1", "chosen-2", "rejected-2", "chosen-3", "rejected-3"},  # d: 1/1
    "cite a source": {"chosen-1", "chosen-2"},  # K1: 2/2
    "assumptions": {"chosen-1", "rejected-2", "rejected-3"},  # K2: 1/3
    "full sentences": {f"{side}-{i}" for side in ("chosen", "rejected") for i in (1, 2, 3)},  # K5: n = 0
    "worked example": {"chosen-1", "chosen-2", "rejected-3"},  # K6: 2/3
}
HELDOUT = [PreferencePair(id=f"held-{i}", prompt=[Message(role="user", content=f"Question {i}?")], chosen=f"chosen-{i}", rejected=f"rejected-{i}")
           for i in (1, 2, 3)]


def fake_embed(texts):
    """One axis per keyword (texts sharing one are identical); any other text an axis of its own."""
    axes = dict(KEYWORDS)
    out = np.zeros((len(texts), 64))
    for row, text in enumerate(texts):
        key = next((k for k in KEYWORDS if k in text), text)
        out[row, axes.setdefault(key, len(axes))] = 1.0
    return out


def judge(prefix, question):
    """Held-out replies by the table above; on the rollouts (extraction's label filter, where it runs) every rule
    favours the rules' pick of each pair (x2, y1) over the RM's (x1, y2)."""
    reply = prefix.rsplit("<assistant-final-response", 1)[1]
    if any(f">\n{r}\n<" in reply for r in ("x1", "y2")):
        return 0.1
    if not any(f">\n{side}-" in reply for side in ("chosen", "rejected")):
        return 0.9
    key = next((k for k in PASSES if k in question), None)
    return 0.9 if key and any(f">\n{r}\n<" in reply for r in PASSES[key]) else 0.1


def extraction_reply(request):
    if request.template.startswith("reasoning"):
        return "The winning reply cites its sources and keeps to plain words."
    assert request.template.startswith("rules"), request.template
    return json.dumps([K1, K2, K3, K4, K5, K6, K7])


@pytest.fixture
def embed(monkeypatch):
    monkeypatch.setattr("autorule.extraction.merge.load_embedder", lambda: fake_embed)  # extraction's merge and lint
    return fake_embed


def window():
    """Two groups of 4 completions; every completion passes a and fails b, c and d vary."""
    rows = [("x1", "g1", 2.0, 0.25), ("x2", "g1", 0.0, 0.75), ("x3", "g1", 1.0, 0.5), ("x4", "g1", 1.0, 0.5),
            ("y1", "g2", 0.5, 1.0), ("y2", "g2", 1.5, 0.0), ("y3", "g2", 0.5, 1.0), ("y4", "g2", 0.5, 1.0)]
    ids = [rule_id(t) for t in (A, B, C, D)]
    return [roll(name, g, rm, rule, {ids[0]: 0.9, ids[1]: 0.1, ids[2]: 0.9 if i % 2 else 0.1, ids[3]: 0.1 if i % 2 else 0.9}, step=7)
            for i, (name, g, rm, rule) in enumerate(rows)]


def make_refresher(llm, **options):
    return RuleRefresher(llm, HELDOUT, **{"max_active_rules": 3, "retire_min_rollouts": 8, "embed": fake_embed, **options})


def test_a_refresh_keeps_candidates_as_good_as_the_weakest_rule_retires_rules_with_no_signal_and_caps_the_set(tmp_path, embed):
    from autorule.verifier import Verifier

    llm = ScriptedLLM(judge, extraction_reply)
    active = RuleSet.from_texts([A, B, C, D])
    verifier = Verifier(llm, active)
    result = make_refresher(llm).refresh(window(), active, step=10, verifier=verifier, work_dir=tmp_path / "work")

    # g1: (x1, x2) RM margin 2 x rule margin 0.5 = 1.0; g2: (y1, y2) 1 x 1 = 1.0, the later group
    assert [(p.rule_preferred.completion, p.rm_preferred.completion, p.score) for p in result.pairs] == [("x2", "x1", 1.0), ("y1", "y2", 1.0)]
    assert [(c.text, c.reason) for c in result.retired] == [(A, "every completion passed (8 of 8)"), (B, "every completion failed (8 of 8)")]
    assert [(c.text, c.reason) for c in result.added] == [(K1, "held-out agreement 1.000 >= 0.667, the weakest active rule's")]
    assert result.bar == pytest.approx(2 / 3)
    assert {c.text: c.reason for c in result.rejected} == {
        K4: "lint names-response: names 'Assistant B': a rule must judge one response on its own",
        K7: "already active",
        K3: f"near-duplicate of an active rule ({rule_id(C)}, similarity 1.00)",
        K5: "no held-out pair tells its sides apart",
        K2: "held-out agreement 0.333 below 0.667, the weakest active rule's",
        K6: "over max_active_rules (3): held-out agreement 0.667, the lowest",
    }
    assert result.rules.texts == [C, D, K1]
    assert result.changed
    assert result.counts == {
        "rollouts": 8, "groups": 2, "pairs chosen": 2, "candidates extracted": 7, "rules added": 1, "rules retired": 2,
        "candidates dropped": 6, "rules active": 3, "rules retired: every completion passed": 1, "rules retired: every completion failed": 1,
        "candidates dropped: lint names-response": 1, "candidates dropped: already active": 1, "candidates dropped: near-duplicate of an active rule": 1,
        "candidates dropped: no held-out pair tells its sides apart": 1, "candidates dropped: held-out agreement below the bar": 1,
        "candidates dropped: over max_active_rules": 1,
    }
    # the new rule carries its held-out figures and the pairs it came from (both: each gave every candidate)
    added = result.added[0]
    assert (added.stats["agreement"], added.stats["n"], added.stats["coverage"]) == (1.0, 2, pytest.approx(2 / 3))
    assert [(s["chosen_rule_preferred"]["completion"], s["rejected_rm_preferred"]["completion"]) for s in added.sources] == [("x2", "x1"), ("y1", "y2")]
    new_rule = result.rules.rules[2]
    assert new_rule.stats["refresh"] == {"step": 10} and new_rule.stats["validation"]["pairs"] == 3
    assert (tmp_path / "work" / "010_reasoning.jsonl").is_file() and (tmp_path / "work" / "rules.yaml").is_file()

    # the record: step, sources, figures and the rules after
    path = write_record(result, tmp_path / "run", {"from_step": 0, "to_step": 10, "rollouts": 8})
    record = json.loads(path.read_text())
    assert (record["step"], record["window"]["rollouts"], [r["text"] for r in record["rules_after"]]) == (10, 8, [C, D, K1])
    assert record["added"][0]["sources"][0]["prompt"] == [{"role": "user", "content": "Explain the tides."}]
    assert RuleSet.load(path.parent / record["rules_file"]).texts == [C, D, K1]
    assert [r["step"] for r in read_records(tmp_path / "run")] == [10]


def test_held_out_figures_are_computed_once_per_rule(embed):
    llm = ScriptedLLM(judge, extraction_reply)
    from autorule.verifier import Verifier

    refresher = make_refresher(llm, max_active_rules=10)
    active = RuleSet.from_texts([C, D])
    refresher.validate(active.rules, Verifier(llm, active))
    checks = llm.stats["yes_no_checks"]
    assert checks == 2 * 3 * 2  # both sides of 3 pairs x 2 rules
    stats = refresher.validate(active.rules, Verifier(llm, active))
    assert llm.stats["yes_no_checks"] == checks and stats[rule_id(C)].n == 3


def test_no_disagreement_no_extraction_and_the_last_rules_are_never_retired(tmp_path, embed):
    llm = ScriptedLLM(judge, lambda r: pytest.fail("nothing to extract from"))
    active = RuleSet.from_texts([A])
    agree = [roll(f"c{i}", "g", float(i), i / 4, {rule_id(A): 0.9}) for i in range(8)]  # RM and rules rank alike
    result = make_refresher(llm).refresh(agree, active, step=4, verifier=None, work_dir=tmp_path)
    assert (result.pairs, result.added, result.retired, result.rules.texts, result.changed) == ([], [], [], [A], False)
    assert result.counts["groups without a disagreement"] == 1 and result.counts["retirements held back (no rule would be left)"] == 1
    assert result.extraction == {} and not any(tmp_path.iterdir())


def test_a_failed_extraction_is_recorded_and_the_rules_stay(tmp_path, embed):
    llm = ScriptedLLM(judge, lambda r: "I cannot help with that." if r.template.startswith("rules") else "B wins.")
    active = RuleSet.from_texts([C, D])
    from autorule.verifier import Verifier

    result = make_refresher(llm).refresh(window(), active, step=6, verifier=Verifier(llm, active), work_dir=tmp_path)
    assert result.rules.texts == [C, D] and result.added == []
    assert "no candidate rules were extracted" in result.extraction["error"]
    assert result.describe().startswith("rule refresh at step 6: 0 added, 0 retired, 0 candidates dropped; 2 rules active; extraction failed: ")


def test_essential_rules_are_never_retired_nor_cut_by_the_cap(embed):
    from autorule.rules import Rule

    rules = RuleSet(rules=[Rule(id="e", text=A, essential=True), Rule(id="c", text=C)])
    rollouts = [roll(f"c{i}", "g", 0.0, 0.5, {"e": 0.9, "c": 0.9 if i % 2 else 0.1}) for i in range(8)]
    kept, retired, counts = make_refresher(None).retire(rules, rollouts, 0.5)
    assert ([r.id for r in kept], retired, dict(counts)) == (["e", "c"], [], {"essential rules kept with no signal": 1})


# --------------------------------------------------------------------------- the callback, on TRL's own state objects


def test_the_callback_refreshes_every_n_steps_on_the_rollouts_since_the_last_refresh(tmp_path, embed):
    from transformers import (
        TrainerCallback,
        TrainerControl,
        TrainerState,
        TrainingArguments,
    )

    from autorule.reward import RewardScorer
    from autorule.train.refresh import RuleRefreshCallback

    llm = ScriptedLLM(judge, extraction_reply)
    scorer = RewardScorer(RuleSet.from_texts([A, B, C, D]), llm)
    for r in window():
        scorer.rollouts.add(r)
    lines = []
    callback = RuleRefreshCallback(scorer, make_refresher(llm), every=5, run_dir=tmp_path, echo=lines.append)
    assert isinstance(callback, TrainerCallback)
    args, state, control = TrainingArguments(output_dir=str(tmp_path / "out"), use_cpu=True, report_to=[]), TrainerState(), TrainerControl()
    callback.on_train_begin(args, state, control)
    for step in range(1, 11):
        state.global_step = step
        callback.on_step_end(args, state, control)
    # step 5 reads the rollouts from step 0 on: the refresh worked out above; step 10 those from step 5 on (the same 8,
    # scored at step 7): K1 is active now and K6 again loses to c at the cap, so nothing changes
    assert [r["step"] for r in read_records(tmp_path)] == [5, 10]
    assert scorer.rules.texts == [C, D, K1] and scorer.verifier.rules.texts == [C, D, K1]
    assert [c["step"] for c in scorer.rule_changes] == [5]  # swapped once: the second refresh changed nothing
    first, second = read_records(tmp_path)
    assert (second["added"], second["retired"], [r["text"] for r in second["rules_after"]]) == ([], [], [C, D, K1])
    assert first["window"] == {"from_step": 0, "to_step": 5, "rollouts": 8} and second["window"] == {"from_step": 5, "to_step": 10, "rollouts": 8}
    assert lines[0] == ("rule refresh at step 5: 1 added, 2 retired (every completion passed: 1; every completion failed: 1), 6 candidates dropped "
                        "(lint names-response: 1; already active: 1; near-duplicate of an active rule: 1; no held-out pair tells its sides apart: 1; "
                        "held-out agreement below the bar: 1; over max_active_rules: 1); 3 rules active")

    # a resumed run takes the rules of the last record up to its step back, and drops later records
    fresh = RewardScorer(RuleSet.from_texts([A, B, C, D]), llm)
    again = RuleRefreshCallback(fresh, make_refresher(llm), every=5, run_dir=tmp_path, echo=lines.append)
    state.global_step = 7
    again.on_train_begin(args, state, control)
    assert fresh.rules.texts == [C, D, K1] and [r["step"] for r in read_records(tmp_path)] == [5]
    assert lines[-2:] == ["rule refresh: removed the records of steps 10 (after the checkpoint; trained again)",
                          "rule refresh: resumed with the 3 rules of the refresh at step 5"]


def test_the_callback_refuses_several_processes(tmp_path):
    from types import SimpleNamespace

    from autorule.train.refresh import RefreshError, RuleRefreshHook

    hook = RuleRefreshHook(None, None, every=1, run_dir=tmp_path, echo=print)
    with pytest.raises(RefreshError, match="runs on one process; this run has 2"):
        hook.on_train_begin(SimpleNamespace(world_size=2), SimpleNamespace(global_step=0), None)


# --------------------------------------------------------------------------- `autorule train --refresh-every`


def test_refresh_needs_preference_pairs(tmp_path):
    from autorule.train.config import ConfigError, TrainConfig
    from autorule.train.refresh import load_refresh_pairs

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "Hi?"}\n')
    config = TrainConfig(prompts=str(prompts), rules="r.yaml", refresh_every=5)
    with pytest.raises(ConfigError, match=f"--refresh-every needs held-out preference pairs .* --prompts {prompts} holds none"):
        load_refresh_pairs(config)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": f"Q{i}", "chosen": "yes", "rejected": "no"}) + "\n" for i in range(5)))
    assert len(load_refresh_pairs(config.model_copy(update={"refresh_pairs": str(pairs), "refresh_heldout": 3}))) == 3
    assert [p.prompt[0].content for p in load_refresh_pairs(config.model_copy(update={"prompts": str(pairs)}))] == ["Q0", "Q1", "Q2", "Q3", "Q4"]


def test_nan_is_not_a_disagreement():
    pairs, counts = disagreement_pairs([roll("a", "g", 1.0, float("nan")), roll("b", "g", 0.0, 1.0)], 5)
    assert pairs == [] and counts["groups without a disagreement"] == 1


# --------------------------------------------------------------------------- the report


def test_the_report_shows_the_rule_set_over_time(tmp_path):
    import html

    from autorule.reporting import build_report
    from autorule.reporting.timeline import rule_timeline
    from autorule.train.refresh import RefreshResult, RuleChange

    run = tmp_path / "grpo"
    run.mkdir()
    (run / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "rule_reward": 0.5, "total_reward": 0.5}) + "\n" for s in range(1, 11)))
    a, b, c = (RuleSet.from_texts([t]).rules[0] for t in (A, B, C))
    k1 = RuleSet.from_texts([K1]).rules[0]
    first = RefreshResult(5, RuleSet(rules=[a, c, k1]), [a.id, b.id, c.id], added=[RuleChange(k1.id, K1, "held-out agreement 1.000 >= 0.667")],
                          retired=[RuleChange(b.id, B, "every completion failed (8 of 8)")], rejected=[RuleChange("r-x", K2, "already active")])
    second = RefreshResult(10, RuleSet(rules=[c, k1]), [a.id, c.id, k1.id], retired=[RuleChange(a.id, A, "every completion passed (8 of 8)")])
    write_record(first, run)
    write_record(second, run)
    timeline = rule_timeline(read_records(run))
    assert [(r["text"], r["states"]) for r in timeline] == [
        (A, ["active", "active", "retired"]), (B, ["active", "retired", ""]), (C, ["active", "active", "active"]), (K1, ["", "added", "active"])]
    page = build_report(tmp_path).read_text()
    section = page[page.index("Rules over time"):]
    assert "<th>start</th><th>step 5</th><th>step 10</th>" in section
    assert f"{html.escape(B)}</td><td class='num' title=''>\u25cf</td><td class='num' title='every completion failed (8 of 8)'>\u2715</td><td class='num' title=''></td>" in section
    assert "step 5: 1 added, 1 retired, 1 candidates dropped, 3 rules active" in section and "step 10: 0 added, 1 retired" in section


# --------------------------------------------------------------------------- `autorule train --refresh-every` end to end


def caps_judge(messages, body):
    """Verdicts graded by the share of capitals in the judged reply; reasoning and candidate rules for extraction prompts."""
    import re

    text = messages[-1]["content"]
    judged = re.search(r'<assistant-final-response id="\w+">\n(.*)\n</assistant-final-response', text, re.DOTALL)
    if judged:
        letters = [ch for ch in judged.group(1) if ch.isalpha()]
        p = min(max(sum(ch.isupper() for ch in letters) / max(1, len(letters)), 0.02), 0.98)
        return {"content": "Yes" if p >= 0.5 else "No", "yes_probability": p}
    if "Return only a JSON array" in text:
        return {"content": json.dumps(["The assistant's response should shout every word in capitals."])}
    return {"content": "The winner is written in capitals."}


def test_autorule_train_refreshes_the_rules_during_grpo(tmp_path, tiny_models, embed, monkeypatch):
    from autorule.cli.app import main
    from autorule.testing.mock_server import ScriptedServer

    monkeypatch.setattr("autorule.rules.embed.load_embedder", lambda: fake_embed)  # the refresher's near-duplicate check
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Say something about {w}.", "chosen": f"{w.upper()} IS GREAT", "rejected": f"{w} is fine"}) + "\n"
                            for w in ("tea", "rain", "maps", "owls", "jazz", "salt", "kites", "moss", "ferns", "clocks", "dunes", "pears")))
    RuleSet.from_texts([A]).save(tmp_path / "rules.yaml")
    with ScriptedServer(caps_judge) as server:
        code = main(["train", "--policy", str(tiny_models / "policy"), "--prompts", str(data), "--rules", str(tmp_path / "rules.yaml"),
                     "--verifier", f"openai:judge@{server.base_url}", "--rm", str(tiny_models / "rm"), "--no-cache", "--max-steps", "2",
                     "--per-device-train-batch-size", "4", "--num-generations", "4", "--max-completion-length", "6", "--heldout-count", "2",
                     "--monitor-every", "100", "--save-steps", "1000", "--output-dir", str(tmp_path / "grpo"), "--refresh-every", "2",
                     "--max-active-rules", "4"])
    assert code == 0
    (record,) = read_records(tmp_path / "grpo")
    caps = "The assistant's response should shout every word in capitals."
    # the tiny random policy writes lower-case subwords: every completion fails A (no signal: retired); the candidate,
    # judged by capitals like every rule here, agrees with all 12 held-out pairs (chosen in capitals), over the bar of
    # chance (no active rule is left to compare with)
    assert record["window"] == {"from_step": 0, "to_step": 2, "rollouts": 8}  # 2 steps x 4 completions, scored at steps 0 and 1
    assert [(c["text"], c["reason"]) for c in record["retired"]] == [(A, "every completion failed (8 of 8)")]
    assert [(c["text"], c["reason"], c["stats"]["n"]) for c in record["added"]] == [
        (caps, "held-out agreement 1.000 >= 0.500, chance: no active rule has a held-out agreement", 12)]
    assert (len(record["pairs"]), record["counts"]["groups"], record["counts"]["candidates extracted"]) == (2, 2, 1)
    assert {p["chosen_rule_preferred"]["step"] for p in record["pairs"]} <= {0, 1}
    assert all(p["chosen_rule_preferred"]["rule"] > p["rejected_rm_preferred"]["rule"] and p["rejected_rm_preferred"]["rm"] > p["chosen_rule_preferred"]["rm"]
               for p in record["pairs"])
    assert RuleSet.load(tmp_path / "grpo" / "refresh" / record["rules_file"]).texts == [caps]
