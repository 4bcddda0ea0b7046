"""Suite-wide pytest configuration: fixture plugins shared by several test packages."""

import os

# Servers the tests start (in-process or `osbox serve` subprocesses, which inherit this) get no sandbox
# network unless a test asks for one: the machine's own network is never changed. The network tests
# ask explicitly, with a host namespace of their own (tests/integration/egress/served.py).
os.environ["OSBOX_NETWORK"] = "none"

pytest_plugins = [
    "tests.sandbox_image",
    "tests.integration.server_fixtures",
    "tests.integration.execd_fixtures",
]
