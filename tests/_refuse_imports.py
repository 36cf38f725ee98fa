"""The prelude of subprocess scripts that prove training never imports ptwt or matplotlib."""

REFUSE_PTWT_MATPLOTLIB = """
import importlib.abc, json, sys

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("ptwt", "matplotlib"):
            raise ImportError(f"{name} is not available while training")
        return None

sys.meta_path.insert(0, Refuse())
"""
