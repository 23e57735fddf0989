"""The four providers behind one gateway (the routing of tests/test_providers_matrix.py), for Responses tests."""

from tests.test_providers_matrix import routed, upstreams  # noqa: F401  (fixtures)
