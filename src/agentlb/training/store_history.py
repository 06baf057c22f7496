"""The store's task history as a training frame (`agentlb train --from-db`, `agentlb retrain`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from agentlb.settings import Settings

if TYPE_CHECKING:
    import pandas as pd


def load_store_history(settings: Settings, since: float | None = None) -> pd.DataFrame:
    """Every finished task since `since` (epoch seconds; all when None), in the history-file
    contract, read from `settings.db_url` (the database is migrated first, as on start-up)."""
    from agentlb.store import Store

    store = Store.open(settings.db_url)
    try:
        return store.history_frame(since=since)
    finally:
        store.close()
