"""The shapes of the names Slicehub accepts from people and files: slice types, project ids,
user names, hub group names. Written once here; the spawn form, the REST APIs, the site file,
the ledger and its command line all check against these patterns (use `fullmatch`).

A name that passes is safe to put in a log line, a URL path segment, a Slurm job name or an
audit entry: no spaces, quotes, shell metacharacters or control characters.
"""

from __future__ import annotations

import re

# "h100.3g.40gb", "h100x4", "cpu", "h100.1g.10gb+me": lower-case letters, digits, ".", "+", "-"
SLICE_TYPE_NAME = re.compile(r"[a-z0-9][a-z0-9.+-]{0,63}")

# "ai-lab", "course-comp5329-2026": lower-case letters, digits and "-", at most 63 characters
PROJECT_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")

# a hub user name as the ledger stores it: letters, digits, ".", "_", "@", "-"; a roster's names
# are lower-cased first (quota.roster.normalise_username)
USERNAME = re.compile(r"[A-Za-z0-9._@-]{1,100}")

# a hub group name as a project names its member group ("proj-vision", "Slicehub.Staff_2026"):
# letters, digits, ".", "_", "-", at most 100 characters; compared exactly (case matters), as
# the hub compares them
GROUP_NAME = re.compile(r"[A-Za-z0-9._-]{1,100}")
