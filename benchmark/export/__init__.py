"""Export a run's candidate as a prediction model, and use it on new patients.

- ``export.py``: ``python -m benchmark export RUN``: the candidate's procedure on the whole cohort;
- ``bundle.py``: the bundle folder (safe formats, SHA-256 per file) and ``load_model``;
- ``codec.py``: fitted objects as JSON + safetensors + native tree files (no pickle);
- ``model.py``: the exported model and its per-patient predictions;
- ``schema.py``: the input schema and new data checked against it;
- ``card.py``: ``model_card.md`` and the nested-CV figures;
- ``predict.py``: ``python -m benchmark predict BUNDLE --data NEW.yaml`` (external validation with labels).
"""
