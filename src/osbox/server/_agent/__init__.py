"""The in-sandbox agent (stdlib only: `main.py` runs inside each sandbox as PID 1)."""
