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


def test_a_settling_batch_waits_while_items_keep_coming_and_stop_ends_the_wait():
    batches, handled = [], threading.Event()
    worker = BatchThread("test-settle", lambda items: (batches.append(items), handled.set()), max_batch=100,
                         settle=(1.0, 30.0)).start()
    for item in range(5):  # each within the quiet second after the one before: all in one batch
        worker.put(item)
        time.sleep(0.05)
    assert handled.wait(10)
    assert batches == [[0, 1, 2, 3, 4]]
    worker.put(5)  # a new batch, waiting for its quiet second ...
    started = time.monotonic()
    worker.stop(timeout=10)  # ... which stop ends at once
    assert batches[1:] == [[5]] and time.monotonic() - started < 0.9


def test_a_settling_batch_waits_no_longer_than_its_longest_wait():
    batches = []
    worker = BatchThread("test-longest", batches.append, max_batch=100, settle=(1.0, 0.3)).start()
    for item in range(20):  # items keep coming for 1 s
        worker.put(item)
        time.sleep(0.05)
    worker.stop(timeout=10)
    assert len(batches) >= 2 and [item for batch in batches for item in batch] == list(range(20))


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
