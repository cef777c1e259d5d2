"""gpt2-bench: GPT-2 training and inference performance regression suite on pytest-benchmark."""

__version__ = "0.4.1"
