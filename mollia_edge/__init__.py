"""mollia-edge: offline text labelling with a mixture of local LLMs in an active-learning loop."""

__version__ = "0.1.0"
