"""What the machine can do at all: plain smtplib sending one already-rendered message over and
over, from several processes, each over one reused connection, to the same smtp-sink."""
import multiprocessing
import smtplib
import time

SENDER = "notices@school.example.org"


def _send(port: int, message: bytes, count: int, offset: int, start, done) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        smtp.ehlo()
        start.wait()
        for number in range(offset, offset + count):
            smtp.sendmail(SENDER, [f"guardian{number}@example.org"], message)
    done.put(count)


def smtplib_rate(port: int, message: bytes, count: int, processes: int = 2) -> tuple[float, float]:
    """Seconds to send ``count`` copies of ``message`` and the resulting messages per second."""
    context = multiprocessing.get_context("fork")
    start = context.Barrier(processes + 1)
    done = context.Queue()
    shares = [count // processes + (1 if index < count % processes else 0) for index in range(processes)]
    workers = [context.Process(target=_send, args=(port, message, share, sum(shares[:index]), start, done))
               for index, share in enumerate(shares)]
    for worker in workers:
        worker.start()
    start.wait(timeout=30)
    began = time.perf_counter()
    sent = sum(done.get(timeout=600) for _ in workers)
    seconds = time.perf_counter() - began
    for worker in workers:
        worker.join(10)
    if sent != count:
        raise RuntimeError(f"the ceiling run sent {sent} of {count}")
    return seconds, count / seconds
