"""A lean SSE load client: several OS processes, each one asyncio loop holding
its share of the streams over raw sockets, so the client is not what the
benchmark measures (httpx in the bench's own process took 26 s to open 2,000
streams).

Each process is `python -m orders.bench.sseload`, driven over its stdin and
stdout by `LoadClient` (one JSON line each way per step):

    stdin   the plan: {"port", "targets": [{"path", "cookie"}], "start_at",
            "deadline", "open_deadline", "open_concurrency"}
    stdout  {"opened": ...} once every stream has answered (or given up)
    stdin   "stop"   (or EOF, or the deadline)
    stdout  {"result": ...} the figures, then the process exits

It speaks HTTP/1.1 to 127.0.0.1 only: a GET with Host, Cookie (for staff) and
Accept: text/event-stream, a 503 answered by waiting its Retry-After and trying
again, chunked transfer-encoding (daphne sends it) and SSE frames (read by
orders/bench/sseparse.py). An event's latency is its arrival (wall clock) minus
the `"at"` in its data (the time it was written, just before its commit), for
events written after the stream opened.

No Django here: a client process starts in a tenth of a second and spends its
CPU on reading.
"""

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field

from orders.bench.sseparse import (
    EVENT_ID,
    StreamParser,
    parse_head,
    retry_after,
    written_at,
)

HOST = "127.0.0.1"
READ_SIZE = 65536


# One client process ----------------------------------------------------------------
@dataclass
class ProcessFigures:
    opened: int = 0
    staff_opened: int = 0
    start_lag: float = 0.0
    opened_at: list[float] = field(default_factory=list)
    shed: int = 0  # 503 answers, each retried after its Retry-After
    refused: dict[str, int] = field(default_factory=dict)  # other statuses/errors
    ended_early: int = 0  # streams the server ended before the stop
    # Events whose event_id is not above the last one the stream gave: sent
    # twice, or out of order (not counted in the latencies).
    repeated: int = 0
    events: int = 0
    staff_events: int = 0
    latencies: list[float] = field(default_factory=list)
    staff_latencies: list[float] = field(default_factory=list)

    def refuse(self, why: str) -> None:
        self.refused[why] = self.refused.get(why, 0) + 1


