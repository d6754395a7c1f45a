"""core.batch_thread: everything put meanwhile goes to one call, at most max_batch items, in order; stop drains."""
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
