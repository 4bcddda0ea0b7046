"""Suite-wide pytest configuration: fixture plugins shared by several test packages."""

pytest_plugins = [
    "tests.sandbox_image",
    "tests.integration.server_fixtures",
    "tests.integration.execd_fixtures",
]
