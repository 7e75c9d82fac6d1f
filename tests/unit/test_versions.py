import pytest

from domain.versions import AppVersion


@pytest.mark.parametrize(
    ("text", "components"),
    [
        ("2", (2, 0, 0, 0)),
        ("2.10", (2, 10, 0, 0)),
        ("2.3.0", (2, 3, 0, 0)),
        ("10.0.0.1", (10, 0, 0, 1)),
        ("0.0.0", (0, 0, 0, 0)),
        ("02.003", (2, 3, 0, 0)),
    ],
)
def test_parses_one_to_four_components(text: str, components: tuple[int, ...]) -> None:
    assert AppVersion.parse(text).components == components


@pytest.mark.parametrize(
    "text",
    ["", "2.", ".2", "2..3", "1.2.3.4.5", "v2.3", "2.3-beta", "-1.0", " 2.3", "2.3 ", "２.３", "2,3", "two"],  # noqa: RUF001 - full-width digits on purpose
)
def test_rejects_anything_else(text: str) -> None:
    with pytest.raises(ValueError):
        AppVersion.parse(text)


@pytest.mark.parametrize(
    ("newer", "older"),
    [("10.0.0", "2.9.9"), ("2.10", "2.9"), ("2.0.0.1", "2"), ("3", "2.99.99.99"), ("2.3.10", "2.3.9")],
)
def test_compares_numerically_not_as_strings(newer: str, older: str) -> None:
    assert AppVersion.parse(newer) > AppVersion.parse(older)


def test_missing_components_count_as_zero() -> None:
    assert AppVersion.parse("2") == AppVersion.parse("2.0.0.0")
    assert str(AppVersion.parse("2.10")) == "2.10.0"