class StreamClient:
    def __init__(self, plan: dict):
        self.port = int(plan["port"])
        self.targets = plan["targets"]
        self.start_at = float(plan["start_at"])
        self.deadline = float(plan["deadline"])
        self.open_deadline = float(plan.get("open_deadline") or self.deadline)
        self.gate = asyncio.Semaphore(int(plan.get("open_concurrency") or 10**6))
        self.figures = ProcessFigures()
        self.settled = 0
        self.all_settled = asyncio.Event()

    def _settle(self) -> None:
        self.settled += 1
        if self.settled == len(self.targets):
            self.all_settled.set()

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.sleep(max(0.0, self.start_at - time.time()))
        # A process that started after the common start (a busy machine) would
        # add its lateness to the open time: the report shows it.
        self.figures.start_lag = time.time() - self.start_at
        if not self.targets:
            self.all_settled.set()
        tasks = [
            asyncio.create_task(self.hold(target["path"], target.get("cookie")))
            for target in self.targets
        ]
        until_deadline = max(0.0, self.deadline - time.time())
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait([stopper], timeout=until_deadline)
        stopper.cancel()
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(
                result, asyncio.CancelledError
            ):
                raise result

    async def hold(self, path: str, cookie: str | None) -> None:
        """Open one stream and read it until cancelled."""
        writer = None
        settled = False
        try:
            try:
                opening = await asyncio.wait_for(
                    self.open(path, cookie),
                    timeout=max(0.0, self.open_deadline - time.time()),
                )
            except TimeoutError:
                self.figures.refuse("open timeout")
                return
            if opening is None:
                return
            reader, writer, headers = opening
            opened_at = time.time()
            self.figures.opened += 1
            self.figures.staff_opened += cookie is not None
            self.figures.opened_at.append(opened_at)
            settled = True
            self._settle()
            await self.read(reader, headers, opened_at, staff=cookie is not None)
        finally:
            if not settled:
                self._settle()
            if writer is not None:
                writer.close()

    async def open(self, path: str, cookie: str | None):
        """(reader, writer, headers) of a 200, after waiting out every 503's
        Retry-After; None (counted) for any other answer."""
        while True:
            writer = None
            try:
                async with self.gate:
                    reader, writer = await asyncio.open_connection(HOST, self.port)
                    writer.write(request(path, self.port, cookie))
                    head = await reader.readuntil(b"\r\n\r\n")
            except (OSError, asyncio.IncompleteReadError) as error:
                # Refused or reset: a result to count, not to retry.
                self.figures.refuse(type(error).__name__)
                if writer is not None:
                    writer.close()
                return None
            except BaseException:
                if writer is not None:
                    writer.close()
                raise
            status, headers = parse_head(head)
            if status == 200:
                return reader, writer, headers
            writer.close()
            if status != 503:
                self.figures.refuse(str(status))
                return None
            self.figures.shed += 1
            await asyncio.sleep(retry_after(headers))

    async def read(self, reader, headers, opened_at: float, staff: bool) -> None:
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        parser = StreamParser(chunked=chunked)
        figures = self.figures
        latencies = figures.staff_latencies if staff else figures.latencies
        last_id = 0
        while True:
            try:
                data = await reader.read(READ_SIZE)
            except OSError:
                data = b""  # reset by the server: ended, as an EOF is
            if not data:
                figures.ended_early += 1
                return
            now = time.time()
            for event in parser.feed(data):
                at = written_at(event.data)
                if at is None:
                    continue
                match = EVENT_ID.search(event.data)
                if match:
                    event_id = int(match.group(1))
                    if event_id <= last_id:
                        figures.repeated += 1
                        continue
                    last_id = event_id
                if staff:
                    figures.staff_events += 1
                else:
                    figures.events += 1
                if at >= opened_at:
                    latencies.append(now - at)
            if parser.finished:
                figures.ended_early += 1
                return


