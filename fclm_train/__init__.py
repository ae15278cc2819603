"""fclm_train: the FCLM model (Qwen2.5-VL + hybrid region extractor + SAM decoder) and its trainer."""

__version__ = "0.1.0"
