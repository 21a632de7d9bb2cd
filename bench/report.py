"""What every benchmark prints: a table of its figures, the first columns (names) left-aligned and
the figures right-aligned."""

from __future__ import annotations


def print_table(title: str, header: tuple[str, ...], rows: list[tuple[str, ...]], names: int = 1) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    print(f"\n{title}")
    for row in (header, *rows):
        print(
            "  ".join(
                str(cell).ljust(width) if i < names else str(cell).rjust(width)
                for i, (cell, width) in enumerate(zip(row, widths, strict=True))
            )
        )
