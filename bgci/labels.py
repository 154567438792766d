"""Every label bgci writes on images, containers and Marathon apps: one place, so readers and writers agree.

Labels are bgci's only record of what runs (no private state to drift), so a
name changed in one module and not another would silently lose environments.
"""

from __future__ import annotations

# OCI's own key: the git commit an image was built from (the only label other tools also read).
REVISION = "org.opencontainers.image.revision"

# Images
APP = "io.bgci.app"
KIND = "io.bgci.kind"  # builds: full | deps | code; test images: test; test containers: test-run
BASE_REVISION = "io.bgci.base-revision"  # on deltas: the from-scratch commit they sit on
TEST_BASE = "io.bgci.test.base-image"  # the production image id a test image is built on
TEST_BASE_DIGEST = "io.bgci.test.base-digest"
TEST_PACKAGES = "io.bgci.test.packages"

# Environments (containers and Marathon apps)
ENV = "io.bgci.env"
SHA = "io.bgci.sha"
DIGEST = "io.bgci.digest"
IMAGE = "io.bgci.image"
CREATED_AT = "io.bgci.created-at"
CREATED_BY = "io.bgci.created-by"
HEALTH_PATH = "io.bgci.health-path"
INDEX = "io.bgci.index"  # local backend only: which `<env>.<index>` a container is

PREFIX = "io.bgci."
