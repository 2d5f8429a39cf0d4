"""alignts: time-series LLMs on a device (Injective, Bridging and Internal alignment)."""

__version__ = "0.1.0"
