"""nash: from raw text to a trained GPT-2-style language model."""

__version__ = "0.1.0"
