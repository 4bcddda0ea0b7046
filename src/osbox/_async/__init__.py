"""The SDK's I/O twins: clients, streams, `Sandbox`.

`osbox._async` is written by hand and is the source of truth; each of its modules has a twin of the same
name in `osbox._sync`, generated from it by `scripts/unasync.py` (whole-word rewrites: see its `RULES`).
Edit only `osbox._async`, then run `make twins`; `make lint` checks that the two trees match.
"""
