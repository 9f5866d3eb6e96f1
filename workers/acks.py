"""Ack a batch's requests in one Redis round trip (kombu's Redis transport); one by one elsewhere.

kombu's Redis transport emulates acks: each delivered message is recorded in the ``unacked`` hash
and the ``unacked_index`` sorted set, and ``Message.ack`` removes both (``QoS.ack``: a ZREM + HDEL
MULTI pipeline, a new redis-py client per message, one round trip each, all on the consumer thread,
where Celery defers every ack). :func:`acknowledge_all` removes every message of a batch from both
in ONE pipeline, then does what kombu's ack does after its pipeline (the virtual QoS marks the
delivery tag dirty, which frees it from the prefetch window; the message's state becomes ACK) and
marks each Celery request acknowledged, so nothing is acked twice.

Any other transport (the demo's in-memory one, AMQP), a message that is already acked or not ours
to ack, and any error of the batched path go through ``request.acknowledge()`` one by one, Celery's
own path: an ack is never lost, and removing an entry twice from Redis is harmless.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.transport.virtual import QoS as VirtualQoS

log = logging.getLogger(__name__)


def redis_qos(req: Any) -> Any | None:
    """The kombu Redis QoS that can ack this request's message in a batch, or None (ack it alone)."""
    if getattr(req, "acknowledged", False):
        return None
    message = getattr(req, "message", None)
    channel = getattr(message, "channel", None)
    if channel is None or message.acknowledged:
        return None
    no_ack = getattr(channel, "no_ack_consumers", None)
    if no_ack and (message.delivery_info or {}).get("consumer_tag") in no_ack:
        return None  # kombu's Message.ack would skip it: leave that rule to it
    qos = getattr(channel, "qos", None)
    return qos if isinstance(qos, kombu_redis.QoS) else None


def _ack_in_one_pipeline(qos: Any, requests: list[Any]) -> None:
    tags = [req.message.delivery_tag for req in requests]
    with qos.pipe_or_acquire() as pipe:  # kombu's own client (key prefix included), MULTI/EXEC
        pipe.zrem(qos.unacked_index_key, *tags).hdel(qos.unacked_key, *tags).execute()
    for req, tag in zip(requests, tags, strict=True):
        VirtualQoS.ack(qos, tag)  # what kombu's redis QoS.ack does after its pipeline
        req.message._state = "ACK"  # what Message.ack does after basic_ack
        req.acknowledged = True  # what Request.acknowledge does after its ack


def acknowledge_all(requests: Iterable[Any]) -> int:
    """Ack every request not acked yet; returns how many went through one batched pipeline."""
    groups: dict[int, tuple[Any, list[Any]]] = {}
    alone: list[Any] = []
    for req in requests:
        qos = redis_qos(req)
        if qos is None:
            alone.append(req)
        else:
            groups.setdefault(id(qos), (qos, []))[1].append(req)
    batched = 0
    for qos, reqs in groups.values():
        try:
            _ack_in_one_pipeline(qos, reqs)
            batched += len(reqs)
        except Exception:  # the broker or its connection: Celery's own ack, request by request
            log.warning("batch_ack_fallback n=%d", len(reqs), exc_info=True)
            alone.extend(reqs)
    for req in alone:
        req.acknowledge()  # a no-op for a request already acked
    return batched
