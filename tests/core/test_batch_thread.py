"""core.batch_thread: everything put meanwhile goes to one call, at most max_batch items, in order; stop drains;
with a settle wait, a batch waits for items that keep coming."""

import threading
import time

from core.batch_thread import BatchThread


def test_items_put_meanwhile_go_in_batches_in_order_and_stop_drains_them():
    batches = []
    worker = BatchThread("test-batches", batches.append, max_batch=4)
    for item in range(10):  # queued before the thread starts: it finds them all waiting
        worker.put(item)
    worker.start()
    worker.stop(timeout=10)
    assert [item for batch in batches for item in batch] == list(range(10))
    assert [len(batch) for batch in batches] == [4, 4, 2]


def test_stop_with_nothing_queued_calls_nothing():
    batches = []
    worker = BatchThread("test-empty", batches.append, max_batch=4).start()
    worker.stop(timeout=10)
    assert batches == []


HOUR = 3600.0  # a settle wait no test waits out: a batch that ends, ends for the reason the test names


def test_a_settling_batch_waits_while_items_keep_coming_and_stop_ends_the_wait():
    batches, handled = [], threading.Event()
    worker = BatchThread(
        "test-settle", lambda items: (batches.append(items), handled.set()), max_batch=5, settle=(HOUR, HOUR)
    ).start()
    for item in range(5):  # gaps a thread without a settle wait would see: it would hand each item on alone
        worker.put(item)
        time.sleep(0.05)
    assert handled.wait(60)  # the batch ended at max_batch, with every item in it
    assert batches == [[0, 1, 2, 3, 4]]
    worker.put(5)  # a new batch, waiting an hour for a quiet spell ...
    worker.stop(timeout=60)  # ... which stop ends: the batch is handled before stop returns
    assert batches == [[0, 1, 2, 3, 4], [5]]


def test_a_settling_batch_ends_after_its_quiet_wait():
    batches, handled = [], threading.Event()
    worker = BatchThread(
        "test-quiet", lambda items: (batches.append(items), handled.set()), max_batch=100, settle=(0.2, HOUR)
    ).start()
    worker.put(0)
    assert handled.wait(60)  # nothing more came: handed on after the quiet wait, not the longest one
    assert batches == [[0]]
    worker.stop(timeout=60)
    assert batches == [[0]]


def test_a_settling_batch_waits_no_longer_than_its_longest_wait():
    batches, first = [], threading.Event()
    worker = BatchThread(
        "test-longest", lambda items: (batches.append(items), first.set()), max_batch=10_000, settle=(HOUR, 0.3)
    ).start()
    put = 0
    while not first.is_set():  # items keep coming, never a quiet hour: only the longest wait ends the batch
        assert put < 6000, "no batch handed on while items kept coming"  # 60 s of items
        worker.put(put)
        put += 1
        time.sleep(0.01)
    worker.put(put)  # after the first batch was handled: in a later one
    worker.stop(timeout=60)
    assert [item for batch in batches for item in batch] == list(range(put + 1))
    assert len(batches) >= 2 and batches[-1][-1] == put and put not in batches[0]


def test_a_batch_whose_handler_raises_is_logged_with_its_traceback_and_the_next_batch_is_handled(caplog):
    batches = []

    def handle(items):
        if items == [0]:
            raise KeyError("a bug")
        batches.append(items)

    worker = BatchThread("test-raising", handle, max_batch=1)
    for item in range(3):
        worker.put(item)
    worker.start()
    worker.stop(timeout=10)
    assert batches == [[1], [2]]
    failed = [r for r in caplog.records if r.name == "emopres.batch_thread"]
    assert len(failed) == 1 and failed[0].exc_info[0] is KeyError
    assert "test-raising: a batch of 1 items failed" in caplog.text and "Traceback" in caplog.text
