"""Benchmarks (`autorule bench ...`, BENCHMARKS.md) and the mock OpenAI-compatible server they and the tests use."""
