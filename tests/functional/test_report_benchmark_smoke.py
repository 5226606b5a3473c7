"""The report benchmark's smoke mode runs end to end on PostgreSQL and prints every figure.

The full-size run (``python -m benchmarks.report_scale``) is not part of the suite;
this only keeps it working. Nothing here is about speed.
"""
import re

from benchmarks.report_scale import main

OPERATIONS = (
    "summary",
    "active started first page", "active started next page",
    "active last_seen first page", "active last_seen next page",
    "active remaining first page", "active remaining next page",
    "active by user",
    "ends first page", "ends next page",
    "ends by reason revoked first page", "ends by reason revoked next page",
    "ends by user",
    "report page total",
)


def test_the_smoke_run_prints_a_timing_row_for_every_operation_and_the_plans(postgres, capsys):
    url = postgres.create_database("report_benchmark_smoke")

    assert main(["--smoke", "--url", url]) == 0

    out = capsys.readouterr().out
    rows = {match[1]: match[2] for match in re.finditer(
        r"^(\S.*?)\s+(\d+\.\d)\s+\d+\.\d\s+100\s+(?:OK|MISS)$", out, re.MULTILINE)}
    assert set(rows) == set(OPERATIONS), out
    plans = re.findall(r"^\s+\[\s*\d+\] (?:ok|SEQ SCAN)\s+\S", out, re.MULTILINE)
    assert len(plans) >= 10, out  # the summary's statements and each list's
