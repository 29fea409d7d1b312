"""SocketWatch: the network is judged by what the kernel accepts, not by our queue."""

from earshot.realtime.stall import SocketWatch


def test_an_empty_transport_buffer_is_never_a_stall() -> None:
    watch = SocketWatch(8.0, now=0.0)
    watch.sample(100.0, sent=10_000, buffered=0)
    assert not watch.stalled(100.0)
    assert watch.stalled_for(100.0) == 0.0


def test_bytes_waiting_with_none_accepted_become_a_stall_after_stall_s() -> None:
    watch = SocketWatch(8.0, now=0.0)
    watch.sample(1.0, sent=5_000, buffered=0)  # all taken
    watch.sample(2.0, sent=9_000, buffered=4_000)  # 4000 waiting, none of them taken
    watch.sample(9.0, sent=12_000, buffered=7_000)  # more queued, still nothing taken
    assert not watch.stalled(9.0)
    assert watch.stalled(10.5)
    assert watch.stalled_for(10.5) == 9.5


def test_a_slow_socket_that_takes_bytes_is_progressing() -> None:
    watch = SocketWatch(8.0, now=0.0)
    for t in range(1, 60):  # 1000 bytes a second handed over, 800 taken: the buffer grows, yet it moves
        watch.sample(float(t), sent=1000 * t, buffered=200 * t)
    assert not watch.stalled(59.5)
    assert watch.stalled_for(59.5) == 0.5


def test_progress_after_a_stall_clears_it() -> None:
    watch = SocketWatch(2.0, now=0.0)
    watch.sample(1.0, sent=1000, buffered=1000)
    assert watch.stalled(4.0)
    watch.sample(4.0, sent=1000, buffered=500)
    assert not watch.stalled(4.0)
