"""The nginx router: preview hostnames, promote and rollback.

Modules, each importing only those above it:

    site      validated inputs, the config text (pure) and the file layout
    control   the nginx process: embedded or system, test, reload, watch old workers
    verify    asking nginx, after a reload, whether a name answers as expected
    router    NginxRouter: the transaction that changes the files and undoes any failure
"""

from bgci.router.control import NginxStatus
from bgci.router.router import Applied, NginxRouter
from bgci.router.site import Layout, Site, Upstream, upstream_for, validate_address
from bgci.router.verify import Expectation

__all__ = [
    "Applied",
    "Expectation",
    "Layout",
    "NginxRouter",
    "NginxStatus",
    "Site",
    "Upstream",
    "upstream_for",
    "validate_address",
]
