"""How far a download is, said as lines for logs and as one line redrawn on a terminal."""

from __future__ import annotations

import io

from llamacontroller.fetch.progress import Progress, human_size, progress_line

GIB = 1 << 30


def test_sizes_and_lines_read_as_people_write_them():
    assert [human_size(n) for n in (512, 1536, 98 * (1 << 20) + 1, int(4.9 * GIB))] == [
        "512 B",
        "1.5 KiB",
        "98.0 MiB",
        "4.9 GiB",
    ]
    assert progress_line(int(0.43 * 4.9 * GIB) + 1, int(4.9 * GIB)) == "43 % of 4.9 GiB"
    assert progress_line(GIB - 1, GIB) == "99 % of 1.0 GiB"  # 100 % only once it is all there
    assert progress_line(5 << 20, None) == "5.0 MiB so far"


def test_lines_come_once_per_percent_and_at_most_once_an_interval():
    out, now = io.StringIO(), [0.0]
    progress = Progress(out, interval=1.0, clock=lambda: now[0])
    for done in range(0, 101):
        now[0] += 0.25
        progress.update(done, 100)
    lines = out.getvalue().splitlines()
    assert lines[0] == "0 % of 100 B" and lines[-1] == "100 % of 100 B"
    assert len(lines) == 26  # 0, 4, ... 96 (one a second) and the last
    assert len(set(lines)) == len(lines)


def test_a_terminal_gets_one_line_redrawn_in_place():
    out = io.StringIO()
    progress = Progress(out, in_place=True, interval=0)
    progress.update(50, 100)
    progress.say("note")
    progress.update(100, 100)
    assert out.getvalue() == (
        "\r[" + "#" * 15 + "." * 15 + "] 50 % of 100 B\nnote\n\r[" + "#" * 30 + "] 100 % of 100 B\n"
    )
