"""The test cluster's own tests use its fixtures."""

from tests.cluster.fixtures import (  # noqa: F401
    cluster,
    cluster_options,
    kube_api,
    namespace,
    pytest_runtest_makereport,
)
