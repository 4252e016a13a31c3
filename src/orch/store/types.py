"""Column types that behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, Dialect
from sqlalchemy import Text as _Text
from sqlalchemy.types import TypeDecorator


class Text(TypeDecorator[str]):
    """Text that PostgreSQL accepts whatever it holds: PostgreSQL refuses NUL characters in text,
    which build and service output may contain; there they become U+FFFD, as undecodable bytes
    do. SQLite stores text as it is."""

    impl = _Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if dialect.name == "postgresql" and isinstance(value, str) and "\x00" in value:
            return value.replace("\x00", "\ufffd")
        return value


class Timestamp(TypeDecorator[datetime]):
    """A moment, stored in UTC and read back as an aware UTC datetime on every store: SQLite
    keeps no time zone, so without this it reads back naive datetimes that PostgreSQL gives
    aware, and the API would print them without their zone."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if isinstance(value, datetime):
            return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if isinstance(value, datetime):
            return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value
