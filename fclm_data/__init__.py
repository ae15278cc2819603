"""fclm_data: official dataset releases -> FCLM WebDataset shards (no torch needed)."""

__version__ = "0.1.0"
