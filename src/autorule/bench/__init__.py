"""The user-facing measurements behind `autorule bench verifier | verifier-server | verifier-accuracy`
(and `bench injection`, whose attack suite lives with the verifier it attacks: `autorule.verifier.injection`):
a person runs them on their own verifier. The developer benchmarks (extraction, GRPO steps,
server load, plans, merge and growth at scale) are scripts in the repository's `benchmarks/`, not
part of the package; the mock server and the scripted LLM are in `autorule.testing`."""
