"""Search: candidate files and suites (spaces.py), profiles (profiles.py); Optuna studies (study.py, trials.py)."""
