"""moto's server as the local stack runs it: moto 5's own server, with
requests taken one at a time and three of moto's defects fixed.
Run as moto_server is: python moto_server.py -H 127.0.0.1 -p PORT.
Nothing else of moto changes.

0. moto's threaded server runs requests concurrently over shared dicts and
   sets, without isolation: a write during a query, a transaction or a
   receive fails with "dictionary (or set) changed size during iteration"
   (an HTML 500), or is undone by another transaction's rollback. Here one
   lock takes requests one at a time, as if each were atomic; an SQS long
   poll lets go of it while it waits for messages, so sends still reach it.
1. Every model instance is recorded in a class-wide list that only a reset
   clears: recording is off (only a reset reads it).
2. TransactWriteItems deep-copies each table it touches, whole, once per
   item, to roll back with: it keeps copies of only the items it touches
   and puts those back when it fails (the same outcome, without the cost
   that grows with the table).
3. FIFO: in-flight messages whose visibility is over are released before
   any group is checked, so a group handed back is delivered in order.
4. FIFO deduplication scans every message in the queue on each send (a
   100-event webhook transaction into a queue holding thousands took
   seconds, with the lock held): an index of deduplication ids and when
   they were first sent answers it at once, and keeps SQS's five-minute
   window also for messages already deleted, as SQS does (moto forgot
   them), per message group when the queue's scope says so.
5. A queue's `attributes` counts its messages (three scans, each reading
   the clock per message) and moto reads them seven times per message sent
   (for ContentBasedDeduplication): 100 events into a queue of a few hundred
   took 4.5 s. The counts are computed once per request, and so is the set
   of in-flight messages a receive consults for every message it looks at
   (a receive from a queue of a thousand took 140 ms).
6. Every Query lists the whole table and sorts it (`Table.all_items`)
   before it picks the items of the one partition asked for: on a table of
   2,000 items a one-item Query took 35-90 ms, and the retry function
   queries the outbox index for every job. Here a Query reads only the
   items of its partition whose sort key meets its condition (a table
   query: a conversation's members out of its thousands of messages took
   167 ms) or the items whose index key matches (an index query); moto
   still checks, sorts and pages what it reads, so the answer is the same.
7. Whether a message is visible, or delayed, moto tells from the clock
   read through datetime objects, for every message a receive looks at
   (three quarters of a receive's time): read from time.time() here, the
   same milliseconds since the epoch.
"""

import copy
import sys
import threading
import time

import moto.core.common_models as models
import moto.dynamodb.models as dynamodb
import moto.sqs.models as sqs
from moto.moto_server import werkzeug_app
from moto.dynamodb.comparisons import get_comparison_func
from moto.dynamodb.models.table import Table


def _untracked(cls, *args, **kwargs):
    return super(models.BaseModel, cls).__new__(cls)


models.BaseModel.__new__ = staticmethod(_untracked)

# moto's own whole-table snapshot becomes the table itself (a no-op restore);
# the wrapper below restores what the transaction touched.
Table.__deepcopy__ = lambda self, memo: self
_transact_write_items = dynamodb.DynamoDBBackend.transact_write_items


def _touched(backend, transact_items):
    """(table, hash key, range key, copy of the item or None) per item."""
    touched = []
    for item in transact_items:
        _, op = next(iter(item.items()))
        table = backend.get_table(op["TableName"])
        if "Key" in op:
            keys = op["Key"]
        else:
            attrs = op["Item"]
            keys = {table.hash_key_attr: attrs[table.hash_key_attr]}
            if table.range_key_attr is not None:
                keys[table.range_key_attr] = attrs[table.range_key_attr]
        hash_key, range_key = backend.get_keys_value(table, keys)
        old = table.get_item(hash_key, range_key)
        touched.append((table, hash_key, range_key, copy.deepcopy(old)))
    return touched