def request(path: str, port: int, cookie: str | None) -> bytes:
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {HOST}:{port}",
        "Accept: text/event-stream",
        "Cache-Control: no-cache",
    ]
    if cookie:
        lines.append(f"Cookie: {cookie}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def serve_one_plan() -> None:
    loop = asyncio.get_running_loop()
    plan = json.loads(await loop.run_in_executor(None, sys.stdin.readline))
    client = StreamClient(plan)
    stop = asyncio.Event()

    async def report_opened():
        await client.all_settled.wait()
        write_line({"opened": summary_of_opening(client.figures)})

    async def wait_for_stop():
        # "stop" or EOF (the driver went away) end the run.
        await loop.run_in_executor(None, sys.stdin.readline)
        stop.set()

    opened = asyncio.create_task(report_opened())
    stopper = asyncio.create_task(wait_for_stop())
    await client.run(stop)
    if not opened.done():
        opened.cancel()
        write_line({"opened": summary_of_opening(client.figures)})
    figures = client.figures
    write_line(
        {
            "result": {
                **summary_of_opening(figures),
                "ended_early": figures.ended_early,
                "repeated": figures.repeated,
                "events": figures.events,
                "staff_events": figures.staff_events,
                "latencies": [round(value, 6) for value in figures.latencies],
                "staff_latencies": [round(v, 6) for v in figures.staff_latencies],
            }
        }
    )
    stopper.cancel()


def summary_of_opening(figures: ProcessFigures) -> dict:
    return {
        "opened": figures.opened,
        "staff_opened": figures.staff_opened,
        "last_opened_at": max(figures.opened_at, default=None),
        # This process's CPU so far: the client is not the bottleneck while it
        # is well below the wall time it measures.
        "cpu_s": time.process_time(),
        "start_lag_s": figures.start_lag,
        "shed": figures.shed,
        "refused": figures.refused,
    }


def write_line(document: dict) -> None:
    sys.stdout.write(json.dumps(document) + "\n")
    sys.stdout.flush()


# The driver, in the bench's process ------------------------------------------------
@dataclass
class LoadResult:
    opened: int
    staff_opened: int
    open_s: float | None  # from the start to the last stream answering 200
    shed: int
    refused: dict[str, int]
    client_cpu_s: float
    client_start_lag_s: float
    ended_early: int
    repeated: int
    events: int
    staff_events: int
    latencies: list[float]
    staff_latencies: list[float]


class LoadClient:
    """Starts `processes` client processes holding `targets` (split between
    them) against 127.0.0.1:`port`; `wait_opened()`, then `stop()` for the
    result. Everything ends by `deadline` (wall clock) at the latest."""

    def __init__(
        self,
        *,
        port: int,
        targets: list[dict],
        processes: int,
        deadline: float,
        open_concurrency: int | None = None,
        open_timeout: float | None = None,
        python: str = sys.executable,
        cwd: str | None = None,
    ):
        self.deadline = deadline
        count = max(1, min(processes, len(targets)))
        # Staff and order streams spread evenly over the processes.
        shares = [targets[index::count] for index in range(count)]
        self.start_at = time.time() + 0.5 + 0.05 * count
        per_process = max(1, open_concurrency // count) if open_concurrency else None
        self.processes = []
        for share in shares:
            process = subprocess.Popen(
                [python, "-m", "orders.bench.sseload"],
                cwd=cwd,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            plan = {
                "port": port,
                "targets": share,
                "start_at": self.start_at,
                "deadline": deadline,
                "open_deadline": self.start_at + open_timeout if open_timeout else None,
                "open_concurrency": per_process,
            }
            process.stdin.write(json.dumps(plan) + "\n")
            process.stdin.flush()
            self.processes.append(process)
        self.opening: list[dict] = []

    def _line(self, process: subprocess.Popen) -> dict:
        # The process ends by the deadline, so this read ends too.
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(
                f"SSE client process exited {process.wait(timeout=10)} early"
            )
        return json.loads(line)

    def wait_opened(self) -> dict:
        """Blocks until every process has opened its streams (or given up)."""
        self.opening = [self._line(process)["opened"] for process in self.processes]
        return summarize_opening(self.opening, self.start_at)

    def stop(self) -> LoadResult:
        if not self.opening:
            self.wait_opened()
        for process in self.processes:
            with contextlib.suppress(BrokenPipeError):  # it ended by its deadline
                process.stdin.write("stop\n")
                process.stdin.flush()
        results = [self._line(process)["result"] for process in self.processes]
        for process in self.processes:
            process.stdin.close()
            process.wait(timeout=30)
        opening = summarize_opening(results, self.start_at)
        return LoadResult(
            **opening,
            ended_early=sum(result["ended_early"] for result in results),
            repeated=sum(result["repeated"] for result in results),
            events=sum(result["events"] for result in results),
            staff_events=sum(result["staff_events"] for result in results),
            latencies=[v for result in results for v in result["latencies"]],
            staff_latencies=[
                v for result in results for v in result["staff_latencies"]
            ],
        )

    def kill(self) -> None:
        """For a driver that failed: no client outlives it."""
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)


def summarize_opening(parts: list[dict], start_at: float) -> dict:
    last = [part["last_opened_at"] for part in parts if part["last_opened_at"]]
    refused: dict[str, int] = {}
    for part in parts:
        for why, count in part["refused"].items():
            refused[why] = refused.get(why, 0) + count
    return {
        "opened": sum(part["opened"] for part in parts),
        "staff_opened": sum(part["staff_opened"] for part in parts),
        "open_s": max(last) - start_at if last else None,
        "shed": sum(part["shed"] for part in parts),
        "refused": refused,
        "client_cpu_s": sum(part["cpu_s"] for part in parts),
        "client_start_lag_s": max(part["start_lag_s"] for part in parts),
    }


if __name__ == "__main__":
    asyncio.run(serve_one_plan())
