"""The demo's authenticator: a fixed list of users sharing one password, admins included.

JupyterHub's SharedPasswordAuthenticator makes admins use a separate, long password; the demo
promises one password for alice, bob and staff, so it gets this small authenticator. It is for
the embedded demo only; a centre uses its own identity provider.
"""

from __future__ import annotations

import hmac

from jupyterhub.auth import Authenticator
from traitlets import Unicode


class DemoAuthenticator(Authenticator):
    demo_password = Unicode(
        "slicehub-demo",
        config=True,
        help="""The password every demo user logs in with. Default: "slicehub-demo".""",
    )

    async def authenticate(self, handler, data):
        username = self.normalize_username(data.get("username", ""))
        password = data.get("password", "")
        if username not in self.allowed_users:
            return None
        if not hmac.compare_digest(password.encode(), self.demo_password.encode()):
            return None
        return username
