"""Claims due deliveries under leases, sends them concurrently, records results."""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Callable, Mapping

import structlog

from notifier import metrics
from notifier.domain.models import Claim, DeliveryStatus, Messenger, Outcome, Result
from notifier.domain.retry import RetryPolicy, decide
from notifier.messengers.base import PermanentError, RateLimited, Sender, TransientError
from notifier.storage.base import Outbox

log = structlog.get_logger("notifier.dispatcher")

_RECORD_BATCH = 1000
_ERROR_PAUSE_S = 0.5
# How long a woken loop waits for more of the same work before it writes.
_GATHER_S = 0.005


class Dispatcher:
    """Moves due deliveries from the outbox to their messengers.

    One task claims due rows while each messenger has free slots; each claimed
    delivery is sent in a task of its own, so a slow or failing messenger only
    ever holds its own slots; one more task writes results back in batches.
    """

    def __init__(
        self,
        outbox: Outbox,
        senders: Mapping[Messenger, Sender],
        *,
        policy: RetryPolicy,
        poll_interval_s: float,
        batch_size: int,
        lease_s: float,
        concurrency: int,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self._outbox = outbox
        self._senders = senders
        self._policy = policy
        self._poll_interval_s = poll_interval_s
        self._batch_size = batch_size
        self._lease_ms = int(lease_s * 1000)
        # A send must end well before its lease does, or another claim may start.
        self._send_timeout_s = lease_s / 2
        self._concurrency = concurrency
        self._clock = clock
        self._rng = rng or random.Random()
        self._in_flight = dict.fromkeys(senders, 0)
        # Messengers whose last claim got as many as it asked for, or could not
        # ask (every slot busy): more may be due, so a freed slot wakes the loop.
        self._capped: set[Messenger] = set()
        # Each send task in flight, with its claim and its deadline (loop time).
        self._active: dict[asyncio.Task[None], tuple[Claim, float]] = {}
        self._timed_out: set[asyncio.Task[None]] = set()
        self._reaper: asyncio.Task[None] | None = None
        self._results: list[Result] = []
        self._wake = asyncio.Event()
        self._results_ready = asyncio.Event()
        self._stopping = False
        self._claimer: asyncio.Task[None] | None = None
        self._recorder: asyncio.Task[None] | None = None
        self.last_tick_s: float | None = None

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def notify(self) -> None:
        """Wake the claim loop: new work may be due now."""
        self._wake.set()

    async def start(self) -> None:
        """Start the claim and record loops."""
        self._claimer = asyncio.create_task(self._claim_loop(), name="claimer")
        self._recorder = asyncio.create_task(self._record_loop(), name="recorder")
        log.info("dispatcher_started", concurrency=self._concurrency, pid=os.getpid())

    async def stop(self, grace_s: float) -> None:
        """Stop claiming, give in-flight sends ``grace_s`` to end, release the rest."""
        self._stopping = True
        self._wake.set()
        if self._claimer is not None:
            await self._claimer
        if self._active:
            await asyncio.wait(list(self._active), timeout=grace_s)
        # A send that ended in the turn the grace ran out is still listed, and
        # has put its own result in: only the sends this cancel stops are
        # released, or a result 'sent' would be followed by 'released'.
        unfinished = {t: c for t, (c, _) in self._active.items() if not t.done()}
        for task in unfinished:
            task.cancel()
        await asyncio.gather(*unfinished, return_exceptions=True)
        if self._reaper is not None:
            self._reaper.cancel()
        now_ms = self._now_ms()
        released = [c for t, c in unfinished.items() if t.cancelled()]
        self._results.extend(_released(claim, now_ms) for claim in released)
        self._results_ready.set()
        if self._recorder is not None:
            try:
                await asyncio.wait_for(self._recorder, timeout=grace_s + 5)
            except TimeoutError:
                log.error("results_unrecorded", count=len(self._results))
        log.info("dispatcher_stopped", released=len(released))

    async def _claim_loop(self) -> None:
        while not self._stopping:
            self._wake.clear()
            self.last_tick_s = self._clock()
            limits = self._free_slots()
            try:
                claims = await self._outbox.claim(
                    limits, self._now_ms(), self._lease_ms
                )
            except Exception:
                log.exception("claim_failed")
                await asyncio.sleep(_ERROR_PAUSE_S)
                continue
            self._launch(claims)
            self._capped = _capped(claims, limits)
            if any(limits[m] > 0 for m in self._capped):
                continue  # more may be due right now
            await self._idle(bool(claims))

    def _free_slots(self) -> dict[Messenger, int]:
        return {
            m: min(self._batch_size, self._concurrency - n)
            for m, n in self._in_flight.items()
        }

    async def _idle(self, claimed: bool) -> None:
        """Sleep until the next delivery falls due, new work arrives or a slot frees."""
        timeout = self._poll_interval_s
        if not claimed:
            try:
                due_ms = await self._outbox.next_due_ms()
            except Exception:
                log.exception("next_due_failed")
                due_ms = None
            if due_ms is not None and due_ms > self._now_ms():
                timeout = min(timeout, (due_ms - self._now_ms()) / 1000)
        try:
            async with asyncio.timeout(timeout):
                await self._wake.wait()
        except TimeoutError:
            return  # something fell due: claim it now
        if not self._stopping:
            # Woken early, by new work or a freed slot: let more of it arrive,
            # so that one claim (one transaction) takes many instead of one.
            await asyncio.sleep(_GATHER_S)

    def _launch(self, claims: list[Claim]) -> None:
        if not claims:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._send_timeout_s
        for claim in claims:
            fields = {
                "delivery_id": claim.delivery_id,
                "message_id": claim.message_id,
                "messenger": claim.messenger.value,
                "attempt": claim.attempt,
            }
            if claim.reclaimed:
                metrics.child(metrics.LEASES_RECLAIMED, claim.messenger.value).inc()
                log.warning("lease_expired", **fields)
            log.debug("delivery_claimed", **fields)
            self._in_flight[claim.messenger] += 1
            task = loop.create_task(self._send(claim))
            self._active[task] = (claim, deadline)
            task.add_done_callback(self._forget)
        if self._reaper is None or self._reaper.done():
            self._reaper = loop.create_task(self._reap(), name="reaper")

    def _forget(self, task: asyncio.Task[None]) -> None:
        del self._active[task]
        self._timed_out.discard(task)

    async def _reap(self) -> None:
        """Cancel each send still running at its deadline, while any runs.

        One task looks over every send a few times per timeout, instead of a
        timer per send (asyncio.timeout's cost was a tenth of the loop's time).
        A send ends at most a tenth of the timeout (and 0.5 s) past it.
        """
        loop = asyncio.get_running_loop()
        tick_s = min(0.5, self._send_timeout_s / 10)
        while self._active:
            await asyncio.sleep(tick_s)
            now = loop.time()
            # Deadlines grow in launch order, and so does the dict.
            for task, (_, deadline) in list(self._active.items()):
                if deadline > now:
                    break
                if not task.done() and task not in self._timed_out:
                    self._timed_out.add(task)
                    task.cancel()

    async def _send(self, claim: Claim) -> None:
        sender = self._senders[claim.messenger]
        started = time.perf_counter()
        retry_after_s: float | None = None
        error: str | None = None
        try:
            await sender.send(
                claim.delivery_id, claim.recipient, claim.text, claim.attempt
            )
            outcome = Outcome.SENT
        except asyncio.CancelledError:
            task = asyncio.current_task()
            # Only the reaper's cancel, not a stop's, means the send timed out.
            if task not in self._timed_out or task.cancelling() > 1:
                raise
            task.uncancel()
            outcome = Outcome.TRANSIENT_ERROR
            error = f"no answer within {self._send_timeout_s:g} s"
        except PermanentError as exc:
            outcome, error = Outcome.PERMANENT_ERROR, str(exc)
        except RateLimited as exc:
            outcome, error = Outcome.RATE_LIMITED, str(exc)
            retry_after_s = exc.retry_after_s
        except TransientError as exc:
            outcome, error = Outcome.TRANSIENT_ERROR, str(exc)
        except TimeoutError as exc:  # the sender's own, e.g. its HTTP client's
            outcome, error = Outcome.TRANSIENT_ERROR, str(exc) or "the send timed out"
        except Exception as exc:
            log.exception("sender_crashed", delivery_id=claim.delivery_id)
            outcome, error = Outcome.TRANSIENT_ERROR, f"sender crashed: {exc!r}"
        finally:
            self._in_flight[claim.messenger] -= 1
            if claim.messenger in self._capped:
                self._wake.set()
        duration_s = time.perf_counter() - started
        decision = decide(
            self._policy, outcome, claim.attempts_counted, self._rng, retry_after_s
        )
        now_ms = self._now_ms()
        _observe(claim, outcome, duration_s, now_ms)
        due_ms = None
        if decision.delay_s is not None:
            due_ms = now_ms + int(decision.delay_s * 1000)
        self._results.append(
            Result(
                delivery_id=claim.delivery_id,
                messenger=claim.messenger,
                lease_token=claim.lease_token,
                attempt=claim.attempt,
                outcome=outcome,
                error=error,
                status=decision.status,
                due_at_ms=due_ms,
                counted=decision.counted,
                finished_at_ms=now_ms,
            )
        )
        self._results_ready.set()
        log.debug(
            "attempt_finished",
            delivery_id=claim.delivery_id,
            messenger=claim.messenger.value,
            attempt=claim.attempt,
            outcome=outcome.value,
            duration_ms=round(duration_s * 1000, 1),
        )

    async def _record_loop(self) -> None:
        while True:
            await self._results_ready.wait()
            if not self._stopping:
                await asyncio.sleep(_GATHER_S)  # more results, fewer transactions
            self._results_ready.clear()
            while self._results:
                batch = self._results[:_RECORD_BATCH]
                try:
                    applied = await self._outbox.record(batch, self._now_ms())
                except Exception:
                    log.exception("record_failed", results=len(batch))
                    await asyncio.sleep(_ERROR_PAUSE_S)
                    continue
                del self._results[: len(batch)]
                _log_results(batch, applied)
                if any(r.due_at_ms is not None for r in applied):
                    self._wake.set()
            if self._stopping and self._drained():
                return

    def _drained(self) -> bool:
        claimer_done = self._claimer is None or self._claimer.done()
        return claimer_done and not self._active and not self._results


def _observe(claim: Claim, outcome: Outcome, duration_s: float, now_ms: int) -> None:
    messenger = claim.messenger.value
    metrics.child(metrics.ATTEMPTS, messenger, outcome.value).inc()
    metrics.child(metrics.SEND_SECONDS, messenger).observe(duration_s)
    if outcome is Outcome.SENT:
        waited_s = max(0, now_ms - claim.created_at_ms) / 1000
        metrics.child(metrics.ACCEPT_TO_SENT_SECONDS, messenger).observe(waited_s)


def _capped(claims: list[Claim], limits: Mapping[Messenger, int]) -> set[Messenger]:
    """Return the messengers that got all the claims they asked for, if any."""
    counts = dict.fromkeys(limits, 0)
    for claim in claims:
        counts[claim.messenger] += 1
    return {m for m, n in limits.items() if counts[m] >= n}


def _released(claim: Claim, now_ms: int) -> Result:
    return Result(
        delivery_id=claim.delivery_id,
        messenger=claim.messenger,
        lease_token=claim.lease_token,
        attempt=claim.attempt,
        outcome=Outcome.RELEASED,
        error="released at shutdown before the send finished",
        status=DeliveryStatus.PENDING,
        due_at_ms=now_ms,
        counted=False,
        finished_at_ms=now_ms,
    )


_EVENTS = {
    DeliveryStatus.SENT: ("delivery_sent", "info"),
    DeliveryStatus.FAILED: ("delivery_failed", "error"),
    DeliveryStatus.PENDING: ("delivery_retry_scheduled", "warning"),
}


def _log_results(batch: list[Result], applied: list[Result]) -> None:
    for result in applied:
        if result.status.is_terminal:
            metrics.child(
                metrics.FINISHED, result.messenger.value, result.status.value
            ).inc()
        event, level = _EVENTS[result.status]
        if result.outcome is Outcome.RELEASED:
            event, level = "delivery_released", "info"
        getattr(log, level)(
            event,
            delivery_id=result.delivery_id,
            messenger=result.messenger.value,
            attempt=result.attempt,
            outcome=result.outcome.value,
            error=result.error,
            next_attempt_at_ms=result.due_at_ms,
        )
    stale = len(batch) - len(applied)
    if stale:
        log.warning("results_discarded", count=stale, reason="lease lost")
