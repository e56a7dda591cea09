"""mollia-edge: offline text labelling with a mixture of local LLMs in an active-learning loop."""

from .offline import keep_offline

keep_offline()  # before any library this package uses is imported: see mollia_edge/offline.py

__version__ = "0.1.0"
