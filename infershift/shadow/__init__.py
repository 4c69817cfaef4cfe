"""Shadow comparison for mirrors: pair the primary's and the shadow's answers by request id
(`compare.py`), show and write the report (`report.py`), on the local stack (`local.py`) or on
the pickers' log lines from anywhere (`python -m infershift.shadow report`, README.md)."""