def _transact(self, transact_items):
    try:
        touched = _touched(self, transact_items)
    except Exception:
        # Malformed: moto refuses it before writing anything.
        touched = []
    try:
        return _transact_write_items(self, transact_items)
    except Exception:
        for table, hash_key, range_key, old in reversed(touched):
            table.delete_item(hash_key, range_key)
            if old is None:
                continue
            if range_key is not None:
                table.items[hash_key][range_key] = old
            else:
                table.items[hash_key] = old
        raise


dynamodb.DynamoDBBackend.transact_write_items = _transact


# A moment in which nothing else changes the emulator's state: each request
# (under the lock, below) and each return from a long poll's wait starts
# one. What is derived from the state is computed once per moment.
_moment = [0]


def _in_flight(self):
    # moto reads this once per message it looks at in a receive: with a
    # thousand messages queued, releasing the visible ones every time took
    # 140 ms a receive. Once per moment is enough.
    if self.__dict__.get("_released_at") != _moment[0]:
        # A copy (list() takes it in one step, under the GIL): a long poll
        # waits without the lock.
        self._pending_messages -= {m for m in list(self._pending_messages) if m.visible}
        self.__dict__["_released_at"] = _moment[0]
    return self._pending_messages


sqs.Queue.pending_messages = property(_in_flight)
sqs.Message.visible = property(lambda self: time.time() * 1000 > self.visible_at)
sqs.Message.delayed = property(lambda self: time.time() * 1000 < self.delayed_until)
sqs.Queue.pending_message_groups = property(
    lambda self: {m.group_id for m in list(self.pending_messages) if m.group_id is not None}
)

_add_message = sqs.Queue.add_message


def _add_deduplicated(self, message):
    if self.fifo_queue and message.deduplication_id:
        window = self.__dict__.setdefault("_deduplication_window", {})
        now = message.sent_timestamp
        key = message.deduplication_id
        if self.attributes.get("DeduplicationScope") == "messageGroup":
            key = (message.group_id, key)
        first = window.get(key)
        if first is not None and (now - first) / 1000 < sqs.DEDUPLICATION_TIME_IN_SECONDS:
            return
        if len(window) > 50_000:
            horizon = now - sqs.DEDUPLICATION_TIME_IN_SECONDS * 1000
            for old in [old for old, sent in window.items() if sent < horizon]:
                del window[old]
        window[key] = now
        # moto's own scan is skipped: it runs only for a deduplication id.
        deduplication_id, message.deduplication_id = message.deduplication_id, None
        try:
            _add_message(self, message)
        finally:
            message.deduplication_id = deduplication_id
        return
    _add_message(self, message)


sqs.Queue.add_message = _add_deduplicated

# How many requests were served.
_request = [0]


def _once_per_request(name):
    compute = getattr(sqs.Queue, name).fget

    def get(self):
        cache = self.__dict__.setdefault("_counts", {})
        hit = cache.get(name)
        if hit is not None and hit[0] == _moment[0]:
            return hit[1]
        value = compute(self)
        cache[name] = (_moment[0], value)
        return value

    return property(get)


for _count in (
    "approximate_number_of_messages",
    "approximate_number_of_messages_delayed",
    "approximate_number_of_messages_not_visible",
):
    setattr(sqs.Queue, _count, _once_per_request(_count))

_query = Table.query


