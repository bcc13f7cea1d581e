"""ui/gradio_patch_sse.py, patch 11: the queue stream takes a waiting SSE message without a task or a loop trip,
is woken directly by one that comes later, and still times out as Gradio expects."""

from __future__ import annotations

import asyncio

import pytest

from ui.gradio_patch_sse import MessageQueue, messages_without_tasks, wait_for
from ui.gradio_patches import _version_ok


def test_a_waiting_message_is_taken_without_suspending():
    queue = MessageQueue()
    queue.put_nowait("hello")
    step = wait_for(queue.get(), timeout=10)
    with pytest.raises(StopIteration) as done:
        step.send(None)  # the coroutine ends on its first step: no future was awaited
    assert done.value.value == "hello" and queue.empty()


async def test_asyncios_own_wait_for_suspends_for_a_waiting_message():
    """What the patch removes (Python 3.11): a task around get(), and a trip round the loop even when a message waits."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    queue.put_nowait("hello")
    step = asyncio.wait_for(queue.get(), timeout=10)
    try:
        assert step.send(None) is not None  # it suspended on a future
    finally:
        step.close()
        await asyncio.sleep(0)  # let the orphaned get() task finish


async def test_a_later_message_wakes_the_stream_with_no_task_around_get():
    queue = MessageQueue()
    waiting = asyncio.ensure_future(wait_for(queue.get(), timeout=10))
    while not queue._getters:  # until the waiter waits on the queue (a condition, not a clock)
        await asyncio.sleep(0)
    assert not waiting.done()
    assert len(asyncio.all_tasks()) == 2, asyncio.all_tasks()  # this test and the waiter: no task for get()
    queue.put_nowait("later")
    assert await waiting == "later"


async def test_an_empty_queue_times_out_and_keeps_no_waiter():
    queue = MessageQueue()
    with pytest.raises(TimeoutError):
        await wait_for(queue.get(), timeout=0.05)
    queue.put_nowait("next")  # a getter left behind would swallow the wake-up, not the message
    assert await wait_for(queue.get(), timeout=1) == "next"


def test_the_patch_gives_gradios_routes_this_wait_for_and_its_queue_these_queues():
    from gradio import queueing, routes

    assert messages_without_tasks(_version_ok)
    assert routes.asyncio.wait_for is wait_for
    assert routes.asyncio.sleep is asyncio.sleep and routes.asyncio.create_task is asyncio.create_task
    assert queueing.AsyncQueue is MessageQueue
    assert asyncio.wait_for is not wait_for  # only routes.py's view of asyncio changed
