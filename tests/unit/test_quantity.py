"""Kubernetes quantities as the LlamaModel's resources carry them into its Pod."""

from fractions import Fraction

import pytest

from llamacontroller.quantity import parse_quantity, resource_name_problem


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("500m", Fraction(1, 2)),
        ("2", Fraction(2)),
        (3, Fraction(3)),
        ("8Gi", Fraction(8 * 1024**3)),
        ("1.5G", Fraction(1_500_000_000)),
        (".5", Fraction(1, 2)),
        ("1.", Fraction(1)),
        ("1e3", Fraction(1000)),
        ("1E-2", Fraction(1, 100)),
        ("100n", Fraction(1, 10**7)),
        ("0", Fraction(0)),
    ],
)
def test_quantities_are_read_exactly(text, value):
    assert parse_quantity(text) == value


@pytest.mark.parametrize(
    "text", ["", "-1", "+1", "abc", "1 Gi", "1Gb", "1e", "1e1000", "1.2.3", -1, True, 1.5]
)
def test_anything_else_is_no_quantity(text):
    with pytest.raises(ValueError):
        parse_quantity(text)


@pytest.mark.parametrize(
    "name", ["cpu", "memory", "ephemeral-storage", "nvidia.com/gpu", "example.com/a_b.c"]
)
def test_a_container_may_ask_for_standard_and_extended_resources(name):
    assert resource_name_problem(name) is None


@pytest.mark.parametrize(
    "name",
    [
        "foo",
        "storage",
        "hugepages-2Mi",
        "kubernetes.io/foo",
        "x.kubernetes.io/y",
        "Nvidia.com/gpu",
        "a/-b",
        "nvidia.com/",
        f"{'a' * 245}/gpu",
        f"nvidia.com/{'g' * 64}",
    ],
)
def test_other_resource_names_are_named_as_the_problem(name):
    problem = resource_name_problem(name)
    assert problem is not None and repr(name) in problem
