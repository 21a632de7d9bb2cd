"""The test cluster's own tests use a cluster of their own, with the fixtures' default options (the
cluster fixtures are a plugin of every suite: tests/conftest.py; this conftest takes back the
options and the namespace that tests/conftest.py sets for the project's suites)."""

from tests.cluster.fixtures import (  # noqa: F401
    cluster,
    cluster_options,
    kube_api,
    namespace,
)
