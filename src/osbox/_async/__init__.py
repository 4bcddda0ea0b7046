"""The async side of the SDK, written by hand: the source of truth for both twins.

Each module here has a sync twin of the same name in `osbox._sync`, generated from it by
`scripts/unasync.py` (`AsyncX` -> `X`, `async def` -> `def`, `await` dropped, ...). Edit these modules,
never the generated ones, then run `python scripts/unasync.py` (`make twins`); `make lint` checks that
the two trees match.
"""
