"""Leader election on a coordination.k8s.io/v1 Lease: active-passive picker replicas.

Off by default (`--leader-elect`, alias `--ha-enable-leader-election`, upstream's flag:
llm-d-router pkg/epp/server/options.go). When on, only the replica holding the Lease is ready
(app.py), as upstream's EPP (cmd/epp/runner/health.go: readiness, the empty service and ext_proc
are SERVING only on the leader); every replica keeps discovering and scraping, so a standby that
takes over routes at once.

The algorithm is client-go's (tools/leaderelection/leaderelection.go, tryAcquireOrRenew), written
against the picker's own Kubernetes client (kube_auth.py):
- a candidate GETs the Lease; none: it CREATEs one naming itself (409: another was faster);
- a Lease held by someone else is taken over only once it has not changed for its
  leaseDurationSeconds by the *candidate's own clock* (when it last saw the record change, never
  the record's renewTime: clocks of different nodes need not agree); an empty holder (released)
  is taken at once;
- every write is a PUT carrying the resourceVersion read: two candidates racing on the same
  version get one 200 and one 409 Conflict from the API server (optimistic concurrency);
- the leader renews every retryPeriod; it counts itself leader only until renewDeadline after
  the start of its last successful renewal (a monotonic clock; a request that hangs is cut at
  that deadline), so it steps down, not ready, before any standby can take over
  (leaseDuration > renewDeadline leaves the margin);
- on shutdown the leader releases the Lease (empty holder, leaseDurationSeconds 1), as
  controller-runtime's LeaderElectionReleaseOnCancel, which upstream sets
  (pkg/epp/server/controller_manager.go), so a standby takes over within a retryPeriod.
The Lease's name is upstream's (contract.picker_lease_name). Defaults are client-go's:
leaseDuration 15 s, renewDeadline 10 s, retryPeriod 2 s (jittered by up to 20 % while not leading).
Each change of leadership is reported to `on_change` ("acquired", "lost": no renewal within the
renew deadline, "released": on shutdown) for the picker's metrics (telemetry.py).
"""
from __future__ import annotations

import asyncio
import datetime
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import ConfigError
from .k8s import _ApiStatus, _message

if TYPE_CHECKING:
    from .kube_auth import KubeCredentials, TokenSource

log = logging.getLogger("picker.leader")

LEASE_API = "coordination.k8s.io/v1"
JITTER = 0.2  # client-go's JitterFactor 1.2 on the retry period while not leading


@dataclass(frozen=True)
class ElectionConfig:
    namespace: str
    name: str                    # the Lease's name
    identity: str                # holderIdentity: unique per process
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def check(self) -> None:
        """client-go's NewLeaderElector checks: without these margins two leaders could overlap."""
        if self.lease_duration <= self.renew_deadline:
            raise ConfigError(f"leader election: lease duration ({self.lease_duration:g}s) must be greater than "
                              f"the renew deadline ({self.renew_deadline:g}s)")
        if self.renew_deadline <= self.retry_period * (1 + JITTER):
            raise ConfigError(f"leader election: renew deadline ({self.renew_deadline:g}s) must be greater than "
                              f"1.2 x the retry period ({self.retry_period:g}s)")
        if self.lease_duration < 1:
            raise ConfigError("leader election: lease duration must be at least 1s (the Lease counts whole seconds)")
        if not self.identity:
            raise ConfigError("leader election: empty identity")


def default_identity(env: Mapping[str, str] | None = None) -> str:
    """The pod's name (POD_NAME from the downward API, else the hostname, which is the pod's name
    in Kubernetes) and a random suffix, so a restarted container never mistakes its predecessor's
    lease for its own (controller-runtime does the same: hostname + "_" + a UUID)."""
    e: Mapping[str, str] = os.environ if env is None else env
    return f"{e.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4()}"


