"""Keep every text of a figure inside it, whatever the length of a title, label or class name.

Constrained layout moves axes to make room for text, but it never shortens a line: a title wider than the figure
(a long metric title with its CI) is cut at both edges of the image. :func:`fit_text` draws the figure, and wraps
each text that sticks out (at spaces; a word longer than the room is cut into pieces), then draws it again, so the
layout makes room for the extra lines; what still sticks out after that is drawn smaller.
"""

from __future__ import annotations

import textwrap

from matplotlib.figure import Figure
from matplotlib.text import Text
from matplotlib.transforms import Bbox

__all__ = ["fit_text", "texts_outside"]

PAD_PX = 2.0  # a text this close to the edge counts as outside: antialiasing needs a pixel or two
ROUNDS = 6
MIN_CHARS = 6
MIN_FONT_SIZE = 5.0


def _texts(fig: Figure) -> list[Text]:
    """The texts the figure draws: every Text artist but the tick labels, and of those only the ticks drawn (an
    axis keeps labels of ticks outside its limits, undrawn, wherever they were last placed)."""
    tick_labels, drawn = set(), []
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                tick_labels |= {tick.label1, tick.label2}
            drawn += [label for tick in axis._update_ticks() for label in (tick.label1, tick.label2)]
    texts = [t for t in fig.findobj(Text) if t not in tick_labels] + drawn
    return [t for t in texts if t.get_visible() and t.get_text().strip()]


def _room(fig: Figure) -> Bbox:
    box = fig.bbox
    return Bbox.from_extents(box.x0 + PAD_PX, box.y0 + PAD_PX, box.x1 - PAD_PX, box.y1 - PAD_PX)


def _overflow(extent: Bbox, room: Bbox) -> tuple[float, float, float, float]:
    """How far the text sticks out of the room: left, right, below, above (0 where it does not)."""
    return (
        max(0.0, room.x0 - extent.x0),
        max(0.0, extent.x1 - room.x1),
        max(0.0, room.y0 - extent.y0),
        max(0.0, extent.y1 - room.y1),
    )


def texts_outside(fig: Figure) -> list[tuple[str, Bbox]]:
    """The texts of a drawn figure that are not wholly inside it, with their extents (pixels)."""
    renderer = fig.canvas.get_renderer()
    room = _room(fig)
    out = []
    for text in _texts(fig):
        extent = text.get_window_extent(renderer)
        if any(_overflow(extent, room)):
            out.append((text.get_text(), extent))
    return out


def _wrapped(text: str, chars: int) -> str:
    lines = []
    for line in text.split("\n"):
        lines += textwrap.wrap(line, chars, break_long_words=True, break_on_hyphens=False) or [""]
    return "\n".join(lines)


def _narrow(text: Text, extent: Bbox, room: Bbox) -> None:
    """Wrap `text` (or, when it has no more words to break, shrink it) to what the room lets it span."""
    left, right, below, above = _overflow(extent, room)
    vertical = abs(text.get_rotation() % 180 - 90) < 45
    along, (before, after) = (extent.height, (below, above)) if vertical else (extent.width, (left, right))
    if before == after == 0.0:  # sticks out across its lines (too many lines): smaller type is the only way
        text.set_fontsize(max(MIN_FONT_SIZE, text.get_fontsize() * 0.85))
        return
    # a centred text keeps its centre: to come in by d on one side it loses 2 d of its length
    centred = (text.get_verticalalignment() if vertical else text.get_horizontalalignment()) in ("center", "baseline")
    lose = 2.0 * max(before, after) if centred else before + after
    share = max(0.05, (along - lose) / along) if along > 0 else 0.5
    content = text.get_text()
    longest = max(len(line) for line in content.split("\n"))
    chars = max(MIN_CHARS, int(longest * share * 0.97))
    wrapped = _wrapped(content, chars)
    if chars < longest and wrapped != content:
        text.set_text(wrapped)
    else:
        text.set_fontsize(max(MIN_FONT_SIZE, text.get_fontsize() * max(0.6, share)))


def fit_text(fig: Figure) -> None:
    """Wrap (or shrink) the texts of `fig` until every one lies inside the figure; the figure keeps its size."""
    for _ in range(ROUNDS):
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        room = _room(fig)
        outside = [(t, t.get_window_extent(renderer)) for t in _texts(fig)]
        outside = [(t, e) for t, e in outside if any(_overflow(e, room))]
        if not outside:
            return
        for text, extent in outside:
            _narrow(text, extent, room)
    fig.canvas.draw()
