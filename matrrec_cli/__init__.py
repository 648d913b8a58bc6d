"""matrrec: reproduce and extend MaTrRec (Mamba + Transformer for sequential recommendation)."""

__version__ = "0.1.0"
