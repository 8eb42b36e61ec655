"""autorule: learn readable rules from preference data; use them as a fast RL reward."""

__version__ = "0.1.0"
