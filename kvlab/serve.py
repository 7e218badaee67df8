"""``python -m kvlab.serve``: run one kvlab node as an OS process serving TCP.

    python -m kvlab.serve --node n1 --peers n1=127.0.0.1:7001,n2=127.0.0.1:7002,n3=127.0.0.1:7003 \\
           --data-dir data/n1            # binds 127.0.0.1 unless --bind says otherwise

Start one per node, with the same ``--peers`` everywhere. Without ``--tso HOST:PORT`` the first
node of ``--peers`` also hosts the timestamp oracle (persisted in its data directory); with it,
run the oracle yourself: ``python -m kvlab.serve --node tso --tso HOST:PORT --peers ...
--data-dir data``. Connect with :func:`kvlab.proc.connect`. The design is in :mod:`kvlab.proc`;
there is no authentication: bind beyond 127.0.0.1 only on a network you trust.
"""

from __future__ import annotations

import sys

from kvlab.proc.server import main

if __name__ == "__main__":
    sys.exit(main())
