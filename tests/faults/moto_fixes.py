"""moto's server for the fault suite, with three of moto's defects fixed
(tests/faults/emulator.rs says why). Run as moto_server is:
python moto_fixes.py -H 127.0.0.1 -p PORT. Nothing else of moto changes.

1. Every model instance is recorded in a class-wide list that only a reset
   clears: recording is off (only a reset reads it).
2. TransactWriteItems deep-copies each table it touches, whole, once per
   item, to roll back with: it keeps copies of only the items it touches
   and puts those back when it fails (the same outcome, without the cost
   that grows with the table).
3. FIFO: in-flight messages whose visibility is over are released before
   any group is checked, so a group handed back is delivered in order.

Requests must still reach DynamoDB one at a time (the suite's proxy does
that): moto's transactions are not isolated from concurrent requests.
"""

import copy
import sys

import moto.core.common_models as models
import moto.dynamodb.models as dynamodb
import moto.sqs.models as sqs
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

if __name__ == "__main__":
    from moto.server import main

    main(sys.argv[1:])
