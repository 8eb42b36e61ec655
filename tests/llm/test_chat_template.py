"""The client-side chat template of the batched yes/no path: learned from two renderings of a
sentinel, and from a real (tiny, offline) transformers tokenizer."""

import pytest

from autorule.llm.chat_template import PADDED, SENTINEL, ChatTemplate, TemplateError, from_tokenizer

HEAD, TAIL = "<|im_start|>system\nBe fair.<|im_end|>\n<|im_start|>user\n", "<|im_end|>\n<|im_start|>assistant\n"


def test_a_plain_template_keeps_the_content_as_it_is():
    t = ChatTemplate.from_rendering(HEAD + SENTINEL + TAIL, HEAD + PADDED + TAIL, "test")
    assert (t.head, t.tail, t.source, t.trims) == (HEAD, TAIL, "test", False)
    assert t.render("  Is it short?\n") == HEAD + "  Is it short?\n" + TAIL


def test_a_trimming_template_is_detected_and_the_content_trimmed_the_same_way():
    # {{ content | trim }}: the padded sentinel renders exactly as the plain one
    t = ChatTemplate.from_rendering(HEAD + SENTINEL + TAIL, HEAD + SENTINEL + TAIL, "test")
    assert (t.head, t.tail, t.trims) == (HEAD, TAIL, True)
    assert t.render(" \n Is it short?\n\t") == HEAD + "Is it short?" + TAIL


def test_a_template_that_repeats_the_message_is_refused():
    with pytest.raises(TemplateError, match="holds the message 2 times, not once"):
        ChatTemplate.from_rendering(HEAD + SENTINEL + TAIL + SENTINEL, HEAD + PADDED + TAIL + PADDED, "test")
    with pytest.raises(TemplateError, match="holds the message 0 times"):
        ChatTemplate.from_rendering(HEAD + TAIL, HEAD + TAIL, "test")


def test_a_template_that_changes_whitespace_otherwise_than_trimming_is_refused():
    # only the left side stripped: neither verbatim nor trimmed
    with pytest.raises(TemplateError, match="other than trimming"):
        ChatTemplate.from_rendering(HEAD + SENTINEL + TAIL, HEAD + PADDED.lstrip() + TAIL, "test")


PLAIN_JINJA = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
               "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
TRIM_JINJA = ("{{ '<s>' }}{% for m in messages %}[{{ m['role'] | upper }}] {{ m['content'] | trim }} [/{{ m['role'] | upper }}]\n{% endfor %}"
              "{% if add_generation_prompt %}[ASSISTANT]{% endif %}")
CONTENTS = ["Is the response polite? Answer Yes or No.", "  padded\n question with a tab\t ", "Ünïcödé & <tags> {braces}"]


def tiny_tokenizer(directory, chat_template: str):
    """A word-level tokenizer built offline, with `chat_template`, saved to `directory`."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "<s>": 1, "</s>": 2, "<|im_start|>": 3, "<|im_end|>": 4, "yes": 5, "no": 6}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", bos_token="<s>", eos_token="</s>")
    tokenizer.chat_template = chat_template
    tokenizer.save_pretrained(directory)
    return tokenizer


@pytest.mark.parametrize("jinja, trims", [(PLAIN_JINJA, False), (TRIM_JINJA, True)], ids=["plain", "trimming"])
def test_from_tokenizer_renders_as_the_tokenizer_does(tmp_path, jinja, trims):
    tokenizer = tiny_tokenizer(tmp_path, jinja)
    t = from_tokenizer(str(tmp_path))
    assert t.trims is trims and t.source == f"tokenizer {tmp_path}"
    for content in CONTENTS:
        expected = tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True)
        assert t.render(content) == expected
    if trims:
        assert (t.head, t.tail) == ("<s>[USER] ", " [/USER]\n[ASSISTANT]")
    else:
        assert (t.head, t.tail) == ("<|im_start|>user\n", "<|im_end|>\n<|im_start|>assistant\n")


def test_from_tokenizer_without_a_chat_template_says_so(tmp_path):
    tiny_tokenizer(tmp_path, "")
    with pytest.raises(TemplateError, match="has no chat template"):
        from_tokenizer(str(tmp_path))
