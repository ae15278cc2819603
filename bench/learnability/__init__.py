"""The learnability benchmark: synthetic scenes -> fclm-data build -> train a CPU-sized FCLM -> evaluate.

``python -m bench.learnability.run`` (from the repository root) runs the whole path twice, with and without the
consistency losses; ``generate.py`` writes the scenes, ``attributes.py`` scores captions, ``run.py`` drives.
"""
