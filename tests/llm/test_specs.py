"""Model specs: the one grammar (autorule.llm.specs), and no other module reading a spec's form."""

import argparse
import ast
from pathlib import Path

import pytest

import autorule
from autorule.llm import LLMError, load_llm
from autorule.llm.specs import ModelSpec, SpecError, parse_spec, spec_kind

PACKAGE = Path(autorule.__file__).parent
SPEC_PREFIXES = ("openai:", "hf:", "gguf:", "vllm:")


@pytest.mark.parametrize("text, kind, model, base_url, backend", [
    ("embedded", "embedded", "", None, "local"),
    ("hf:Qwen/Qwen3-0.6B", "hf", "Qwen/Qwen3-0.6B", None, "local"),
    ("hf:./runs/grpo/final", "hf", "./runs/grpo/final", None, "local"),
    ("gguf:/models/m.gguf", "gguf", "/models/m.gguf", None, "local"),
    ("openai:Qwen/Qwen3-8B@http://127.0.0.1:8000/v1", "openai", "Qwen/Qwen3-8B", "http://127.0.0.1:8000/v1", "server"),
    ("openai:me@corp/model@https://host/v1", "openai", "me@corp/model", "https://host/v1", "server"),  # the last @ splits
    ("vllm:Qwen/Qwen3-8B", "vllm", "Qwen/Qwen3-8B", None, None),
])
def test_each_form_parses(text, kind, model, base_url, backend):
    spec = parse_spec(text)
    assert (spec.kind, spec.model, spec.base_url, spec.backend, spec.text) == (kind, model, base_url, backend, text)


def test_a_directory_is_a_local_model(tmp_path):
    spec = parse_spec(str(tmp_path))
    assert (spec.kind, spec.path, spec.backend, spec.text) == ("dir", tmp_path, "local", str(tmp_path))
    assert parse_spec("~").path == Path.home()


@pytest.mark.parametrize("text, message", [
    ("openai:foo", "'openai:foo' has no server address: write openai:MODEL@BASE_URL"),
    ("openai:foo@", "'openai:foo@' has no server address"),
    ("openai:foo@127.0.0.1:8000/v1", "the server address '127.0.0.1:8000/v1' must start with http:// or https://"),
    ("openai:@http://h/v1", "names no model"),
    ("hf:", "'hf:' names no model: write hf:MODEL"),
    ("gguf:", "'gguf:' names no model: write gguf:FILE"),
    ("gpt-4", "unknown model spec 'gpt-4': use embedded, hf:PATH_OR_ID, gguf:FILE, openai:MODEL@BASE_URL or a model directory"),
    ("", "unknown model spec ''"),
    ("~no_such_user_here/model", "unknown model spec"),
])
def test_bad_specs_say_the_form(text, message):
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_spec(text)


def test_spec_error_is_a_value_error_and_what_load_llm_raises():
    with pytest.raises(ValueError, match="unknown model spec"):
        parse_spec("gpt-4")
    with pytest.raises(LLMError, match="has no server address"):
        load_llm("openai:no-url")
    with pytest.raises(LLMError, match="vllm: specs .* are not available in this version; serve the model"):
        load_llm("vllm:Qwen/Qwen3-8B")


def test_bare_names_read_as_hub_ids_where_asked(tmp_path):
    assert parse_spec("Qwen/Qwen3-0.6B", bare="hf") == ModelSpec("hf", "Qwen/Qwen3-0.6B", "hf:Qwen/Qwen3-0.6B")
    assert parse_spec(str(tmp_path), bare="hf").text == f"hf:{tmp_path}"  # `generate` has always named a directory so
    assert parse_spec("gguf:m.gguf", bare="hf").kind == "gguf"
    with pytest.raises(SpecError):
        parse_spec("Qwen/Qwen3-0.6B")


def test_backend_options_keep_what_the_backend_takes():
    everything = {"concurrency": 8, "timeout": None, "max_retries": 6, "api_key": "k", "extra_body": {"top_k": 1}, "max_input_tokens": 512,
                  "batch_size": 4, "pack_tokens": None}
    assert parse_spec("openai:m@http://h/v1").options(**everything) == {"concurrency": 8, "max_retries": 6, "api_key": "k",
                                                                         "extra_body": {"top_k": 1}, "max_input_tokens": 512}
    assert parse_spec("embedded").options(**everything) == {"batch_size": 4}
    assert parse_spec("vllm:m").options(**everything) == {}


def test_spec_kind_tells_specs_from_other_llm_names():
    from autorule.testing.fake_llm import FakeLLM

    assert spec_kind("gguf:m.gguf") == "gguf"
    assert spec_kind(FakeLLM().spec) is None


def test_the_cli_type_reports_the_grammars_message():
    from autorule.cli.options import model_spec

    assert model_spec("vllm:m") == "vllm:m"  # refused later, by load_llm, with advice
    with pytest.raises(argparse.ArgumentTypeError, match="unknown model spec 'gpt-4'"):
        model_spec("gpt-4")


def test_the_server_backend_reads_the_parsed_spec():
    from autorule.llm.openai_compat import OpenAICompatLLM

    llm = OpenAICompatLLM.from_spec("openai:local@http://127.0.0.1:9/v1", concurrency=2)
    assert (llm.model, llm.base_url, llm.spec) == ("local", "http://127.0.0.1:9/v1", "openai:local@http://127.0.0.1:9/v1")
    with pytest.raises(SpecError, match="not a server spec"):
        OpenAICompatLLM.from_spec("embedded")


def _spec_checks(tree: ast.AST) -> list[tuple[int, str]]:
    """Places that read a spec's form: x.startswith/removeprefix/partition("openai:"...), x == "embedded", spec[3:]-style cuts."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("startswith", "removeprefix", "endswith", "split", "partition"):
            args = [a for arg in node.args for a in (arg.elts if isinstance(arg, ast.Tuple) else [arg])]
            if any(isinstance(a, ast.Constant) and isinstance(a.value, str) and a.value.startswith(SPEC_PREFIXES) for a in args):
                found.append((node.lineno, f".{node.func.attr}({ast.unparse(node.args[0])})"))
        elif isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(isinstance(s, ast.Constant) and (s.value == "embedded" or isinstance(s.value, str) and s.value in SPEC_PREFIXES) for s in sides) \
                    and not any(_is_parsed(s) for s in sides):
                found.append((node.lineno, ast.unparse(node)))
    return found


def _is_parsed(node: ast.AST) -> bool:
    """A parsed spec's kind: `spec.kind`, `spec_kind(text)`."""
    if isinstance(node, ast.Attribute):
        return node.attr == "kind"
    return isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) in ("spec_kind", "parse_spec")


def test_only_the_specs_module_reads_a_specs_form():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == PACKAGE / "llm" / "specs.py":
            continue
        for line, what in _spec_checks(ast.parse(path.read_text(encoding="utf-8"))):
            offenders.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {what}")
    assert not offenders, "model specs are read by autorule.llm.specs alone (parse_spec, spec_kind); found:\n" + "\n".join(offenders)


def test_the_check_finds_what_it_is_for():
    code = 'a = spec.startswith(("hf:", "gguf:"))\nb = spec == "embedded"\nc = text.removeprefix("openai:")\nd = spec_kind(s) == "embedded"\ne = parse_spec(s).kind == "embedded"'
    assert [line for line, _ in _spec_checks(ast.parse(code))] == [1, 2, 3]
