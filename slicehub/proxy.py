"""The hub's proxy, as JupyterHub's ConfigurableHTTPProxy with what a restart after a crash needs.

Its auth token is kept in the data dir (0600, `slicehub.hub`), so a hub that restarts after a
`kill -9` speaks to a proxy that outlived it with the same token instead of minting a new one and
being refused. What is done about such a proxy (re-adopt it, or replace it cleanly) is decided
here.
"""

from __future__ import annotations

from jupyterhub.proxy import ConfigurableHTTPProxy


class SlicehubProxy(ConfigurableHTTPProxy):
    """configurable-http-proxy, started and watched by the hub."""