def micro_time(wall: float) -> str:
    """A metav1.MicroTime (RFC 3339, microseconds, UTC)."""
    return datetime.datetime.fromtimestamp(wall, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseClient:
    """GET / POST / PUT of one Lease with the picker's credentials (kube_auth.TokenSource)."""

    def __init__(self, session, server: str, auth: TokenSource, namespace: str, name: str):
        self.session, self.auth = session, auth
        self.collection = f"{server}/apis/{LEASE_API}/namespaces/{namespace}/leases"
        self.url = f"{self.collection}/{name}"

    async def _call(self, method: str, url: str, body: dict | None = None) -> dict | None:
        async with self.session.request(method, url, json=body, headers=await self.auth.headers()) as r:
            if r.status == 401:
                self.auth.invalidate()
            if method == "GET" and r.status == 404:
                return None
            if r.status >= 400:
                raise _ApiStatus(r.status, await _message(r))
            return await r.json()

    async def get(self) -> dict | None:
        return await self._call("GET", self.url)

    async def create(self, lease: dict) -> dict:
        out = await self._call("POST", self.collection, lease)
        assert out is not None
        return out

    async def update(self, lease: dict) -> dict:
        out = await self._call("PUT", self.url, lease)
        assert out is not None
        return out


class LeaderElector:
    """One candidate. `leading` is what readiness reads; run() is the acquire/renew loop."""

    def __init__(self, client: Any, cfg: ElectionConfig, *, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time, rng: random.Random | None = None,
                 on_change: Callable[[str], None] | None = None):
        cfg.check()
        self.client, self.cfg = client, cfg
        self.on_change = on_change           # called with "acquired" / "lost" / "released"
        self.clock, self.wall = clock, wall
        self.rng = rng or random.Random()
        self._until: float | None = None     # leader until this monotonic time (renewDeadline after a renewal began)
        self._lease: dict | None = None      # the Lease as last written by us (for the next PUT's resourceVersion)
        self._observed: dict | None = None   # the Lease's spec as last seen
        self._observed_at = 0.0              # when it was last seen to change (our clock)
        self.holder: str | None = None       # who holds it, as last seen
        self.last_error: str | None = None
        self._logged_holder: str | None = None

    @property
    def leading(self) -> bool:
        return self._until is not None and self.clock() < self._until

    def status(self) -> str:
        """Why this replica is (not) the leader, for readiness logs."""
        if self.leading:
            return "leader"
        if self.last_error:
            return f"not the leader (lease {self.cfg.name}: {self.last_error})"
        return f"not the leader (lease {self.cfg.name} held by {self.holder or 'nobody yet'})"

    def _see(self, spec: dict) -> None:
        if spec != self._observed:
            self._observed, self._observed_at = spec, self.clock()
        self.holder = spec.get("holderIdentity") or None

    def _record(self, old: dict | None, now: str) -> dict:
        mine = old is not None and old.get("holderIdentity") == self.cfg.identity
        transitions = int((old or {}).get("leaseTransitions") or 0)
        return {"holderIdentity": self.cfg.identity, "leaseDurationSeconds": int(round(self.cfg.lease_duration)),
                "acquireTime": old.get("acquireTime") if mine and old and old.get("acquireTime") else now,
                "renewTime": now,
                "leaseTransitions": transitions if mine or old is None else transitions + 1}

    def _won(self, lease: dict, started: float) -> bool:
        self._lease = lease
        self._see(lease.get("spec") or {})
        self._until = started + self.cfg.renew_deadline
        self.last_error = None
        return True

    async def try_acquire_or_renew(self) -> bool:
        started = self.clock()
        now = micro_time(self.wall())
        if self.leading and self._lease is not None:
            # the leader's renewal: a PUT on the version it wrote last (a 409 means someone else
            # changed the Lease since: read it, below)
            lease = {**self._lease, "spec": self._record(self._lease.get("spec") or {}, now)}
            try:
                return self._won(await self.client.update(lease), started)
            except _ApiStatus as e:
                if e.status != 409:
                    raise
        current = await self.client.get()
        if current is None:
            lease = {"apiVersion": LEASE_API, "kind": "Lease",
                     "metadata": {"name": self.cfg.name, "namespace": self.cfg.namespace},
                     "spec": self._record(None, now)}
            try:
                return self._won(await self.client.create(lease), started)
            except _ApiStatus as e:
                if e.status == 409:  # AlreadyExists: another candidate created it first
                    return False
                raise
        spec = current.get("spec") or {}
        self._see(spec)
        holder = spec.get("holderIdentity") or ""
        duration = float(spec.get("leaseDurationSeconds") or self.cfg.lease_duration)
        if holder and holder != self.cfg.identity and self.clock() < self._observed_at + duration:
            return False  # held, and renewed within its duration as far as we have seen
        lease = {**current, "spec": self._record(spec, now)}  # metadata.resourceVersion as read
        try:
            return self._won(await self.client.update(lease), started)
        except _ApiStatus as e:
            if e.status == 409:  # someone else wrote it after our GET
                return False
            raise

    def _budget(self) -> float:
        """How long one attempt may take: while leading, no longer than leadership lasts."""
        if self._until is not None:
            return max(0.01, self._until - self.clock())
        return self.cfg.renew_deadline

    async def attempt(self) -> bool:
        """One try (with its timeout), its outcome logged; leadership that has run out is dropped."""
        was = self._until is not None
        ok = False
        try:
            ok = await asyncio.wait_for(self.try_acquire_or_renew(), self._budget())
        except asyncio.CancelledError:
            raise
        except Exception as e:  # API server down, 403, timeout: retry; the deadline decides leadership
            status = e.status if isinstance(e, _ApiStatus) else None
            err = str(e) or type(e).__name__
            if err != self.last_error:
                (log.error if status == 403 else log.warning)(
                    "leader election failed; retrying",
                    extra={"lease": self.cfg.name, "status": status, "error": err, "leading": self.leading})
            self.last_error = err
        if ok and not was:
            log.info("leader election: leading", extra={"lease": self.cfg.name, "identity": self.cfg.identity})
            self._changed("acquired")
        if not ok:
            if was and not self.leading:
                self._until = None
                self._lease = None
                log.error("leader election: stepped down (no renewal within the renew deadline)",
                          extra={"lease": self.cfg.name, "renew_deadline_s": self.cfg.renew_deadline,
                                 "error": self.last_error})
                self._changed("lost")
            elif self._until is None and self.holder and self.holder != self._logged_holder:
                log.info("leader election: following", extra={"lease": self.cfg.name, "holder": self.holder})
                self._logged_holder = self.holder
        return ok

    def _changed(self, event: str) -> None:
        if self.on_change is not None:
            try:
                self.on_change(event)
            except Exception:  # a metrics hook must never stop the election
                log.exception("leader election: on_change failed", extra={"event": event})

    async def run(self) -> None:
        while True:
            await self.attempt()
            period = self.cfg.retry_period
            await asyncio.sleep(period if self._until is not None else period * (1 + JITTER * self.rng.random()))

    async def release(self) -> bool:
        """Give the Lease up (we are stopping): not leader at once, then an empty holder on the
        server so a standby need not wait out the lease. False if we did not hold it or the write failed."""
        lease, self._lease = self._lease, None
        held = self.leading
        self._until = None
        if held:
            self._changed("released")
        if not held or lease is None:
            return False
        now = micro_time(self.wall())
        spec = {"holderIdentity": "", "leaseDurationSeconds": 1, "acquireTime": now, "renewTime": now,
                "leaseTransitions": int((lease.get("spec") or {}).get("leaseTransitions") or 0)}
        try:
            await asyncio.wait_for(self.client.update({**lease, "spec": spec}), self.cfg.retry_period)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.warning("leader election: release failed; the lease expires on its own",
                        extra={"lease": self.cfg.name, "error": str(e) or type(e).__name__})
            return False
        log.info("leader election: released", extra={"lease": self.cfg.name})
        return True


class Election:
    """The elector with its own HTTP session, as app.py runs it."""

    def __init__(self, creds: KubeCredentials, auth: TokenSource, cfg: ElectionConfig,
                 on_change: Callable[[str], None] | None = None):
        self.creds, self.auth, self.cfg = creds, auth, cfg
        self.on_change = on_change  # LeaderElector.on_change, set before start()
        cfg.check()
        self.elector: LeaderElector | None = None
        self._session: Any = None

    @property
    def leading(self) -> bool:
        return self.elector is not None and self.elector.leading

    def status(self) -> str:
        return self.elector.status() if self.elector else "not the leader (election not started)"

    async def start(self) -> None:
        import aiohttp

        from .kube_auth import ssl_context

        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_context(self.creds)))
        client = LeaseClient(self._session, self.creds.server, self.auth, self.cfg.namespace, self.cfg.name)
        self.elector = LeaderElector(client, self.cfg, on_change=self.on_change)
        log.info("leader election on", extra={"lease": self.cfg.name, "namespace": self.cfg.namespace,
                                               "identity": self.cfg.identity,
                                               "lease_duration_s": self.cfg.lease_duration,
                                               "renew_deadline_s": self.cfg.renew_deadline,
                                               "retry_period_s": self.cfg.retry_period})

    async def run(self) -> None:
        assert self.elector is not None
        await self.elector.run()

    async def close(self) -> None:
        """Release (if leading) and close the session; run() must be cancelled first."""
        if self.elector is not None:
            await self.elector.release()
        if self._session is not None:
            await self._session.close()