def _partition_query(self, hash_key, *args, **kwargs):
    index_name = kwargs.get("index_name", args[6] if len(args) > 6 else None)
    conditions = kwargs.get("hash_key_conditions") or []
    if index_name:
        # Items without the index's key attributes are in no partition of
        # it (a sparse index): moto's own checks still run on the rest.
        def items():
            return [
                item
                for item in _all_items(self)
                if all(_equal(item.attrs.get(name), value) for name, value in conditions)
            ]
    elif self.range_key_attr is not None:
        comparison = args[0] if args else kwargs.get("range_comparison")
        bounds = args[1] if len(args) > 1 else kwargs.get("range_objs")

        def items():
            partition = self.items.get(hash_key, {})
            if not comparison:
                return list(partition.values())
            # The sort key condition on the keys alone, as moto applies it
            # (again) to what it reads: a few members out of a partition of
            # thousands of messages without touching the messages.
            matches = get_comparison_func(comparison)
            values = [bound.cast_value for bound in bounds]
            if not all(bound.type == "S" for bound in bounds):
                return [item for key, item in partition.items() if matches(key.cast_value, *values)]
            # String keys: compared, and put in moto's order, as plain
            # strings (its own sort then finds them sorted).
            found = [(key.value, item) for key, item in partition.items() if matches(key.value, *values)]
            found.sort(key=lambda pair: pair[0])
            return [item for _, item in found]
    else:

        def items():
            item = self.items.get(hash_key)
            return [] if item is None else [item]

    # The instance's attribute hides the method for this call (requests
    # are served one at a time, below).
    self.all_items = items
    try:
        return _query(self, hash_key, *args, **kwargs)
    finally:
        del self.all_items


def _equal(attribute, value):
    # DynamoType compares only with another.
    return attribute is not None and attribute == value


def _all_items(table):
    for partition in list(table.items.values()):
        if table.range_key_attr is not None:
            yield from list(partition.values())
        else:
            yield partition


Table.query = _partition_query

_one_at_a_time = threading.Lock()
_TURN = 0.05
_dispatch = werkzeug_app.DomainDispatcherApplication.__call__
_wait_for_messages = sqs.Queue.wait_for_messages


# Time spent serving each kind of request (`X-Amz-Target`: DynamoDB's
# operations, SQS's JSON ones), written to the log every _REPORT_EVERY
# requests: where the emulator's time goes, which bounds what is measured on it.
# A long poll's wait (the lock let go) is not time served.
_served = {}
_waited = threading.local()
_REPORT_EVERY = 1000


def _serialised(self, environ, start_response):
    with _one_at_a_time:
        _request[0] += 1
        _moment[0] += 1
        started = time.perf_counter()
        _waited.seconds = 0.0
        try:
            # Flask builds the whole response inside the call: nothing of
            # the request runs after the lock is released.
            return _dispatch(self, environ, start_response)
        finally:
            kind = environ.get("HTTP_X_AMZ_TARGET", "other").rsplit(".", 1)[-1]
            count, seconds = _served.get(kind, (0, 0.0))
            busy = time.perf_counter() - started - _waited.seconds
            _served[kind] = (count + 1, seconds + busy)
            if _request[0] % _REPORT_EVERY == 0:
                _report()


def _report():
    busiest = sorted(_served.items(), key=lambda kind: -kind[1][1])
    print(
        f"served {_request[0]} requests; time per kind (count, seconds, ms each): "
        + ", ".join(
            f"{kind} {count} {seconds:.1f} {1000 * seconds / count:.1f}"
            for kind, (count, seconds) in busiest
        ),
        file=sys.stderr,
        flush=True,
    )


def _wait_unlocked(self, timeout):
    # Only a receive, which holds the lock, waits.
    _one_at_a_time.release()
    try:
        started = time.monotonic()
        _wait_for_messages(self, timeout)
        # Visible messages of FIFO groups in flight end moto's wait at once:
        # give the other requests a turn instead of spinning with the lock
        # for the whole long poll.
        if time.monotonic() - started < _TURN:
            time.sleep(_TURN)
    finally:
        _one_at_a_time.acquire()
        _moment[0] += 1
        _waited.seconds = getattr(_waited, "seconds", 0.0) + time.monotonic() - started


sqs.Queue.wait_for_messages = _wait_unlocked
werkzeug_app.DomainDispatcherApplication.__call__ = _serialised

if __name__ == "__main__":
    from moto.server import main

    main(sys.argv[1:])
