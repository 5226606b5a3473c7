"""CSV export of the report's lists: streamed page by page, safe to open in a spreadsheet."""
from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Iterator

#: A cell starting with one of these is run as a formula by spreadsheets (CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n")


def neutralise(value) -> str:
    """``value`` as a CSV cell that a spreadsheet shows as text, never runs."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def csv_stream(header: Iterable[str], pages: Iterable[list],
               row_of: Callable[[list], Iterable[list]]) -> Iterator[bytes]:
    """UTF-8 CSV lines: the header, then ``row_of(page)`` for each page as it is fetched."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def flush() -> bytes:
        chunk = buffer.getvalue().encode("utf-8")
        buffer.seek(0)
        buffer.truncate()
        return chunk

    writer.writerow([neutralise(cell) for cell in header])
    yield flush()
    for page in pages:
        for row in row_of(page):
            writer.writerow([neutralise(cell) for cell in row])
        yield flush()


def all_pages(fetch: Callable, query, replace) -> Iterator[list]:
    """Every page of a keyset-paginated list: ``fetch(query)``, then after each page's cursor."""
    while True:
        page = fetch(query)
        yield page.rows
        if page.next is None:
            return
        query = replace(query, after=page.next)
