"""CSV downloads (the execution report, the audit log): streamed in constant memory, and safe
to open in a spreadsheet."""
from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence

from flask import Response, stream_with_context

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")   # what a spreadsheet may take for a formula
CHUNK = 64 * 1024


def csv_cell(value):
    """A value a spreadsheet shows and never runs: text it could take for a formula gets a
    leading `'`, as spreadsheet tools expect (an error text may be a host's output)."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def csv_response(filename: str, columns: Sequence[str], rows: Iterable[Sequence]) -> Response:
    """`rows` under a header of `columns` as an attachment named `filename`, sent in chunks
    as the rows are read. Pass a generator that runs its query when first read: the response
    is streamed after the request's own database connection was given back."""

    def generate():
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([csv_cell(value) for value in row])
            if buffer.tell() > CHUNK:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
        yield buffer.getvalue()

    return Response(stream_with_context(generate()), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})
