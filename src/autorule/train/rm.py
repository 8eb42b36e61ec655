"""`autorule train-rm`: a Bradley-Terry reward model with TRL's RewardTrainer.

The result is a plain Hugging Face sequence-classification model (LoRA adapters are
merged), with `autorule_rm.json` beside it: the score mean and std on the training data
(for normalisation) and the held-out pairwise accuracy.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from pathlib import Path

from autorule import jsonsafe
from autorule.data import PreferencePair
from autorule.llm.local import local_model_path
from autorule.reward import RM_STATS_FILE, RewardModel
from autorule.validation import preference_accuracy


@dataclass
class RMConfig:
    base: str = "embedded"
    out: str = "runs/rm"
    lora: bool = False
    lora_r: int = 16
    epochs: float = 1.0
    max_steps: int = -1
    learning_rate: float = 5e-5
    batch_size: int = 8
    max_length: int = 512
    eval_fraction: float = 0.1
    seed: int = 0
    bf16: bool = False


def split_pairs(pairs: list[PreferencePair], eval_fraction: float, seed: int) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """A seeded split by pair id: the same pair lands on the same side in every run."""
    held = [p for p in pairs if random.Random(f"split:{seed}:{p.id}").random() < eval_fraction]
    held_ids = {p.id for p in held}
    train = [p for p in pairs if p.id not in held_ids]
    if not train or (eval_fraction > 0 and not held):
        raise ValueError(f"cannot split {len(pairs)} pairs into training and held-out sets with eval_fraction={eval_fraction}; use more pairs")
    return train, held


def _conv(pair: PreferencePair, side: str) -> list[dict]:
    return [m.model_dump() for m in pair.conversation(side)]


def train_reward_model(pairs: list[PreferencePair], config: RMConfig) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    train, held = split_pairs(pairs, config.eval_fraction, config.seed)
    base = local_model_path(config.base)
    tokenizer = AutoTokenizer.from_pretrained(base)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    torch.manual_seed(config.seed)
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id

    peft_config = None
    if config.lora:
        from peft import LoraConfig

        peft_config = LoraConfig(task_type="SEQ_CLS", r=config.lora_r, lora_alpha=2 * config.lora_r, target_modules="all-linear")
    out = Path(config.out)
    args = RewardConfig(
        output_dir=str(out / "trainer"),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        learning_rate=config.learning_rate,
        per_device_train_batch_size=config.batch_size,
        max_length=config.max_length,
        bf16=config.bf16,
        gradient_checkpointing=False,
        report_to=[],
        logging_steps=1,
        save_strategy="no",
        seed=config.seed,
        use_cpu=not torch.cuda.is_available(),
    )
    data = Dataset.from_list([{"chosen": _conv(p, "chosen"), "rejected": _conv(p, "rejected")} for p in train])
    trainer = RewardTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer, peft_config=peft_config)
    result = trainer.train()
    trained = trainer.model
    if config.lora:
        trained = trained.merge_and_unload()
    out.mkdir(parents=True, exist_ok=True)
    trained.save_pretrained(out)
    tokenizer.save_pretrained(out)

    rm = RewardModel(str(out), max_length=config.max_length)
    train_scores = rm.score([p.conversation(s) for p in train for s in ("chosen", "rejected")], normalise=False)
    stats = {"mean": float(train_scores.mean()), "std": float(train_scores.std()) or 1.0}
    held_scores = rm.score([p.conversation(s) for p in held for s in ("chosen", "rejected")], normalise=False) if held else None
    train_acc = preference_accuracy(train_scores[0::2], train_scores[1::2]).to_dict()
    held_acc = preference_accuracy(held_scores[0::2], held_scores[1::2]).to_dict() if held_scores is not None else None
    report = {
        **stats,
        "base": config.base,
        "train_pairs": len(train),
        "eval_pairs": len(held),
        "train_accuracy": train_acc,
        "eval_accuracy": held_acc,
        "train_loss": float(result.training_loss),
        "config": asdict(config),
    }
    (out / RM_STATS_FILE).write_text(jsonsafe.dumps(report, indent=2))
    return report
