"""linker.http.fastsocket: trio's stream semantics over real sockets, in straight-line code."""

from __future__ import annotations

import socket

import pytest
import trio
import trio.testing

from linker.http.fastsocket import FastSocketStream, fast_stream


def _pair() -> tuple[FastSocketStream, socket.socket]:
    a, b = socket.socketpair()
    return FastSocketStream(a), b


async def test_send_and_receive_both_ways() -> None:
    stream, peer = _pair()
    with peer:
        await stream.send_all(b"hello")
        assert peer.recv(100) == b"hello"
        peer.sendall(b"world")
        assert await stream.receive_some(100) == b"world"
        await stream.aclose()


async def test_receive_waits_until_data_arrives() -> None:
    stream, peer = _pair()
    got: list[bytes] = []
    with peer:
        async with trio.open_nursery() as nursery:

            async def reader() -> None:
                got.append(await stream.receive_some(10))

            nursery.start_soon(reader)
            await trio.testing.wait_all_tasks_blocked()
            assert got == []  # really waiting, not spinning
            peer.sendall(b"late")
        assert got == [b"late"]
        await stream.aclose()


async def test_a_large_send_waits_for_the_peer_to_read() -> None:
    stream, peer = _pair()
    data = bytes(range(256)) * 40_000  # ~10 MB: far more than the socket buffers hold
    received = bytearray()
    with peer:
        peer.setblocking(False)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stream.send_all, data)
            while len(received) < len(data):
                await trio.lowlevel.wait_readable(peer)
                received += peer.recv(1 << 20)
        assert bytes(received) == data
        await stream.aclose()


async def test_end_of_input_is_empty_bytes() -> None:
    stream, peer = _pair()
    peer.close()
    assert await stream.receive_some() == b""
    await stream.aclose()


async def test_send_eof_half_closes() -> None:
    stream, peer = _pair()
    with peer:
        await stream.send_eof()
        await stream.send_eof()  # idempotent, as trio's
        assert peer.recv(10) == b""
        with pytest.raises(trio.ClosedResourceError):
            await stream.send_all(b"x")
        peer.sendall(b"still open this way")
        assert await stream.receive_some() == b"still open this way"
        await stream.aclose()


async def test_a_reset_is_a_broken_resource() -> None:
    stream, peer = _pair()
    peer.close()

    async def send_until_it_breaks() -> None:
        for _ in range(100):  # the first sends may still be buffered
            await stream.send_all(b"x" * 65536)

    with pytest.raises(trio.BrokenResourceError):
        await send_until_it_breaks()
    await stream.aclose()


async def test_use_after_close_is_closed_resource() -> None:
    stream, peer = _pair()
    with peer:
        await stream.aclose()
        await stream.aclose()  # idempotent
        with pytest.raises(trio.ClosedResourceError):
            await stream.send_all(b"x")
        with pytest.raises(trio.ClosedResourceError):
            await stream.receive_some()


async def test_closing_wakes_a_waiting_reader_with_closed_resource() -> None:
    stream, peer = _pair()
    with peer:

        async def read_while_closing() -> None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(stream.receive_some)
                await trio.testing.wait_all_tasks_blocked()
                await stream.aclose()

        with pytest.raises(ExceptionGroup) as raised:
            await read_while_closing()
        assert [type(e) for e in raised.value.exceptions] == [trio.ClosedResourceError]


async def test_two_concurrent_receivers_are_an_error() -> None:
    stream, peer = _pair()
    with peer:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stream.receive_some)
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(trio.BusyResourceError):
                await stream.receive_some()
            nursery.cancel_scope.cancel()
        await stream.aclose()


async def test_a_waiting_receive_is_cancellable() -> None:
    stream, peer = _pair()
    with peer:
        with trio.move_on_after(0.05) as scope:
            await stream.receive_some()
        assert scope.cancelled_caught
        peer.sendall(b"after")  # the stream still works after the cancel
        assert await stream.receive_some() == b"after"
        await stream.aclose()


async def test_a_cancelled_task_gets_cancelled_even_when_data_is_ready() -> None:
    stream, peer = _pair()
    with peer:
        peer.sendall(b"ready")
        with trio.CancelScope() as scope:
            scope.cancel()
            await stream.receive_some()
        assert scope.cancelled_caught
        assert await stream.receive_some() == b"ready"  # nothing was consumed
        await stream.aclose()


async def test_an_immediate_success_still_yields_to_other_tasks() -> None:
    # The fairness property: a task whose peer is always ready lets others run.
    stream, peer = _pair()
    with peer:
        ran = False

        async def other() -> None:
            nonlocal ran
            ran = True

        async with trio.open_nursery() as nursery:
            nursery.start_soon(other)
            # Each send completes at once; without a yield `other` could never run here.
            # (trio may order a batch either way, so one yield is not always enough.)
            for _ in range(50):
                await stream.send_all(b"x")
                if ran:
                    break
            assert ran
        await stream.aclose()


async def test_send_nowait_takes_what_the_kernel_takes() -> None:
    stream, peer = _pair()
    with peer:
        assert stream.send_nowait(b"abc") == 3
        assert peer.recv(10) == b"abc"
        big = b"x" * (16 << 20)
        sent = stream.send_nowait(big)
        assert 0 < sent < len(big)  # partial: the rest is the caller's (send_all)
        await stream.send_eof()
        assert stream.send_nowait(b"after eof") == 0
        await stream.aclose()
        assert stream.send_nowait(b"after close") == 0


async def test_fast_stream_takes_over_a_trio_socket_stream() -> None:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    async with listener:
        client = await trio.open_tcp_stream("127.0.0.1", port)
        server = fast_stream(await listener.accept())
        assert client.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        assert server.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)  # kept
        await client.send_all(b"ping")
        assert await server.receive_some() == b"ping"
        await server.send_all(b"pong")
        assert await client.receive_some() == b"pong"
        await server.aclose()
        assert await client.receive_some() == b""
        await client.aclose()
