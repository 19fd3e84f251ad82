"""Fixtures for the SIS tests: an inbox under the test's own data folder and a way to drop files in it.

LEAs 100001 and 100002 are configured in the checked-in ``data/organisations.csv``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from staff_pipeline.settings import Paths, paths

HEADER = (
    "local_staff_id,state_staff_id,first_name,middle_name,last_name,email,alt_email,phone,school_code,"
    "position_code,position_title,begin_date,end_date,fte,username"
)
ROW_1 = (
    "T1,1000000001,José,,van der Berg-Özdemir,jose@lakeview.example.org,,,LVE,TCH,Teacher,2024-08-15,,1,jose"
)
ROW_2 = "T2,,Mary,A.,O'Brien,mary@lakeview.example.org,mob@x.example,,LVH,PRN,Principal,2020-01-01,,0.5,"

Drop = Callable[..., Path]


@pytest.fixture
def where(data_dir: Path) -> Paths:
    """The test's folders (inbox, archive, failed, warehouse) under its private STAFF_DATA_DIR."""
    return paths()


@pytest.fixture
def drop(where: Paths) -> Drop:
    """``drop(lea, name, content, encoding="utf-8", age=60)``: write a file into ``inbox/<lea>/``.

    ``content`` may be text (encoded with ``encoding``, written without newline translation) or
    bytes; ``age`` back-dates its mtime so the sensor treats it as settled.
    """

    def _drop(lea: str, name: str, content: str | bytes, encoding: str = "utf-8", age: float = 60) -> Path:
        folder = where.inbox / lea
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode(encoding))
        stamp = time.time() - age
        os.utime(path, (stamp, stamp))
        return path

    return _drop
