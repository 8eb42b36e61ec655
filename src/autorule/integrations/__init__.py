"""Adapters for the trainers people already use: TRL, verl, OpenRLHF (reward server)."""
