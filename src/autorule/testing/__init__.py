"""Test doubles for autorule and for users' own tests: a scripted LLM (`fake_llm.FakeLLM`)
and a mock OpenAI-compatible server (`mock_server`)."""
