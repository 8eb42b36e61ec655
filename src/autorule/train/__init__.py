"""Training on TRL: a Bradley-Terry reward model, and GRPO with rule rewards."""
