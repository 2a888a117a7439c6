"""presence-server: who is online, ring them, fall back to SMS."""

from importlib.metadata import PackageNotFoundError, version

try:
    VERSION = version("presence-server")
except PackageNotFoundError:  # run from a checkout that was never installed
    VERSION = "0.0.0+unknown"
