"""Which app processes (replicas) use this database, so that only dead ones' replies are written off.

Each process has an instance id, records it on the replies it streams (storage.repository reads
it from `session.info`), and refreshes its `replica` row every HEARTBEAT_S seconds. A pending reply
is marked interrupted (repository.mark_interrupted) only once its process has been silent for
GRACE_S seconds, so a replica that starts never cuts off another one's live replies.

Usage::

    instance = new_instance_id()
    heartbeat = Heartbeat(engine, instance)  # beats and sweeps once now, then in a daemon thread
    heartbeat.start()
    ...
    heartbeat.stop()                         # marks this process's own pending replies interrupted
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import Engine
from sqlmodel import Session

from storage.errors import StorageError, StorageUnavailable, unavailable_message
from storage.guard import rowcount
from storage.models import OWNER_MAX, Replica, table_of, utcnow

log = logging.getLogger("parley.replicas")

#: The key under which a session carries the instance id of the process that opened it.
INSTANCE_KEY = "parley_instance_id"
#: Seconds between heartbeats.
HEARTBEAT_S = 15.0
#: A process silent for this long is taken for gone. Several heartbeats long, so one slow beat
#: (a database hiccup, a busy machine) never writes off live replies; clocks of the replicas must
#: agree to well within it.
GRACE_S = 60.0
#: Rows of processes gone this long are deleted (their replies were marked long before).
FORGET_AFTER = timedelta(days=1)
#: Instances whose heartbeat runs in this process.
_HERE: set[str] = set()


def new_instance_id() -> str:
    """A fresh id for this process (random: a restarted process is a new instance)."""
    return uuid.uuid4().hex


def host_key() -> str:
    """Where this process runs: hostname, boot id and pid namespace (Linux), so equal keys mean
    equal pid spaces; containers sharing a hostname still differ by namespace."""
    parts = [socket.gethostname()]
    for path in ("/proc/sys/kernel/random/boot_id", "/proc/self/ns/pid"):
        try:
            parts.append(Path(path).read_text().strip() if "boot_id" in path else os.readlink(path))
        except OSError:
            parts.append("?")
    return "/".join(parts)[:OWNER_MAX]


def beat(*, session: Session, instance_id: str) -> None:
    """Record that `instance_id` (this process) is alive now, creating its row on the first beat."""
    now = utcnow()
    table = table_of(Replica)
    updated = session.execute(sa.update(table).where(table.c.id == instance_id).values(last_seen=now))
    if rowcount(updated) == 0:
        session.execute(
            sa.insert(table).values(id=instance_id, host=host_key(), pid=os.getpid(), started_at=now, last_seen=now)
        )
    session.commit()


def dead_local_instances(*, session: Session, instance_id: str) -> list[str]:
    """Other instances recorded on this host whose process is gone (or whose pid is now ours)."""
    table = table_of(Replica)
    rows = session.execute(
        sa.select(table.c.id, table.c.pid).where(table.c.host == host_key(), table.c.id != instance_id)
    ).all()
    session.rollback()  # end the read transaction: nothing is held while the caller decides
    # Our own pid under another id is an earlier process (a container restarted as pid 1 again),
    # unless this process runs that instance too (several apps in one process, as tests build).
    return [row.id for row in rows
            if (row.pid == os.getpid() and row.id not in _HERE) or (row.pid != os.getpid() and not _running(row.pid))]


def forget(*, session: Session, instance_ids: list[str] | None = None) -> int:
    """Delete these instances' rows, or (None) those silent for FORGET_AFTER; returns how many."""
    table = table_of(Replica)
    query = sa.delete(table)
    if instance_ids is None:
        query = query.where(table.c.last_seen < utcnow() - FORGET_AFTER)
    elif instance_ids:
        query = query.where(table.c.id.in_(instance_ids))
    else:
        return 0
    result = session.execute(query)
    session.commit()
    return rowcount(result)


def _running(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    try:  # a killed child its parent has not waited for is a zombie: gone for our purposes
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


class Heartbeat:
    """Keeps one process's replica row fresh and marks the replies of silent processes interrupted."""

    def __init__(self, engine: Engine, instance_id: str, *, interval: float = HEARTBEAT_S, grace: float = GRACE_S):
        self.engine = engine
        self.instance_id = instance_id
        self.interval = interval
        self.grace = timedelta(seconds=grace)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self) -> int:
        """One heartbeat and one sweep; returns how many replies of silent processes were marked."""
        from storage.repository import mark_interrupted  # the repository imports this module

        with Session(self.engine) as session:
            beat(session=session, instance_id=self.instance_id)
            marked = mark_interrupted(session=session, grace=self.grace)
            forget(session=session)
        return marked

    def start(self) -> int:
        """Beat and sweep once now (errors propagate: start-up should fail loudly), then keep going.

        Processes of this host that are gone (a restart after a crash) are written off at once;
        other hosts' processes only after the grace period.
        """
        from storage.repository import mark_interrupted

        try:
            with Session(self.engine) as session:
                beat(session=session, instance_id=self.instance_id)
                dead = dead_local_instances(session=session, instance_id=self.instance_id)
                marked = sum(mark_interrupted(session=session, instance_id=i) for i in dead)
                forget(session=session, instance_ids=dead)
            marked += self.tick()
        except sa.exc.SQLAlchemyError as e:
            raise StorageUnavailable(unavailable_message(e)) from e
        _HERE.add(self.instance_id)
        self._thread = threading.Thread(target=self._run, name="parley-heartbeat", daemon=True)
        self._thread.start()
        return marked

    def stop(self) -> None:
        """Stop beating and mark this process's own pending replies interrupted (a clean shutdown)."""
        self._stop.set()
        _HERE.discard(self.instance_id)
        if self._thread is not None:
            self._thread.join(timeout=self.interval + 5)
        from storage.repository import mark_interrupted

        try:
            with Session(self.engine) as session:
                mark_interrupted(session=session, instance_id=self.instance_id)
        except (StorageError, sa.exc.SQLAlchemyError) as e:
            log.warning("could not mark this process's replies interrupted: %s", e)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                marked = self.tick()
            except (StorageError, sa.exc.SQLAlchemyError) as e:
                # A missed beat is survivable (the grace period is several beats long); stopping is not.
                log.warning("replica heartbeat failed: %s", e)
                continue
            if marked:
                log.info("marked %d replies of stopped replicas interrupted", marked)
