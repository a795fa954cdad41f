"""Names of the benchmark protocol that every layer shares (defined once, imported everywhere).

- ``MODALITIES``: what a candidate uses (``register``, ``image``, ``fusion``);
- ``ROLES``: the roles a fusion candidate may consume instead of a candidate name, and the
  modality whose best candidate (by inner-CV score, per outer fold) plays the role;
- ``ORACLE_OF``: the synthetic cohort's oracle column that is the ceiling of a modality.

    >>> ROLES["best_image"], ORACLE_OF["fusion"]
    ('image', 'oracle_both')
"""

from __future__ import annotations

MODALITIES = ("register", "image", "fusion")
ROLES = {"best_image": "image", "best_register": "register"}
ORACLE_OF = {"register": "oracle_register", "image": "oracle_image", "fusion": "oracle_both"}
ORACLE_COLUMNS = tuple(ORACLE_OF.values())
