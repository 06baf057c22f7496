"""The publish script's own connection: one Lua call per fleet event, at the cost of a round trip.

Every selection and every outcome of a replica publishes one event, so this call is on the
request path. redis-py's generic command path (a pooled connection taken and given back, every
argument encoded in Python, a retry wrapper, the reply's command-specific callback) costs about
as much client CPU as the round trip itself (~110 µs against ~40 µs on a 2-core machine,
`benchmarks/shared_state.py`); this one holds a connection of its own, configured exactly as the
client's (URL, password, TLS, socket), packs the command once with hiredis and reads the reply
with the connection's parser. The script is called by its SHA and loaded again on NOSCRIPT (a
restarted or flushed Redis). A connection the server closed while it was idle (a restart, a
`timeout` setting, CLIENT KILL) is noticed before sending, by a zero-timeout poll, and opened
again; a failure once the command is sent is not retried, since the script may have run: the
error is redis-py's (`redis.RedisError`) and the caller treats Redis as down, as before. Not
thread-safe: the log's lock serialises its callers.
"""

from __future__ import annotations

import hashlib
from typing import Any

import hiredis
import redis


class HotScript:
    """Call one Lua script on a dedicated connection (see the module docstring)."""

    def __init__(self, client: redis.Redis, source: str) -> None:
        pool = client.connection_pool
        self._connection: Any = pool.connection_class(**pool.connection_kwargs)
        self._source = source
        self.sha = hashlib.sha1(source.encode("utf-8")).hexdigest()

    def __call__(self, keys: list[str], args: list[Any]) -> Any:
        command = ("EVALSHA", self.sha, len(keys), *keys, *args)
        try:
            return self._round_trip(command)
        except redis.exceptions.NoScriptError:
            self._round_trip(("SCRIPT", "LOAD", self._source))
            return self._round_trip(command)

    def _round_trip(self, command: tuple[Any, ...]) -> Any:
        connection = self._connection
        if connection._sock is not None:
            try:
                closed = connection.can_read(timeout=0)  # idle: readable means closed (or stray)
            except redis.ConnectionError:
                closed = True
            if closed:
                connection.disconnect()
        connection.send_packed_command([hiredis.pack_command(command)], check_health=False)
        return connection.read_response()

    def close(self) -> None:
        self._connection.disconnect()
