"""Data layer: dataset files, cohorts, image reading and caching, splits, synthetic cohorts."""

from benchmark.data.cohort import Cohort, PatientData

__all__ = ["Cohort", "PatientData"]
