"""`%slicehub`: the session's slice, time, money and memory, printed in the notebook."""

from __future__ import annotations

from IPython.core.magic import Magics, line_magic, magics_class

from .background import ClusterNotStarted


@magics_class
class SlicehubMagics(Magics):
    def __init__(self, shell, session):
        super().__init__(shell)
        self.session = session  # the kernel's stand-in: waits for the cluster's start

    @line_magic
    def slicehub(self, line: str = "") -> None:
        """Print what this kernel runs on and what the session has left."""
        try:
            print(self.session.status())
        except ClusterNotStarted as e:  # a sentence, not a traceback
            print(e)
