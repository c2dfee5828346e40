"""Inspector: zero-/few-shot anomaly segmentation station for factory quality control."""

__version__ = "0.1.0"
