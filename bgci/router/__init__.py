"""The nginx router: preview hostnames, promote and rollback."""
