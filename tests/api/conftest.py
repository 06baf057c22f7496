"""The API tests' fixtures live in `api_support` (a uniquely named module, so test files can
import its helpers without colliding with other folders' conftest modules)."""

from api_support import (
    client,
    client_factory,
    db_url,
    fleet_client,
    postgres_database,
    sqlite_factory,
    sqlite_fleet_client,
    sqlite_url,
)

__all__ = [
    "client",
    "client_factory",
    "db_url",
    "fleet_client",
    "postgres_database",
    "sqlite_factory",
    "sqlite_fleet_client",
    "sqlite_url",
]
