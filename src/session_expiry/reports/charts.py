"""The report's pictures: inline SVG rendered on the server by pygal (no JavaScript, no CDN).

Each chart comes with its data as a table, the text alternative the page shows beside it.
"""
from __future__ import annotations

from datetime import UTC, datetime

import pygal
from markupsafe import Markup
from pygal.style import Style

from ..decision import END_REASONS
from ..stores.readmodel import HOUR, HOURS, LENGTH_LABELS, Summary

#: One colour per end reason; distinguishable with the common colour-vision deficiencies.
REASON_COLOURS = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7")

_STYLE = Style(background="transparent", plot_background="transparent",
               foreground="#1b1f24", foreground_strong="#1b1f24", foreground_subtle="#57606a",
               colors=REASON_COLOURS, font_family="system-ui, sans-serif",
               label_font_size=13, major_label_font_size=13, legend_font_size=13,
               value_font_size=12, tooltip_font_size=12)
_CONFIG = {"style": _STYLE, "js": [], "disable_xml_declaration": True, "width": 760,
           "height": 300, "legend_at_bottom": True, "print_values": False,
           "show_y_guides": True, "no_data_text": "Nothing yet", "margin": 10,
           # Whole labels ("00:00", "8 h or more"), not pygal's "00…" and "8 h or m…".
           "truncate_label": -1}


def hour_labels(now: int) -> list[str]:
    """Each column's start as a UTC clock time, oldest first."""
    return [datetime.fromtimestamp(now - (hours + 1) * HOUR, UTC).strftime("%H:%M")
            for hours in reversed(range(HOURS))]


def count_ticks(peak: int, most: int = 8) -> list[int]:
    """Whole-number ticks from 0 to at least ``peak``, at most ``most`` + 1 of them.

    Sessions are counted: pygal's own ticks would offer 0.2 of a session.
    """
    magnitude = 1
    while True:
        for step in (magnitude, 2 * magnitude, 5 * magnitude):
            steps = max(1, -(-peak // step))
            if steps <= most:
                return list(range(0, steps * step + 1, step))
        magnitude *= 10


def ends_per_hour(summary: Summary, label: str) -> Markup:
    chart = pygal.StackedBar(x_label_rotation=0, x_labels_major_every=3,
                             show_minor_x_labels=False, **_CONFIG)
    chart.x_labels = hour_labels(summary.now)
    chart.y_labels = count_ticks(max(sum(hour.values()) for hour in summary.ends_per_hour))
    for reason in END_REASONS:
        chart.add(reason.replace("_", " "),
                  [summary.ends_per_hour[hours][reason] for hours in reversed(range(HOURS))])
    return _inline(chart, label)


def length_histogram(summary: Summary, label: str) -> Markup:
    chart = pygal.Bar(show_legend=False, **_CONFIG)
    chart.x_labels = LENGTH_LABELS
    chart.y_labels = count_ticks(max(summary.length_histogram))
    chart.add("sessions", summary.length_histogram)
    return _inline(chart, label)


def _inline(chart, label: str) -> Markup:
    """The SVG as an image with a name; its data table is the longer text alternative."""

    def named_without_scripts(root):
        # pygal always writes an inline <script> with its config, whatever ``js`` says,
        # and titles every chart "Pygal": drop the one, name the other.
        for parent in list(root.iter()):
            for child in list(parent):
                if child.tag == "script":
                    parent.remove(child)
                elif child.tag == "title" and parent is root:
                    child.text = label
        root.set("role", "img")
        root.set("aria-label", label)
        return root

    chart.add_xml_filter(named_without_scripts)
    # pygal (ElementTree) escapes every label, value and attribute it writes.
    return Markup(chart.render(is_unicode=True))  # noqa: S704
