"""Search: candidate files, suites and profiles (spaces.py); Optuna studies (study.py)."""
