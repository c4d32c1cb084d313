"""gptperf: a GPT you can see through — its cost modelled exactly, measured, profiled and compared."""

__version__ = "0.1.0"
