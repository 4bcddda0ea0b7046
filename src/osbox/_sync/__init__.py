# Generated from src/osbox/_async/__init__.py by scripts/unasync.py: do not edit.
"""The async side of the SDK, written by hand: the source of truth for both twins.

Each module here has a sync twin of the same name in `osbox._sync`, generated from it by
`scripts/unasync.py` (`X` -> `X`, `def` -> `def`, `await` dropped, ...). Edit these modules,
never the generated ones, then run `python scripts/unasync.py` (`make twins`); `make lint` checks that
the two trees match.
"""
