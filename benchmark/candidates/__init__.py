"""Candidate families: register data (tabular, MLP), images (timm CNNs), fusion."""

from benchmark.candidates.base import Family, TrialContext, family_names, get_family, register_family

__all__ = ["Family", "TrialContext", "family_names", "get_family", "register_family"]
