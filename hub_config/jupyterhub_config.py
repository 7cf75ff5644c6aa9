"""Slicehub's JupyterHub configuration. Nothing here is to be edited for a deployment.

What is served comes from the deployment file (SLICEHUB_DEPLOYMENT, else
/etc/slicehub/deployment.toml; demo.toml beside this file is the embedded demo's) and the
SLICEHUB_* environment (slicehub.settings); docs/deploy.md says how. JupyterHub settings the
deployment file does not cover go in jupyterhub_config.d/*.py beside the deployment file, loaded
after Slicehub's. A bad deployment, site file or ledger stops the hub with the file, key and fix.
"""

from slicehub.hub import configure, overrides

configure(get_config())  # noqa: F821 (provided by JupyterHub)
for override in overrides():  # the operator's own settings, after Slicehub's
    load_subconfig(str(override))  # noqa: F821
