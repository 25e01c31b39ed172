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
"""

import copy
import sys
import threading
import time

import moto.core.common_models as models
import moto.dynamodb.models as dynamodb
import moto.sqs.models as sqs
from moto.moto_server import werkzeug_app
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


def _in_flight(self):
    self._pending_messages -= {m for m in self._pending_messages if m.visible}
    return self._pending_messages


sqs.Queue.pending_messages = property(_in_flight)
sqs.Queue.pending_message_groups = property(
    lambda self: {m.group_id for m in self.pending_messages if m.group_id is not None}
)

_one_at_a_time = threading.Lock()
_TURN = 0.05
_dispatch = werkzeug_app.DomainDispatcherApplication.__call__
_wait_for_messages = sqs.Queue.wait_for_messages


def _serialised(self, environ, start_response):
    with _one_at_a_time:
        # Flask builds the whole response inside the call: nothing of the
        # request runs after the lock is released.
        return _dispatch(self, environ, start_response)


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


sqs.Queue.wait_for_messages = _wait_unlocked
werkzeug_app.DomainDispatcherApplication.__call__ = _serialised

if __name__ == "__main__":
    from moto.server import main

    main(sys.argv[1:])
